//! `bourse serve` and its stop signals, at the process level (the signals are handled by
//! the binary). A second SIGTERM (or Ctrl-C) during the drain used to be ignored: an
//! operator who saw the stop hang on a slow client could only SIGKILL. Now it cuts the
//! drain short, the pipeline still stops cleanly (final snapshot) and the exit code is 0.

mod process;
use process::{Server, free_port, serve_command};

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{name}");
}

fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = c.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            let _ = std::io::Read::read_to_string(&mut c, &mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server not ready");
}

/// The exit status within `limit`, or None.
fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_second_stop_signal_cuts_the_drain_short() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = serve_command(port, tmp.path())
        .env("BOURSE_ADMIN_CLIENT_ID", "sig-admin")
        .env("BOURSE_ADMIN_CLIENT_SECRET", "sig-admin-secret")
        .env("BOURSE_ARGON2_MEMORY_KIB", "64")
        .env("BOURSE_BODY_TIMEOUT_SECS", "300")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn bourse");
    let mut server = Server(child);
    wait_ready(port);
    // A request whose body never completes holds the drain.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(
        b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"name\":",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    signal(&server.0, "TERM");
    assert!(
        exit_within(&mut server.0, Duration::from_millis(700)).is_none(),
        "the first signal drains, it does not drop the slow request at once"
    );
    signal(&server.0, "TERM");
    let status = exit_within(&mut server.0, Duration::from_secs(5))
        .expect("a second SIGTERM ends the drain at once");
    assert!(status.success(), "{status:?}");
    drop(slow);
}
