//! A graceful stop is bounded: one client holding a request half sent kept the server up
//! for the whole header or body timeout (30 s by default, longer if configured), which is
//! as long as an orchestrator usually waits before a SIGKILL. Now the connections are
//! waited for at most the WebSocket close grace (10 s) plus a second from the stop, and
//! then the pipeline stops as usual: what was acknowledged is all there after a restart.

use std::time::{Duration, Instant};

use bourse_tests::*;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_does_not_hold_the_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = test_config(tmp.path());
    config.header_timeout_secs = 300;
    config.body_timeout_secs = 300;
    let s = TestServer::start_with(config).await;
    let admin = s.admin_token().await;
    let a = s.register("alice").await;
    s.fund(&admin, &a, "SEK", "1000").await;
    let placed = s.limit(&a, "BTC_SEK", "buy", "0.001", "1000", "o1").await;
    let addr = s.base.trim_start_matches("http://").to_string();
    // One connection with a body a third sent, one with half a head.
    let mut body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    body.write_all(
        b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"name\":",
    )
    .await
    .unwrap();
    let mut head = tokio::net::TcpStream::connect(&addr).await.unwrap();
    head.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dir = s.dir.clone();
    let started = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(30), s.stop_result())
        .await
        .expect("the stop waits for the connections no longer than its grace");
    let took = started.elapsed();
    assert!(stopped.is_ok(), "{stopped:?}");
    assert!(took < Duration::from_secs(14), "the stop took {took:?}");
    drop((body, head));
    let s = TestServer::start_with(test_config(&dir)).await;
    let (_, token) = s.token(&a.client_id, &a.secret, None).await;
    let token = token["access_token"].as_str().unwrap().to_string();
    let (st, order) = s
        .get(&format!("/v1/orders/{}", id_of(&placed)), Some(&token))
        .await;
    assert_eq!(st, StatusCode::OK, "{order}");
    s.stop().await;
}
