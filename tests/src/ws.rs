//! A raw WebSocket client for the black-box tests: the upgrade written by hand on a TCP
//! stream, masked client text frames, and server frames read one by one. Raw rather than a
//! WebSocket library so that a test sees exactly what the server sends (an upgrade refused
//! with a problem body, a close frame and its code).

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opcode of a text frame.
pub const TEXT: u8 = 0x1;
/// Opcode of a close frame.
pub const CLOSE: u8 = 0x8;

/// Sends the upgrade request for `GET /v1/ws` to the server at `base` (`http://HOST:PORT`)
/// and reads the response head: its status, the stream and the head's text.
pub async fn upgrade(base: &str) -> (u16, TcpStream, String) {
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

/// An upgraded connection (101 asserted).
pub async fn connect(base: &str) -> TcpStream {
    let (status, s, head) = upgrade(base).await;
    assert_eq!(status, 101, "{head}");
    s
}

/// A masked client frame (FIN set) with `opcode` around `payload`.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x1f, 0x2e, 0x3d, 0x4c];
    let mut f = vec![0x80 | opcode];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        let len = u16::try_from(payload.len()).expect("test frames are under 64 KiB");
        f.push(0x80 | 126);
        f.extend_from_slice(&len.to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A masked client text frame.
pub fn text_frame(text: &str) -> Vec<u8> {
    client_frame(TEXT, text.as_bytes())
}

/// Sends `msg` as a text frame.
pub async fn send(s: &mut TcpStream, msg: &Value) {
    s.write_all(&text_frame(&msg.to_string()))
        .await
        .expect("send");
}

/// The next server frame: its opcode and payload (server frames are not masked), or the
/// error that ended the stream first.
pub async fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await?;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut l = [0u8; 2];
        s.read_exact(&mut l).await?;
        len = u64::from(u16::from_be_bytes(l));
    } else if len == 127 {
        let mut l = [0u8; 8];
        s.read_exact(&mut l).await?;
        len = u64::from_be_bytes(l);
    }
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await?;
    Ok((h[0] & 0x0f, payload))
}

/// The next server frame (asserted to come).
pub async fn next_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    read_frame(s).await.expect("a frame")
}

/// The next text message from the server (other frames skipped), within 10 s: a test
/// waiting for a message that never comes fails instead of hanging.
pub async fn next_text(s: &mut TcpStream) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (opcode, payload) = next_frame(s).await;
            if opcode == TEXT {
                return serde_json::from_slice(&payload).expect("JSON message");
            }
        }
    })
    .await
    .expect("a text message within 10 s")
}

/// The reply to the request `id`, skipping channel data.
pub async fn reply(s: &mut TcpStream, id: u64) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
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

/// Sends `msg` (which carries `"id": id`) and returns its reply.
pub async fn request(s: &mut TcpStream, id: u64, msg: Value) -> Value {
    assert_eq!(msg["id"], id, "{msg}");
    send(s, &msg).await;
    reply(s, id).await
}

/// The code of the server's close frame, reading (and discarding) what comes before it
/// for up to `within`: `None` when the connection ends or the time runs out without one.
pub async fn close_code(s: &mut TcpStream, within: Duration) -> Option<u16> {
    tokio::time::timeout(within, async {
        loop {
            let (opcode, payload) = read_frame(s).await.ok()?;
            if opcode == CLOSE {
                return Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Answers the server's close frame (code 1000), as RFC 6455 section 5.5.1 asks.
pub async fn close_reply(s: &mut TcpStream) {
    // A peer that has gone already is fine: the close was answered or is moot.
    let _ = s
        .write_all(&client_frame(CLOSE, &1000u16.to_be_bytes()))
        .await;
}

/// A connection authenticated with `token` (request id 1) and subscribed to `channels`
/// (request id 2), both replies asserted.
pub async fn signed_in(base: &str, token: &str, channels: &[&str]) -> TcpStream {
    let mut ws = connect(base).await;
    let r = request(
        &mut ws,
        1,
        serde_json::json!({"op": "auth", "id": 1, "token": token}),
    )
    .await;
    assert_eq!(
        without_expiry(r),
        serde_json::json!({"op": "authenticated", "id": 1})
    );
    let r = request(
        &mut ws,
        2,
        serde_json::json!({"op": "subscribe", "id": 2, "channels": channels}),
    )
    .await;
    assert_eq!(r["op"], "subscribed", "{r}");
    ws
}

/// An `authenticated` reply without its `expiresAt`, after checking that it is an RFC 3339
/// time in the future (the token's expiry): what is left compares exactly.
pub fn without_expiry(mut reply: serde_json::Value) -> serde_json::Value {
    let at = reply
        .as_object_mut()
        .and_then(|o| o.remove("expiresAt"))
        .unwrap_or_else(|| panic!("an authenticated reply without expiresAt: {reply}"));
    let at = at.as_str().expect("expiresAt is a string");
    let ms = feed::views::parse_time_ms(at).unwrap_or_else(|| panic!("expiresAt {at}"));
    assert!(ms > unix_now_ms(), "expiresAt {at} is not in the future");
    reply
}

/// Unix time in milliseconds (what `expiresAt` and the other RFC 3339 times parse to).
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}
