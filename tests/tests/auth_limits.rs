//! Argon2 runs are bounded (`argon2_max_pending`): each costs a CPU and its memory for a
//! while, and the token endpoint runs one for any client id. Past the bound a call is a 503
//! problem with `Retry-After`, not one more argon2 run.

use bourse_tests::*;

/// Twenty token requests for a made-up client at once, with room for two: some are refused
/// with a 503 problem and `Retry-After`, the others get the usual 401 `invalid_client`.
/// Before the bound all twenty ran argon2 at once on the blocking pool (all 401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argon2_runs_past_the_bound_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    // A run of some milliseconds, so that the requests overlap.
    config.argon2_memory_kib = 4096;
    config.argon2_iterations = 4;
    config.argon2_max_pending = 2;
    let s = TestServer::start_with(config).await;

    let calls = (0..20).map(|i| {
        let (http, url) = (s.http.clone(), s.url("/v1/oauth2/token"));
        async move {
            let secret = format!("guess-{i}");
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
                ("client_secret", secret.as_str()),
            ];
            let res = http.post(url).form(&form).send().await.expect("request");
            let status = res.status();
            let retry_after = res.headers().get("retry-after").cloned();
            let content_type = res.headers().get("content-type").cloned();
            let body: Value = res.json().await.expect("json");
            (status, retry_after, content_type, body)
        }
    });
    let answers = futures::future::join_all(calls).await;
    let mut refused = 0;
    for (status, retry_after, content_type, body) in answers {
        match status {
            StatusCode::UNAUTHORIZED => assert_eq!(body["error"], "invalid_client", "{body}"),
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                assert_eq!(body["code"], "SERVICE_UNAVAILABLE", "{body}");
                assert_eq!(retry_after.expect("Retry-After"), "1");
                assert_eq!(
                    content_type.expect("content type"),
                    "application/problem+json"
                );
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(refused > 0, "every request ran argon2");
    // Once the burst is over, the admin signs in as usual.
    let (status, v) = s.token(ADMIN_ID, ADMIN_SECRET, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    s.stop().await;
}

/// Expired tokens leave the history store's token table as new ones are issued; before,
/// every token ever issued stayed there (a row per token request, for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_pruned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.token_ttl_secs = 1;
    let s = TestServer::start_with(config).await;
    let tokens = |s: &TestServer| -> i64 {
        s.state()
            .store
            .read_now(|c| c.query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0)))
            .expect("count")
    };
    for _ in 0..3 {
        let (status, v) = s.token(ADMIN_ID, ADMIN_SECRET, None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    assert_eq!(tokens(&s), 3);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, v) = s.token(ADMIN_ID, ADMIN_SECRET, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(tokens(&s), 1, "the three expired tokens are gone");
    // The new token works.
    let token = v["access_token"].as_str().expect("token");
    let (status, v) = s.get("/v1/wallet", Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    s.stop().await;
}

/// A client that sends a token request and hangs up does not take its argon2 run out of the
/// bound: the run goes on to its end on the blocking pool, and counts until then. Before,
/// its slot was given back at the hang-up, so a client that sent and closed could have any
/// number of runs going at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_client_hung_up_counts_until_it_ends() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    // A run long enough to outlast the hang-up and the next request (a second or more in a
    // debug build).
    config.argon2_memory_kib = 32 * 1024;
    config.argon2_iterations = 2;
    config.argon2_max_pending = 1;
    let s = TestServer::start_with(config).await;
    let form = "grant_type=client_credentials&client_id=nobody&client_secret=guess";
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut hung = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/oauth2/token HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    hung.write_all(head.as_bytes()).await.expect("send");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(hung);
    let (status, v) = s.token("nobody", "guess", None).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the hung-up run still counts: {v}"
    );
    // Once it has ended, the next one runs (and finds no such client).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, v) = s.token("nobody", "guess", None).await;
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(v["error"], "invalid_client", "{v}");
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert!(std::time::Instant::now() < deadline, "the run never ended");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.stop().await;
}
