//! `bourse demo`: the exchange plus a simulated market, ready for a visitor.
//!
//! It starts the real server (embedded default markets, a temporary data directory unless one
//! is given, deposit auto-approval on), then runs simulated traders on every active pair as
//! ordinary REST clients over loopback HTTP: a market maker per pair keeps a ladder of quotes
//! around a drifting fair value and cancels the quotes the walk leaves behind, a taker crosses
//! the spread now and then. Books are deep, prices move and every stream is alive the moment a
//! browser connects. The total rate stays bounded (a few hundred requests per second at most).
//!
//! - [`client`]: the REST client the traders use.
//! - [`accounts`]: registering and funding accounts.
//! - [`market`]: the fair-value walk and the quote ladder.
//! - [`trader`]: the maker and taker loop of one pair.
//! - [`server`]: starting the exchange for the demo.
//! - [`banner`]: what is printed for the visitor.

mod accounts;
mod banner;
pub mod client;
mod market;
mod server;
mod trader;
mod units;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;

pub use client::Credentials;
pub use trader::Stats;

/// Arguments of `bourse demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Data directory; a fresh temporary one (removed on exit) when not given.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// A running demo: the server and its simulated traders.
#[derive(Debug)]
pub struct Demo {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The funded account offered to the visitor.
    pub visitor: Credentials,
    /// The pairs being simulated.
    pub pairs: Vec<String>,
    pub data_dir: PathBuf,
    pub stats: Arc<Stats>,
    traders: Vec<JoinHandle<()>>,
    server: server::DemoServer,
}

impl Demo {
    /// Starts the server and the simulation; returns once every pair has a full book.
    pub async fn start(args: &DemoArgs) -> anyhow::Result<Demo> {
        let server = server::DemoServer::start(args).await?;
        let url = format!("http://{}", server.addr());
        let data_dir = server.data_dir().to_path_buf();
        let root = client::Client::new(&url);
        let currencies = root.currencies().await.context("listing currencies")?;
        let pair_infos = root.pairs().await.context("listing pairs")?;

        let accounts::DemoAccounts {
            maker,
            taker,
            visitor,
        } = accounts::load_or_open(&root, &data_dir, &currencies).await?;

        let stats = Arc::new(Stats::default());
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs());
        let mut traders = Vec::new();
        let mut pairs = Vec::new();
        for (i, info) in pair_infos.iter().enumerate() {
            if info.status != "active" {
                continue;
            }
            let Some(market) = market::Market::new(info) else {
                tracing::warn!(pair = %info.pair, "no sensible reference price; not simulated");
                continue;
            };
            pairs.push(info.pair.clone());
            let t = trader::PairTrader::new(
                market,
                maker.clone(),
                taker.clone(),
                stats.clone(),
                seed.wrapping_mul(31).wrapping_add(i as u64),
            );
            traders.push(tokio::spawn(t.run()));
        }
        // Let the makers lay their first ladders before anyone looks.
        let want = (pairs.len() * market::LEVELS) as u64;
        for _ in 0..100 {
            if stats.placed.load(Ordering::Relaxed) >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Demo {
            url,
            visitor,
            pairs,
            data_dir,
            stats,
            traders,
            server,
        })
    }

    /// The text printed for the visitor.
    pub fn banner(&self) -> String {
        banner::banner(
            &self.url,
            &self.visitor,
            &self.pairs,
            &self.data_dir.display().to_string(),
        )
    }

    /// Stops the traders, then the server (which flushes and removes a temporary data dir).
    pub async fn shutdown(self) {
        for t in &self.traders {
            t.abort();
        }
        for t in self.traders {
            let _ = t.await;
        }
        self.server.shutdown().await;
    }
}

/// The `bourse demo` entry point: logging (warnings only, so the banner stays readable; set
/// `RUST_LOG` for more) and a runtime, then [`run`].
pub fn main(args: DemoArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// `bourse demo`: runs until Ctrl-C (or SIGTERM), printing a status line every 30 seconds.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let demo = Demo::start(&args).await?;
    println!("{}", demo.banner());
    let stats = demo.stats.clone();
    let status = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        loop {
            tick.tick().await;
            println!(
                "demo: {} quotes placed, {} cancelled, {} taker orders, {} errors",
                stats.placed.load(Ordering::Relaxed),
                stats.cancelled.load(Ordering::Relaxed),
                stats.taker_orders.load(Ordering::Relaxed),
                stats.errors.load(Ordering::Relaxed),
            );
        }
    });
    crate::server::shutdown_signal().await;
    println!("stopping ...");
    status.abort();
    demo.shutdown().await;
    Ok(())
}
