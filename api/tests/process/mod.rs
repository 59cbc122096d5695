//! What the process-level tests (`bourse serve` run as a child process) share: a free
//! loopback port, a guard that kills the server however the test ends, and the wait for
//! `/ready`.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// `bourse serve --bind 127.0.0.1:PORT --data-dir DIR`, to be given its environment and
/// output and spawned.
pub fn serve_command(port: u16, data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bourse"));
    command
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir);
    command
}

/// Kills the server when the test ends, however it ends.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to a minute for `base`'s `/ready` to answer 200.
pub async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/ready")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server not ready");
}
