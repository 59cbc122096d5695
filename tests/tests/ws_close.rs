//! The close handshake a client starts (RFC 6455 section 5.5.1): the server answers a
//! client's close frame with a close frame of its own before it closes the TCP connection,
//! so a client sees a clean close (its code echoed), not an abnormal one (1006).

use std::time::Duration;

use bourse_tests::TestServer;
use bourse_tests::ws::{CLOSE, TEXT, client_frame, close_code, connect, request};
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

/// A client frame that breaks the protocol is answered with a close frame naming why (RFC
/// 6455 7.4.1): 1002 for an unmasked frame, a reserved opcode or reserved bits, 1007 for a
/// text message that is not UTF-8. The connection used to end without a close frame, which
/// a client sees as 1006 or 1005 and cannot tell from a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_breaks_the_protocol_is_closed_with_its_code() {
    let s = TestServer::start().await;
    let mut reserved_bits = client_frame(TEXT, b"{}");
    reserved_bits[0] |= 0x40;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        // FIN, text, length 2 without the mask bit.
        ("an unmasked frame", vec![0x81, 0x02, b'{', b'}'], 1002),
        ("a reserved opcode", client_frame(0x3, b"x"), 1002),
        ("a reserved bit", reserved_bits, 1002),
        (
            "text that is not UTF-8",
            client_frame(TEXT, &[0x7b, 0xff, 0xfe, 0x7d]),
            1007,
        ),
    ];
    for (what, frame, code) in cases {
        let mut ws = connect(&s.base).await;
        ws.write_all(&frame).await.expect("send");
        assert_eq!(
            close_code(&mut ws, Duration::from_secs(5)).await,
            Some(code),
            "{what}"
        );
    }
    // The server is fine.
    let mut ws = connect(&s.base).await;
    let r = request(&mut ws, 7, json!({"op": "ping", "id": 7})).await;
    assert_eq!(r["op"], "pong", "{r}");
    drop(ws);
    s.stop().await;
}
