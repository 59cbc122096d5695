//! A graceful shutdown closes every open WebSocket with a close frame of code 1001 (Going
//! Away) before the connection ends, and the shutdown completes once the clients have
//! answered it. (The binary's SIGTERM and Ctrl-C take the same path: `server::serve`'s
//! graceful shutdown, which `Running::stop` triggers here.)

use std::time::Duration;

use bourse_tests::ws::{close_code, close_reply, connect, request, upgrade};
use bourse_tests::*;
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_websocket_with_1001() {
    let s = TestServer::start().await;
    let user = s.register("listener").await;
    // One connection with public and private subscriptions, one with none.
    let mut busy = connect(&s.base).await;
    let r = request(
        &mut busy,
        1,
        json!({"op": "auth", "id": 1, "token": user.token}),
    )
    .await;
    assert_eq!(r["op"], "authenticated", "{r}");
    let channels = json!(["trades:BTC_SEK", "book:BTC_SEK", "orders", "wallet"]);
    let r = request(
        &mut busy,
        2,
        json!({"op": "subscribe", "id": 2, "channels": channels}),
    )
    .await;
    assert_eq!(r["op"], "subscribed", "{r}");
    let mut quiet = connect(&s.base).await;

    let stopping = tokio::spawn(s.stop());
    for ws in [&mut busy, &mut quiet] {
        let code = close_code(ws, Duration::from_secs(5)).await;
        assert_eq!(code, Some(1001), "no Going Away close frame");
        close_reply(ws).await;
    }
    // Well under the 10 s close grace: the stop ends because the clients answered, not
    // because the grace ran out.
    tokio::time::timeout(Duration::from_secs(3), stopping)
        .await
        .expect("the shutdown ends once the clients answered")
        .expect("stop task");
}

/// An upgrade that reaches the server while its WebSockets drain gets a 503 problem, not a
/// connection that would be cut when the process exits. The server's shutdown starts the
/// drain (`Feed::close_connections`) and then stops accepting; started alone here, the
/// HTTP side keeps accepting, so the upgrade surely arrives during the drain (through the
/// real stop it could only be one already in flight, a race). A client that does not
/// answer its close keeps the drain going meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_during_the_drain_gets_a_503_problem() {
    let s = TestServer::start().await;
    let mut held = connect(&s.base).await;
    s.state().feed.close_connections();
    assert_eq!(
        close_code(&mut held, Duration::from_secs(5)).await,
        Some(1001),
        "the drain did not start"
    );
    let (status, mut stream, head) = upgrade(&s.base).await;
    assert_eq!(status, 503, "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{head}"
    );
    let len: usize = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a content-length");
    let mut body = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut body))
        .await
        .expect("the body within 5 s")
        .expect("the body");
    let problem: Value = serde_json::from_slice(&body).expect("a JSON problem");
    assert_eq!(problem["status"], 503, "{problem}");
    assert_eq!(problem["code"], "SERVICE_UNAVAILABLE", "{problem}");
    // Not the connection limit's 503: the shutdown's.
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("shutting down")),
        "{problem}"
    );
    // The held client answers now: the stop is quick.
    close_reply(&mut held).await;
    tokio::time::timeout(Duration::from_secs(5), s.stop())
        .await
        .expect("the server stops");
}
