//! `cargo run --release -p bourse-feed --example ws_bench -- --subscribers 1000` (the same
//! harness as `bourse bench ws`).

use clap::Parser;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: feed::bench::WsBenchArgs,
}

fn main() {
    let cli = Cli::parse();
    let json = cli.args.json;
    match feed::bench::run(cli.args) {
        Ok(r) => feed::bench::print(&r, json),
        Err(e) => {
            eprintln!("ws bench failed: {e}");
            std::process::exit(1);
        }
    }
}
