//! The `bourse bench` subcommands. The binary only forwards to [`run`].

use clap::Subcommand;

/// What to measure.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Commands through the durable pipeline: sequencer, rings, engine, journal, replies.
    Pipeline(crate::pipeline_bench::PipelineBenchArgs),
    /// Replay a command stream through one book: throughput and latency percentiles.
    Engine(crate::engine_bench::EngineBenchArgs),
    /// Place and cancel orders over the REST API with N concurrent clients.
    Http(crate::http_bench::HttpBenchArgs),
    /// WebSocket fan-out: N subscribers on one pair while orders flow.
    Ws(feed::bench::WsBenchArgs),
}

/// Runs one bench subcommand, printing its report.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Pipeline(args) => crate::pipeline_bench::run(args),
        BenchCommand::Engine(args) => crate::engine_bench::run(args),
        BenchCommand::Http(args) => crate::http_bench::run(args),
        BenchCommand::Ws(args) => {
            // With `--json`, stdout is one document: the report, or with `--runs` over 1
            // every run's report and their spread, printed once all have run.
            let json = args.json;
            let mut reports = Vec::new();
            for _ in 0..args.runs {
                let report = feed::bench::run(args.clone()).map_err(anyhow::Error::msg)?;
                if !json || args.runs == 1 {
                    feed::bench::print(&report, json);
                }
                reports.push(report);
            }
            if reports.len() > 1
                && let Some(spread) = feed::bench::WsRunsSpread::of(&reports)
            {
                if json {
                    let doc = serde_json::json!({ "runs": reports, "spread": spread });
                    println!("{}", serde_json::to_string_pretty(&doc)?);
                } else {
                    spread.print_table();
                }
            }
            Ok(())
        }
    }
}
