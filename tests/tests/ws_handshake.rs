//! A refused WebSocket handshake tells the client what to do: a 426 (no upgrade asked for)
//! names the protocol in `Upgrade` (RFC 9110 15.5.22), and an unsupported
//! `Sec-WebSocket-Version` is answered with the version the server speaks (RFC 6455 4.4).

use bourse_tests::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `GET /v1/ws` with `headers` and returns the response head, lower-cased.
async fn head_of(base: &str, headers: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).await.expect("read"),
            1,
            "closed during the head"
        );
        head.push(b[0]);
    }
    String::from_utf8(head).expect("ascii").to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handshake_names_what_the_server_speaks() {
    let s = TestServer::start().await;

    let head = head_of(&s.base, "").await;
    assert!(head.starts_with("http/1.1 426 "), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");

    let head = head_of(
        &s.base,
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 400 "), "{head}");
    assert!(head.contains("\r\nsec-websocket-version: 13\r\n"), "{head}");

    s.stop().await;
}
