//! The `bourse bench` subcommands. The binary only forwards to [`run`].

use clap::Subcommand;

/// What to measure.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {}

/// Runs one bench subcommand, printing its report.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {}
}
