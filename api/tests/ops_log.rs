//! What `bourse serve` writes to its log at start, read as an operator reads it: from a
//! file (the log of a service is rarely a terminal). A process-level test: the log is set
//! up by the binary, which no in-process server goes through.
//!
//! After a `kill -9` the journal can end in a torn record (a write the crash cut short,
//! never acknowledged); recovery cuts it. The pipeline's recovery report said so, but the
//! server never logged the report: the log said only `engine recovered last_seq=N`, so an
//! operator could not tell a clean start from a repaired one. And the log was full of ANSI
//! colour codes when written to a file.

mod process;
use process::{Server, free_port, serve_command};

use std::process::Stdio;

/// `bourse serve` on `dir`, its log (stdout and stderr) appended to `log`.
fn spawn(dir: &std::path::Path, port: u16, log: &std::path::Path) -> Server {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let err = out.try_clone().expect("log file");
    let child = serve_command(port, dir)
        .env("BOURSE_ADMIN_CLIENT_ID", "log-admin")
        .env("BOURSE_ADMIN_CLIENT_SECRET", "log-admin-secret")
        .env("BOURSE_ARGON2_MEMORY_KIB", "64")
        .env("BOURSE_DURABILITY", "none")
        .env("RUST_LOG", "info")
        .env("BOURSE_DURABLITY", "none")
        .env_remove("NO_COLOR")
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn bourse");
    Server(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_says_what_recovery_repaired_in_plain_text() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let log = tmp.path().join("bourse.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = spawn(&dir, port, &log);
    process::wait_ready(&reqwest::Client::new(), &base).await;
    // kill -9: no final snapshot, the journal as the crash left it.
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    drop(server);
    // A torn tail: half a record's worth of bytes after the last whole one.
    let journal = dir.join("journal");
    let mut segments: Vec<_> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let last = segments.last().expect("a journal segment");
    // The segment ends in the zeros the writer lays down ahead of its appends: the torn
    // bytes go right after the last whole record, where an interrupted write leaves them.
    let bytes = std::fs::read(last).unwrap();
    let mut end = 0;
    while let Ok(record) = engine::pipeline::record::parse(&bytes[end..]) {
        end += record.len;
    }
    assert!(end > 0, "no whole record in {}", last.display());
    let mut torn = bytes[..end].to_vec();
    torn.extend_from_slice(&[0x5a; 11]);
    std::fs::write(last, &torn).unwrap();
    std::fs::write(&log, b"").unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = spawn(&dir, port, &log);
    process::wait_ready(&reqwest::Client::new(), &base).await;
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in a log written to a file:\n{text:?}"
    );
    let start = text
        .lines()
        .find(|l| l.contains(" starting "))
        .unwrap_or_else(|| panic!("no start line:\n{text}"));
    assert!(start.contains(&format!("bind=127.0.0.1:{port}")), "{start}");
    assert!(start.contains("data_dir="), "{start}");
    assert!(start.contains("durability=none"), "{start}");
    let recovered = text
        .lines()
        .find(|l| l.contains("engine recovered"))
        .unwrap_or_else(|| panic!("no recovery line:\n{text}"));
    assert!(recovered.contains("last_seq="), "{recovered}");
    assert!(
        recovered.contains("truncated torn tail of 11 bytes"),
        "the cut tail is not reported:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("torn journal tail")),
        "no warning about the repair:\n{text}"
    );
    // A misspelt variable is named, not silently ignored.
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("var=BOURSE_DURABLITY")),
        "no warning about BOURSE_DURABLITY:\n{text}"
    );
    assert!(!text.contains("var=BOURSE_DURABILITY"), "{text}");
}
