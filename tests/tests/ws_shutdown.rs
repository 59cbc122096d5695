//! A graceful shutdown closes every open WebSocket with a close frame of code 1001 (Going
//! Away) before the connection ends, and the shutdown completes once the clients have
//! answered it. (The binary's SIGTERM and Ctrl-C take the same path: `server::serve`'s
//! graceful shutdown, which `Running::stop` triggers here.)

use std::time::Duration;

use bourse_tests::ws::{close_code, close_reply, connect, request};
use bourse_tests::*;

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
