//! The measurement harnesses behind `bourse bench` (criterion micro-benchmarks live in
//! `benches/benches/`).

pub mod cli;
pub mod engine_bench;
pub mod http_bench;
pub mod http_runs;
pub mod pipeline_bench;
pub mod proc_cpu;
pub mod spawned_server;
