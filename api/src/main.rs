//! The `bourse` binary: a thin shell over the library crates.
//!
//! `bourse serve` runs the exchange; `bourse bench ...` runs the measurement harnesses.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "bourse", version, about = "Bourse: a real-time market data and order matching engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure the engine, the pipeline, the HTTP API or the WebSocket feed.
    Bench {
        #[command(subcommand)]
        bench: bench_harness::cli::BenchCommand,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench { bench } => bench_harness::cli::run(bench),
    }
}
