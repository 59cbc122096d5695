//! The exchange as the demo runs it: the real server in this process with demo settings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::server::{self, Running};

use super::DemoArgs;

/// The server of a demo, and the temporary data directory it may own.
#[derive(Debug)]
pub struct DemoServer {
    running: Running,
    data_dir: PathBuf,
    /// Removed on shutdown when the demo created it.
    temporary: bool,
}

impl DemoServer {
    /// Starts the server: embedded default markets, deposits approved at once, no per-client
    /// rate limit (the simulated traders are the heaviest clients and are bounded themselves).
    pub async fn start(args: &DemoArgs) -> anyhow::Result<DemoServer> {
        let mut config = Config::load(None)?;
        let (data_dir, temporary) = match &args.data_dir {
            Some(dir) => (dir.clone(), false),
            None => (temp_data_dir(), true),
        };
        config.bind = args.bind;
        config.data_dir = data_dir.clone();
        config.deposit_auto_approve = true;
        config.rate_limit_per_sec = 0;
        let running = server::spawn(config).await?;
        Ok(DemoServer {
            running,
            data_dir,
            temporary,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Graceful stop (drain, final snapshot), then removes a temporary data dir.
    pub async fn shutdown(self) {
        if let Err(e) = self.running.stop().await {
            tracing::warn!("demo server stop: {e:#}");
        }
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A fresh directory name under the system temp dir.
fn temp_data_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("bourse-demo-{}-{nanos}", std::process::id()))
}
