//! The `bourse serve` binary and `BOURSE_CONFIG`: the variable names the TOML file when
//! `--config` is not given, and, like every `BOURSE_*` variable, an empty one counts as
//! unset (README, Configuration). A process-level test: the variable is read by the
//! binary's command line, which no in-process server goes through.

mod process;
use process::{Server, free_port, serve_command};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: (&str, &str) = ("cli-admin", "cli-admin-secret");

/// `bourse serve` on a fresh data dir with `BOURSE_CONFIG` set to `config`.
fn spawn(dir: &std::path::Path, port: u16, config: &std::ffi::OsStr) -> Server {
    let child = serve_command(port, &dir.join("data"))
        .env("BOURSE_CONFIG", config)
        .env("BOURSE_ADMIN_CLIENT_ID", ADMIN.0)
        .env("BOURSE_ADMIN_CLIENT_SECRET", ADMIN.1)
        .env("BOURSE_ARGON2_MEMORY_KIB", "64")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn bourse");
    Server(child)
}

/// Waits until the server is ready; panics if the process ends first or it takes a minute.
async fn wait_ready(server: &mut Server, http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = server.0.try_wait().expect("try_wait") {
            panic!("bourse serve exited before it was ready: {status}");
        }
        if let Ok(r) = http.get(format!("{base}/ready")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server not ready");
}

/// `POST /v1/users` without a token: 201 when registration is open, 401 when it is
/// restricted to admins.
async fn register_status(http: &reqwest::Client, base: &str) -> u16 {
    http.post(format!("{base}/v1/users"))
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .expect("register")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bourse_config_names_the_file_and_an_empty_one_is_unset() {
    let http = reqwest::Client::new();

    // Empty: the defaults (registration open). It stopped the start ("a value is required
    // for '--config <CONFIG>'").
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = spawn(tmp.path(), port, "".as_ref());
    wait_ready(&mut server, &http, &base).await;
    assert_eq!(register_status(&http, &base).await, 201);
    drop(server);

    // A file: its settings apply.
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("bourse.toml");
    std::fs::write(&file, "registration = \"admin\"\n").expect("write config");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = spawn(tmp.path(), port, file.as_os_str());
    wait_ready(&mut server, &http, &base).await;
    assert_eq!(register_status(&http, &base).await, 401);
    drop(server);
}

/// An address already taken stops the start with an error naming it and where it came from;
/// it said only "Address already in use (os error 98)".
#[test]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_bourse"))
        .args(["serve", "--bind", &addr.to_string(), "--data-dir"])
        .arg(tmp.path().join("data"))
        .env_remove("RUST_BACKTRACE")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run bourse");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&addr.to_string()), "{stderr}");
    assert!(stderr.contains("--bind"), "{stderr}");
}
