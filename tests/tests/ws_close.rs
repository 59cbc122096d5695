//! The close handshake a client starts (RFC 6455 section 5.5.1): the server answers a
//! client's close frame with a close frame of its own before it closes the TCP connection,
//! so a client sees a clean close (its code echoed), not an abnormal one (1006).

use std::time::Duration;

use bourse_tests::TestServer;
use bourse_tests::ws::{CLOSE, client_frame, close_code, connect, request};
use serde_json::json;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_from_the_client_is_answered_with_a_close_frame() {
    let s = TestServer::start().await;

    // A fresh connection, and one with a subscription and a reply behind it.
    for subscribe in [false, true] {
        let mut ws = connect(&s.base).await;
        if subscribe {
            let r = request(
                &mut ws,
                1,
                json!({"op": "subscribe", "id": 1, "channels": ["trades:BTC_SEK"]}),
            )
            .await;
            assert_eq!(r["op"], "subscribed", "{r}");
        }
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        ws.write_all(&client_frame(CLOSE, &payload))
            .await
            .expect("send close");
        assert_eq!(
            close_code(&mut ws, Duration::from_secs(5)).await,
            Some(1000),
            "the server's answer to a close (subscribed: {subscribe})"
        );
    }
    s.stop().await;
}
