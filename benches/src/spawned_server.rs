//! A fresh `bourse serve` for one bench run (`bourse bench http --spawn-server`).
//!
//! The HTTP figures are only comparable between runs that each start from an empty data dir
//! (the history store's indexes and the books grow with every order placed), and the CPU
//! lines need the server's pid. Starting the server by hand for each run, with the rate
//! limit off and an admin to fund the bench's accounts, was a script every measurement
//! needed; this is that script, so that one command gives the spread of several runs.
//!
//! The server is this same executable (`bourse serve`) or the one `--server-exe` names, with
//! no `BOURSE_*` variable of the bench's environment, on a free loopback port, over a
//! temporary data dir that goes with it, the rate limit off, each account's open orders
//! bounded only by the engine's largest bound and no bound on connections per client
//! address (every client is on loopback), with its log in that dir (its last lines are
//! quoted when it fails to start). It is stopped with SIGTERM, as an operator stops it
//! (drain, snapshot, exit 0), and killed if it has not exited within [`STOP_WAIT`].

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a spawned server may take to bind its address.
const BIND_WAIT: Duration = Duration::from_secs(60);
/// How long a stopped server may take to exit before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// A running `bourse serve` owned by the bench.
#[derive(Debug)]
pub struct SpawnedServer {
    child: Child,
    /// The data dir and the log; removed when the server is dropped.
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub admin_client_id: String,
    pub admin_client_secret: String,
}

impl SpawnedServer {
    /// Starts `exe serve` on a free loopback port with the rate limit off and a generated
    /// admin (and `worker_threads` when given), and waits until the address takes
    /// connections (the bench then waits for `/ready` itself).
    pub fn start(
        exe: &std::path::Path,
        worker_threads: Option<usize>,
    ) -> anyhow::Result<SpawnedServer> {
        let dir = tempfile::Builder::new()
            .prefix("bourse-bench-")
            .tempdir()
            .context("temporary data dir")?;
        let addr = free_loopback_port()?;
        let log = std::fs::File::create(dir.path().join("server.log")).context("server log")?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let admin_client_id = format!("bench-admin-{stamp}");
        let admin_client_secret = format!("bench-secret-{stamp}-{}", std::process::id());
        let mut command = Command::new(exe);
        // Runs start alike: no setting of the bench's environment reaches the server.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("BOURSE_") {
                command.env_remove(&name);
            }
        }
        if let Some(n) = worker_threads {
            command.env("BOURSE_WORKER_THREADS", n.to_string());
        }
        let child = command
            .arg("serve")
            .arg("--bind")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("BOURSE_RATE_LIMIT_PER_SEC", "0")
            // `--no-cancel` leaves every order open: the bench's accounts may hold more than
            // the default bound.
            .env("BOURSE_MAX_OPEN_ORDERS_PER_ACCOUNT", "16777215")
            // Every client of the bench connects from loopback: the bound on connections
            // per address would cap `--clients` at its default.
            .env("BOURSE_MAX_CONNECTIONS_PER_ADDRESS", "4294967295")
            .env("BOURSE_ADMIN_CLIENT_ID", &admin_client_id)
            .env("BOURSE_ADMIN_CLIENT_SECRET", &admin_client_secret)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("server log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} serve", exe.display()))?;
        let mut server = SpawnedServer {
            child,
            dir,
            addr,
            admin_client_id,
            admin_client_secret,
        };
        server.wait_bound()?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The last lines of the server's log, for an error message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    fn wait_bound(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + BIND_WAIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the spawned server exited ({status}) before taking connections:\n{}",
                    self.log_tail()
                );
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the spawned server took no connection on {} within {BIND_WAIT:?}:\n{}",
                    self.addr,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server with SIGTERM and waits for it (killed after [`STOP_WAIT`]); an
    /// exit other than 0 is an error that quotes its log.
    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!(
                        "the spawned server exited with {status}:\n{}",
                        self.log_tail()
                    );
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the spawned server did not stop within {STOP_WAIT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SpawnedServer {
    /// A server not stopped (the bench failed) is killed: none outlives the bench.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback address no one listens on now (the port the kernel gives a bind to port 0).
fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}
