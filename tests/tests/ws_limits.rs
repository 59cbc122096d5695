//! The WebSocket limits an operator sets in the server's configuration (`[ws]`, or
//! `BOURSE_WS_*`) are the ones the served feed enforces: a connection past
//! `max_connections` gets a 503 problem, a subscribe past `max_subscriptions` an error
//! message and no subscription, a message past `max_message_bytes` an error message, and
//! the connection stays open through both errors.

use bourse_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends the upgrade request and reads the response head: its status, the stream and the
/// head's text.
async fn upgrade(base: &str) -> (u16, TcpStream, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).await.expect("read head");
        assert_eq!(
            n,
            1,
            "closed during the head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8(head).expect("ascii head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, s, head)
}

/// A masked client text frame.
fn text_frame(text: &str) -> Vec<u8> {
    let p = text.as_bytes();
    let mask = [0x1f, 0x2e, 0x3d, 0x4c];
    let mut f = vec![0x81];
    if p.len() < 126 {
        f.push(0x80 | p.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(p.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(p.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// The next text message from the server (control frames skipped).
async fn next_text(s: &mut TcpStream) -> serde_json::Value {
    loop {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await.expect("frame head");
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await.expect("length");
            len = u64::from(u16::from_be_bytes(l));
        } else if len == 127 {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).await.expect("length");
            len = u64::from_be_bytes(l);
        }
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).await.expect("payload");
        if h[0] & 0x0f == 1 {
            return serde_json::from_slice(&payload).expect("JSON message");
        }
    }
}

/// The reply to the request `id`, skipping channel data.
async fn reply(s: &mut TcpStream, id: u64) -> serde_json::Value {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let v = next_text(s).await;
            if v["id"] == id {
                return v;
            }
        }
    })
    .await
    .expect("a reply within 10 s")
}

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
