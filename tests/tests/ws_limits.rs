//! The WebSocket limits an operator sets in the server's configuration (`[ws]`, or
//! `BOURSE_WS_*`) are the ones the served feed enforces: a connection past
//! `max_connections` gets a 503 problem, a subscribe past `max_subscriptions` an error
//! message and no subscription, a message past `max_message_bytes` an error message, and
//! the connection stays open through both errors.

use bourse_tests::ws::{next_text, reply, text_frame, upgrade};
use bourse_tests::*;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_set_in_the_server_config_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.ws.max_connections = 1;
    config.ws.max_subscriptions = 2;
    config.ws.max_message_bytes = 300;
    let s = TestServer::start_with(config).await;

    let (status, mut ws, head) = upgrade(&s.base).await;
    assert_eq!(status, 101, "{head}");
    // The second connection is one too many.
    let (status, _, head) = upgrade(&s.base).await;
    assert_eq!(status, 503, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("application/problem+json"),
        "{head}"
    );

    // Three channels with a limit of two: an error, and nothing subscribed.
    let three = r#"{"op":"subscribe","id":1,"channels":["trades:BTC_SEK","trades:ETH_SEK","trades:BTC_USDC"]}"#;
    ws.write_all(&text_frame(three)).await.expect("send");
    let r = reply(&mut ws, 1).await;
    assert_eq!(r["op"], "error", "{r}");
    assert_eq!(r["code"], "LIMIT_EXCEEDED", "{r}");
    // A message over 300 bytes: an error, the connection stays open.
    let long = format!(r#"{{"op":"ping","id":2,"pad":"{}"}}"#, "x".repeat(400));
    ws.write_all(&text_frame(&long)).await.expect("send");
    // (A message refused for its size is not parsed, so the error names no id.)
    let r = next_text(&mut ws).await;
    assert_eq!(r["op"], "error", "{r}");
    assert_eq!(r["code"], "PAYLOAD_TOO_LARGE", "{r}");
    // Two channels fit.
    let two = r#"{"op":"subscribe","id":3,"channels":["trades:BTC_SEK","trades:ETH_SEK"]}"#;
    ws.write_all(&text_frame(two)).await.expect("send");
    let r = reply(&mut ws, 3).await;
    assert_eq!(r["op"], "subscribed", "{r}");
    // Hung up first: the stop would otherwise wait for this client to answer its close.
    drop(ws);
    s.stop().await;
}

/// A limit that would refuse everything is refused at start, with its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_limit_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.ws.max_subscriptions = 0;
    let err = api::server::spawn(config)
        .await
        .expect_err("a server that refuses every subscription");
    assert!(err.to_string().contains("ws.max_subscriptions"), "{err}");
}
