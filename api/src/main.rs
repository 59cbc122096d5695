//! The `bourse` binary: a thin shell over the library crates.
//!
//! `bourse serve` runs the exchange; `bourse bench ...` runs the measurement harnesses.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// jemalloc rather than glibc's allocator: the HTTP path allocates and frees many
/// short-lived buffers per request (hyper's read and write buffers, bodies, headers), and
/// glibc spent ~10 % of the whole server's samples in `malloc_consolidate`, `unlink_chunk`
/// and friends. Measured with `bourse bench http --clients 64 --no-cancel`, three alternated
/// runs each: server CPU per create 33.7-34.1 us against 35.6-49.6 us.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(
    name = "bourse",
    version,
    about = "Bourse: a real-time market data and order matching engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the exchange: REST API, WebSocket feed, engine.
    Serve {
        /// Address to listen on [env: BOURSE_BIND] (default 127.0.0.1:8080).
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Journal, snapshots and history store [env: BOURSE_DATA_DIR] (default ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// TOML settings file [env: BOURSE_CONFIG].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the exchange with a simulated market and print the URLs and a demo account.
    Demo(api::demo::DemoArgs),
    /// Measure the engine, the pipeline, the HTTP API or the WebSocket feed.
    Bench {
        #[command(subcommand)]
        bench: bench_harness::cli::BenchCommand,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            bind,
            data_dir,
            config,
        } => serve(bind, data_dir, config.or_else(config_from_env)),
        Command::Demo(args) => api::demo::main(args),
        Command::Bench { bench } => {
            // The in-process benches run the engine's pipeline, which reports a fatal
            // failure through tracing: warnings and errors go to stderr, so a report on
            // stdout (`--json`) stays clean.
            use std::io::IsTerminal as _;
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "warn".into()),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .init();
            bench_harness::cli::run(bench)
        }
    }
}

/// `BOURSE_CONFIG`, the file when `--config` is not given. Read here rather than by clap,
/// which takes an empty variable for a missing value and stops the start, where every
/// `BOURSE_*` variable counts as unset when empty (README, Configuration).
fn config_from_env() -> Option<PathBuf> {
    std::env::var_os("BOURSE_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn serve(
    bind: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
) -> anyhow::Result<()> {
    // Colours only on a terminal: a log written to a file or a pipe (systemd, docker,
    // `> bourse.log`) carried ANSI escape codes around every level and field name, which
    // grep, journald and log shippers then saw as part of the text.
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let names = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok());
    for var in api::Config::unknown_vars(names) {
        tracing::warn!(%var, "a BOURSE_ variable no setting reads (misspelt?): ignored");
    }
    let mut config = api::Config::load(config.as_deref())?;
    if let Some(b) = bind {
        config.bind = b;
    }
    if let Some(d) = data_dir {
        config.data_dir = d;
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|e| anyhow::anyhow!("binding {} (--bind, BOURSE_BIND): {e}", config.bind))?;
        // A stop asked for during the start (which can take a while: recovery) is kept, and
        // served as soon as the server is up: drain, snapshot, exit 0.
        // The count of stop signals: the first stops the server (a bounded drain), a second
        // cuts the drain short (api::server::serve_with).
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            api::server::shutdown_signal().await;
            stop_tx.send_modify(|n| *n += 1);
            loop {
                api::server::stop_signal().await;
                stop_tx.send_modify(|n| *n += 1);
            }
        });
        // The address answers while the server starts (api::starting), on a second handle
        // of the same socket, given up once the server is ready.
        let std_listener = listener.into_std()?;
        let answering = tokio::net::TcpListener::from_std(std_listener.try_clone()?)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let limits = api::connections::ConnLimits::of(&config);
        let answers = tokio::spawn(api::starting::serve(answering, limits, async move {
            let _ = ready_rx.await;
        }));
        tracing::info!(
            bind = %config.bind,
            data_dir = %config.data_dir.display(),
            durability = %config.durability.as_str(),
            "starting"
        );
        let started = api::server::start(config).await;
        // The answers stop accepting at once; the server does not wait for their last
        // connections (a head sent halfway would hold them until its header timeout).
        let _ = ready_tx.send(());
        drop(answers);
        let state = started?;
        tracing::info!(addr = %listener.local_addr()?, "listening");
        let (mut stop, mut again) = (stop_rx.clone(), stop_rx);
        api::server::serve_with(
            state,
            listener,
            async move {
                let _ = stop.wait_for(|n| *n >= 1).await;
            },
            async move {
                let _ = again.wait_for(|n| *n >= 2).await;
            },
        )
        .await?;
        tracing::info!("stopped cleanly");
        Ok::<_, anyhow::Error>(())
    })
}
