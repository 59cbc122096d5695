//! Limits on HTTP connections (`api::connections`): how many may be open at once, and how
//! long one may take to send a request head. Each probe is a raw TCP connection, bounded in
//! time.

use std::time::{Duration, Instant};

use bourse_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Everything the server sends on `tcp` until it closes the connection, within `limit`
/// (`None`: still open at the deadline).
async fn read_to_close(tcp: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| out)
}

async fn connect(s: &TestServer) -> TcpStream {
    TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// One connection past `max_connections` gets a 503 problem and is closed; connections that
/// send nothing, or a request head that never ends, are closed after `header_timeout_secs`,
/// and their slots serve others again. Before the limits, such connections stayed open for
/// good (a client could hold every file descriptor of the process) and no connection was
/// ever refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.max_connections = 3;
    config.header_timeout_secs = 1;
    let s = TestServer::start_with(config).await;

    // Three slots: one connection says nothing, one dribbles an unfinished head, one keeps
    // its connection alive after a request.
    let mut silent = connect(&s).await;
    let mut slow = connect(&s).await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send");
    let mut kept = connect(&s).await;
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let mut first = [0u8; 15];
    kept.read_exact(&mut first).await.expect("a response");
    assert_eq!(&first, b"HTTP/1.1 200 OK");

    // A fourth is one too many: a 503 problem, and the connection closes.
    let mut extra = connect(&s).await;
    refusal_problem(&mut extra).await;

    // Each of the three is closed by the server within the header timeout (and slack).
    let started = Instant::now();
    for (name, tcp) in [
        ("silent", &mut silent),
        ("slow", &mut slow),
        ("kept alive", &mut kept),
    ] {
        let rest = read_to_close(tcp, Duration::from_secs(5)).await;
        assert!(rest.is_some(), "the {name} connection is still open");
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    // Their slots are free again.
    let (status, v) = s.get("/v1/pairs", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    s.stop().await;
}

/// A setting that would refuse every connection stops the start with its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_connection_limits_stop_the_start() {
    for (setting, change) in [
        (
            "max_connections",
            (|c: &mut api::Config| c.max_connections = 0) as fn(&mut api::Config),
        ),
        ("header_timeout_secs", |c| c.header_timeout_secs = 0),
        ("max_connections_per_address", |c| {
            c.max_connections_per_address = 0
        }),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        change(&mut config);
        let err = api::server::spawn(config)
            .await
            .expect_err("refused")
            .to_string();
        assert!(err.contains(setting), "{err}");
    }
}

/// A request body that stops arriving is a 408 problem once `body_timeout_secs` has passed,
/// and the connection closes. Before, the handler waited for the rest of the body for good,
/// and the connection with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_completes_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.body_timeout_secs = 1;
    let s = TestServer::start_with(config).await;

    let mut tcp = connect(&s).await;
    tcp.write_all(
        b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"name\":",
    )
    .await
    .expect("send");
    let answer = read_to_close(&mut tcp, Duration::from_secs(5))
        .await
        .expect("answered and closed within the timeout");
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{answer}"
    );
    let body = answer.split_once("\r\n\r\n").expect("a body").1;
    let problem: Value = serde_json::from_str(body).expect("json body");
    assert_eq!(problem["code"], "REQUEST_TIMEOUT", "{problem}");
    // Nothing was registered.
    let (status, v) = s.get("/v1/pairs", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    s.stop().await;
}

/// A chunked body that is not valid chunked encoding is a 400 (the request is malformed),
/// not a 413 (it is not too large). Before, every failure to read a body was a 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_a_400() {
    let s = TestServer::start().await;
    let mut tcp = connect(&s).await;
    tcp.write_all(
        b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nZZZ\r\n{}\r\n0\r\n\r\n",
    )
    .await
    .expect("send");
    let answer = read_to_close(&mut tcp, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let body = answer.split_once("\r\n\r\n").expect("a body").1;
    let problem: Value = serde_json::from_str(body).expect("json body");
    assert_eq!(problem["code"], "VALIDATION_FAILED", "{problem}");
    // A chunked body over 64 KiB is still a 413.
    let mut tcp = connect(&s).await;
    let mut big = b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_vec();
    for _ in 0..3 {
        big.extend_from_slice(b"8000\r\n");
        big.extend_from_slice(&[b' '; 0x8000]);
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before it has read everything.
    let _ = tcp.write_all(&big).await;
    let answer = read_to_close(&mut tcp, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    s.stop().await;
}

/// A head hyper cannot parse (a header line without a colon, a request line that is not
/// HTTP, a `Content-Length` that is not a number), or one past hyper's own size limits, is
/// answered with a problem and a request id like every other failure, and the connection is
/// closed. Before, hyper's own answer went out: a bare status line with an empty body and no
/// `X-Request-Id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparsable_head_gets_a_problem() {
    let s = TestServer::start().await;
    let mut huge = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 600 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let cases: [(&[u8], u16, &str); 5] = [
        (
            b"GET /health HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
            400,
            "VALIDATION_FAILED",
        ),
        (b"GARBAGE\r\n\r\n", 400, "VALIDATION_FAILED"),
        (
            b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            400,
            "VALIDATION_FAILED",
        ),
        (
            b"GET /hea\x01lth HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "VALIDATION_FAILED",
        ),
        (&huge, 431, "HEADERS_TOO_LARGE"),
    ];
    for (request, status, code) in cases {
        let shown = String::from_utf8_lossy(&request[..request.len().min(40)]).to_string();
        let mut tcp = connect(&s).await;
        // The server may answer and close before it has read all of a huge head.
        let _ = tcp.write_all(request).await;
        let answer = read_to_close(&mut tcp, Duration::from_secs(5))
            .await
            .expect("answered and closed");
        let answer = String::from_utf8_lossy(&answer).to_string();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{shown:?}: {answer}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("content-type: application/problem+json"),
            "{shown:?}: {head}"
        );
        let id = head
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .unwrap_or_else(|| panic!("{shown:?}: no request id in {head}"));
        let problem: Value = serde_json::from_str(body).expect("json body");
        assert_eq!(problem["status"], status, "{shown:?}: {problem}");
        assert_eq!(problem["code"], code, "{shown:?}: {problem}");
        assert_eq!(problem["requestId"], id, "{shown:?}: {problem}");
    }
    // The server still answers on a fresh connection.
    let (status, _) = s.get("/health", None).await;
    assert_eq!(status, 200);
    s.stop().await;
}

/// A connection to `s` from the loopback address `from` (127.0.0.1, 127.0.0.2, ...: every
/// 127/8 address is the machine's own, so each is another client address to the server).
async fn connect_from(s: &TestServer, from: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind((std::net::Ipv4Addr::from(from), 0).into())
        .expect("bind the client address");
    let server = s.base.trim_start_matches("http://").parse().expect("addr");
    tokio::time::timeout(Duration::from_secs(5), socket.connect(server))
        .await
        .expect("connected in time")
        .expect("connect")
}

/// Sends `GET /health` on `tcp` and reads the status line of the answer, within 5 s
/// (`None`: the connection closed first).
async fn health_status(tcp: &mut TcpStream) -> Option<String> {
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut first = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut first))
        .await
        .expect("an answer in time")
        .ok()?;
    Some(String::from_utf8_lossy(&first).to_string())
}

/// The 503 problem a refused connection gets (asserted), as JSON.
async fn refusal_problem(tcp: &mut TcpStream) -> Value {
    let answer = read_to_close(tcp, Duration::from_secs(5))
        .await
        .expect("the refused connection is closed");
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(lower.contains("retry-after: 1"), "{answer}");
    let body = answer.split_once("\r\n\r\n").expect("a body").1;
    let problem: Value = serde_json::from_str(body).expect("json body");
    assert_eq!(problem["code"], "SERVICE_UNAVAILABLE", "{problem}");
    problem
}

/// A new connection from `from` served within 5 s: the server releases a closed
/// connection's count once it has seen the close, so a connection opened right after it may
/// still be refused; each try is a new connection.
async fn served_again(s: &TestServer, from: [u8; 4]) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut tcp = connect_from(s, from).await;
        if health_status(&mut tcp).await.as_deref() == Some("HTTP/1.1 200") {
            return tcp;
        }
        assert!(
            Instant::now() < deadline,
            "no connection from {from:?} served within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One client address cannot take every connection slot: past
/// `max_connections_per_address` its next connection gets the 503 problem saying so, while
/// another address is still served, up to the global `max_connections` (whose 503 says
/// the server has too many). A closed connection, a WebSocket closed after its upgrade, and
/// one that ended with an error each give their address's count back. Before the bound, one
/// address could hold all `max_connections` slots and every other client got the 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.max_connections = 3;
    config.max_connections_per_address = 2;
    let s = TestServer::start_with(config).await;
    const A: [u8; 4] = [127, 0, 0, 1];
    const B: [u8; 4] = [127, 0, 0, 2];

    // A keep-alive HTTP connection and a WebSocket from A: its two.
    let mut kept = connect_from(&s, A).await;
    assert_eq!(
        health_status(&mut kept).await.as_deref(),
        Some("HTTP/1.1 200")
    );
    let (status, ws, head) = bourse_tests::ws::upgrade(&s.base).await;
    assert_eq!(status, 101, "{head}");

    // A third from A is refused, naming the address.
    let mut third = connect_from(&s, A).await;
    let problem = refusal_problem(&mut third).await;
    let detail = problem["detail"].as_str().expect("a detail");
    assert!(detail.contains("client address"), "{problem}");

    // B is not locked out: it takes the last slot...
    let mut other = connect_from(&s, B).await;
    assert_eq!(
        health_status(&mut other).await.as_deref(),
        Some("HTTP/1.1 200")
    );
    // ...and past the global limit B is refused too, with the global limit's detail.
    let mut over = connect_from(&s, B).await;
    let problem = refusal_problem(&mut over).await;
    let detail = problem["detail"].as_str().expect("a detail");
    assert!(detail.contains("too many connections"), "{problem}");
    assert!(!detail.contains("client address"), "{problem}");
    drop(other);

    // Closing the WebSocket gives A one back.
    drop(ws);
    let mut again = served_again(&s, A).await;
    // A is at two again: refused.
    let mut refused = connect_from(&s, A).await;
    refusal_problem(&mut refused).await;

    // A connection that ends with an error (a head hyper cannot parse: its 400, then the
    // close) gives its count back too.
    let _ = again
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n")
        .await;
    let rest = read_to_close(&mut again, Duration::from_secs(5)).await;
    let rest = String::from_utf8_lossy(&rest.expect("closed by the server")).to_string();
    assert!(rest.contains("HTTP/1.1 400 "), "{rest}");
    drop(again);
    let served = served_again(&s, A).await;
    drop(kept);
    drop(served);

    // `/metrics` counts the refusals by bound (A's slots come back once the server has
    // seen the closes: asked until served).
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        // A refused connection is a 503 or, past the answers in flight, a close.
        match s.http.get(s.url("/metrics")).send().await {
            Ok(res) if res.status() == StatusCode::OK => break res.text().await.expect("body"),
            other => {
                let seen = other.map(|r| r.status().to_string());
                assert!(Instant::now() < deadline, "/metrics not served: {seen:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let refused = |limit: &str| -> u64 {
        let key = format!("bourse_connections_refused_total{{limit=\"{limit}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .unwrap_or_else(|| panic!("no {key}in\n{text}"))
            .parse()
            .expect("a count")
    };
    assert!(refused("per_address") >= 2, "{text}");
    assert!(refused("global") >= 1, "{text}");
    s.stop().await;
}
