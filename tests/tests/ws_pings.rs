//! The server pings every `ping_interval` (API.md: "The server pings every 15 s"), counted
//! from when each ping was due, not from the housekeeping tick that sent it: a tick comes a
//! little after the due time, and counting from it made every other ping a tick late.

use std::time::{Duration, Instant};

use bourse_tests::ws::{connect, read_frame};
use bourse_tests::*;

/// Opcode of a ping frame.
const PING: u8 = 0x9;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_come_every_ping_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.ws.ping_interval_secs = 1;
    let s = TestServer::start_with(config).await;

    let mut ws = connect(&s.base).await;
    let start = Instant::now();
    let mut pings = Vec::new();
    let window = Duration::from_millis(5500);
    while let Ok(frame) =
        tokio::time::timeout(window.saturating_sub(start.elapsed()), read_frame(&mut ws)).await
    {
        let (opcode, _) = frame.expect("a frame");
        if opcode == PING {
            pings.push(start.elapsed().as_millis());
        }
    }
    // Due at 1, 2, 3, 4 and 5 s (a tick may come a little late, never a whole second).
    assert!(pings.len() >= 5, "pings at {pings:?} ms");
    drop(ws);
    s.stop().await;
}
