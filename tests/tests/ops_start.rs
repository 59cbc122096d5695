//! What the operator meets at start-up and in `/metrics`: one server per data dir, settings
//! that either create every market or none, errors naming what to fix, an address that
//! answers while the server recovers, and a metrics text a Prometheus parser reads family by
//! family.

use api::server_error::ServerError;
use bourse_tests::*;

/// A second server on a data dir in use once started too: both appended to the same journal
/// under the same sequence numbers, and the next start refused the journal as corrupt,
/// losing what both had acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let s = TestServer::start().await;
    let err = api::server::spawn(test_config(&s.dir))
        .await
        .expect_err("the data dir is in use");
    assert!(
        matches!(&err, ServerError::DataDirInUse { dir, .. } if *dir == s.dir),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("in use"), "{msg}");
    assert!(msg.contains(&s.dir.display().to_string()), "{msg}");
    // The first one still works, and once it stops the dir is free again.
    let admin = s.admin_token().await;
    let a = s.register("alice").await;
    s.fund(&admin, &a, "SEK", "1000").await;
    let s = s.restart().await;
    let (st, body) = s.get("/ready", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    s.stop().await;
}

/// A pair the engine refuses used to stop the start after the currencies were journaled:
/// the data dir was no longer empty, so the next start, with the file fixed, created no
/// pair at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_market_in_the_settings_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bad = test_config(tmp.path());
    bad.pairs[1].min_amount = "0.000000001".into();
    let err = api::server::spawn(bad).await.expect_err("refused pair");
    assert!(
        matches!(&err, ServerError::MarketRefused { what, .. } if what == "pair ETH_SEK"),
        "{err:?}"
    );
    assert!(err.to_string().contains("ETH_SEK"), "{err}");
    let s = TestServer::start_with(test_config(tmp.path())).await;
    let (st, pairs) = s.get("/v1/pairs", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(pairs.as_array().map(Vec::len), Some(4), "{pairs}");
    let (_, currencies) = s.get("/v1/currencies", None).await;
    assert_eq!(currencies.as_array().map(Vec::len), Some(5), "{currencies}");
    s.stop().await;
}

/// A data dir that cannot be created said only "File exists (os error 17)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_that_cannot_be_made_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    for dir in [file.clone(), file.join("sub")] {
        let err = api::server::spawn(test_config(&dir))
            .await
            .expect_err("not a directory");
        assert!(
            matches!(&err, ServerError::DataDir { path, .. } if *path == dir),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
    }
}

/// The start-up answers keep the server's connection bound and header timeout: a start is
/// when every client reconnects at once, and the answerer had neither (axum::serve).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_answers_keep_the_connection_limits() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = api::connections::ConnLimits {
        max_connections: 1,
        max_connections_per_address: 1,
        header_timeout: std::time::Duration::from_millis(500),
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let answers = tokio::spawn(api::starting::serve(listener, limits, async move {
        let _ = ready_rx.await;
    }));
    // A silent connection takes the only slot...
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // ...so the next one is refused with the 503 problem, unread.
    let mut next = tokio::net::TcpStream::connect(addr).await.unwrap();
    next.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        next.read_to_end(&mut answer),
    )
    .await
    .expect("answered")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("SERVICE_UNAVAILABLE"), "{answer}");
    // The silent one is closed once its head is overdue.
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed within the header timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    ready_tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), answers)
        .await
        .expect("the answers stop once the server is ready")
        .unwrap();
}

/// Every family's samples follow its own `# HELP` and `# TYPE` lines, never another
/// family's: `bourse_ring_occupancy` and `bourse_ring_capacity` were interleaved, so a parser
/// (Python's `prometheus_client`) read a typed family with no samples and then one untyped
/// family per line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_families_are_contiguous_and_described() {
    let s = TestServer::start().await;
    let a = s.register("alice").await;
    let admin = s.admin_token().await;
    s.fund(&admin, &a, "SEK", "1000").await;
    s.limit(&a, "BTC_SEK", "buy", "0.001", "1000", "m1").await;
    let (st, text) = s.get_text("/metrics").await;
    assert_eq!(st, StatusCode::OK);
    let mut helped = std::collections::HashSet::new();
    let mut typed: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(
                !typed.iter().any(|(n, _)| n == name),
                "{name} typed twice:\n{text}"
            );
            assert!(helped.contains(name), "{name} has no HELP:\n{text}");
            typed.push((name.to_string(), kind.to_string()));
        } else if !line.is_empty() {
            let sample = line.split(['{', ' ']).next().unwrap();
            let (family, kind) = typed.last().expect("a sample before any TYPE");
            let ok = sample == family
                || (kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|sfx| sample.strip_suffix(sfx) == Some(family)));
            assert!(ok, "{sample} among the samples of {family}:\n{text}");
        }
    }
    for name in ["bourse_ring_occupancy", "bourse_ring_capacity"] {
        assert!(typed.iter().any(|(n, _)| n == name), "{name}:\n{text}");
    }
    s.stop().await;
}

/// While the server starts (recovery can take seconds), its address answers: `/health` is
/// 200 "starting", everything else, `/ready` included, a 503 problem with `Retry-After`,
/// each with its request id and `Connection: close`; once the server is ready the answers
/// stop and the socket is the real server's. Connections used to wait unanswered, so a
/// liveness probe took a recovering server for a dead one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_answers_while_the_server_starts() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let limits = api::connections::ConnLimits::of(&test_config(std::path::Path::new(".")));
    let answers = tokio::spawn(api::starting::serve(listener, limits, async move {
        let _ = ready_rx.await;
    }));
    let http = reqwest::Client::new();
    let r = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["connection"], "close");
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "starting"})
    );
    for (method, path) in [
        (reqwest::Method::GET, "/ready"),
        (reqwest::Method::GET, "/v1/pairs"),
        (reqwest::Method::POST, "/v1/orders"),
    ] {
        let r = http
            .request(method, format!("{base}{path}"))
            .header("x-request-id", "probe-7")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(r.headers()["retry-after"], "1", "{path}");
        assert_eq!(r.headers()["x-request-id"], "probe-7", "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["code"], "SERVICE_UNAVAILABLE", "{p}");
        assert_eq!(p["requestId"], "probe-7", "{p}");
        assert_eq!(p["instance"], path, "{p}");
    }
    ready_tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), answers)
        .await
        .expect("the answers stop once the server is ready")
        .unwrap();
}
