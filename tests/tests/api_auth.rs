//! Registration, tokens, scopes, and the ops endpoints.

use bourse_tests::*;

/// `POST /v1/oauth2/token` with HTTP Basic client authentication, `grant_type` and `extra`
/// form fields: the status and the JSON body.
async fn basic_token(s: &TestServer, u: &User, extra: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut form = vec![("grant_type", "client_credentials")];
    form.extend_from_slice(extra);
    let res = s
        .http
        .post(s.url("/v1/oauth2/token"))
        .basic_auth(&u.client_id, Some(&u.secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_tokens_and_scopes() {
    let s = TestServer::start().await;
    let a = s.register("alice").await;
    // Token errors (RFC 6749 bodies).
    let (st, e) = s.token(&a.client_id, "wrong", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(e["error"], "invalid_client");
    let (st, e) = s.token("nobody", "x", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(e["error"], "invalid_client");
    let (st, e) = s.token(&a.client_id, &a.secret, Some("admin")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "invalid_scope");
    let (st, e) = s.token(&a.client_id, &a.secret, Some("bogus")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "invalid_scope");
    let (st, e) = s
        .send_form(&[
            ("grant_type", "password"),
            ("client_id", &a.client_id),
            ("client_secret", &a.secret),
        ])
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "unsupported_grant_type");
    let (st, e) = s.send_form(&[("client_id", &a.client_id)]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"], "invalid_request");
    // HTTP Basic.
    let (st, v) = basic_token(&s, &a, &[("scope", "orders:read")]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["scope"], "orders:read");
    assert_eq!(v["expires_in"], 3600);
    let read_only = v["access_token"].as_str().unwrap().to_string();
    // Basic and a form secret together: two authentication methods (RFC 6749 2.3).
    let (st, v) = basic_token(&s, &a, &[("client_secret", a.secret.as_str())]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "invalid_request");
    // Default scopes: everything but admin.
    let (_, v) = s.token(&a.client_id, &a.secret, None).await;
    assert_eq!(
        v["scope"],
        "orders orders:read wallet wallet:read transactions:read"
    );

    // 401s and 403s.
    let (st, e) = s.get("/v1/wallet", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(e["code"], "UNAUTHORIZED");
    let (st, _) = s.get("/v1/wallet", Some("garbage")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, e) = s.get("/v1/wallet", Some(&read_only)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(e["code"], "FORBIDDEN");
    let (st, _) = s.get("/v1/orders", Some(&read_only)).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .post("/v1/orders", Some(&read_only), &json!({"pair":"BTC_SEK","side":"buy","type":"limit","amount":"1","price":"1","clientId":"r"}))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s.get("/v1/admin/audit", Some(&a.token)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s.get("/v1/transactions", Some(&read_only)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // An empty name, or one with a control character (a terminal escape, a newline), is
    // refused; the name is shown to operators.
    for name in ["", "ali\u{1b}[31mce", "bob\nsmith", "carol\u{0}"] {
        let (st, e) = s.post("/v1/users", None, &json!({ "name": name })).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{name:?}: {e}");
        assert_eq!(e["code"], "VALIDATION_FAILED", "{e}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_markets_and_edges() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (st, _) = s.get("/health", None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s.get("/ready", None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, doc) = s.get("/v1/openapi.json", None).await;
    assert_eq!(st, StatusCode::OK);
    assert!(doc["paths"]["/v1/orders"].is_object());
    let res = s.http.get(s.url("/docs/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Request ids: echoed or generated, also on problems.
    let res = s
        .http
        .get(s.url("/v1/nope"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["requestId"], "abc-123");
    assert_eq!(v["code"], "NOT_FOUND");
    let res = s.http.get(s.url("/health")).send().await.unwrap();
    assert!(res.headers().get("x-request-id").is_some());
    // Markets.
    let (_, cur) = s.get("/v1/currencies", None).await;
    assert_eq!(cur.as_array().unwrap().len(), 5);
    let (_, pairs) = s.get("/v1/pairs", None).await;
    let names: Vec<_> = pairs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pair"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["BTC_SEK", "ETH_SEK", "BTC_USDC", "ETH_BTC"]);
    assert_eq!(pairs[0]["makerFeeRate"], "0.001");
    assert_eq!(pairs[0]["takerFeeRate"], "0.002");
    // Run-time currencies and pairs.
    let (st, c) = s
        .post(
            "/v1/admin/currencies",
            Some(&admin),
            &json!({"currency":"NOK","minorAmountDecimals":2,"displayName":"Norwegian krone"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    let (st, _) = s
        .post(
            "/v1/admin/currencies",
            Some(&admin),
            &json!({"currency":"NOK","minorAmountDecimals":2,"displayName":"again"}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, p) = s
        .post("/v1/admin/pairs", Some(&admin), &json!({"pair":"BTC_NOK","base":"BTC","quote":"NOK","priceDecimals":1,"amountDecimals":6,"minAmount":"0.001","makerFeeRate":"0.0005","takerFeeRate":"0.001"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    assert_eq!(p["makerFeeRate"], "0.0005");
    let (st, _) = s
        .post("/v1/admin/pairs", Some(&admin), &json!({"base":"BTC","quote":"NOK","priceDecimals":1,"amountDecimals":6,"minAmount":"0.001","makerFeeRate":"0.0005","takerFeeRate":"0.001"}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) = s
        .post("/v1/admin/pairs", Some(&admin), &json!({"base":"ETH","quote":"NOK","priceDecimals":0,"amountDecimals":1,"minAmount":"0.1","makerFeeRate":"0.001","takerFeeRate":"0.001"}))
        .await;
    assert_eq!(
        st,
        StatusCode::BAD_REQUEST,
        "price+amount decimals coarser than the quote"
    );
    let (_, pairs) = s.get("/v1/pairs", None).await;
    assert_eq!(pairs.as_array().unwrap().len(), 5);
    let (st, _) = s
        .patch(
            "/v1/admin/pairs/NOPE_X",
            Some(&admin),
            &json!({"status":"halted"}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, m) = s.get_text("/metrics").await;
    assert_eq!(st, StatusCode::OK);
    assert!(m.contains("bourse_http_requests_total"), "{m}");
    assert!(m.contains("bourse_journal_fsync_duration_seconds_count"));
    assert!(m.contains("bourse_ring_occupancy"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = test_config(tmp.path());
    c.rate_limit_per_sec = 5;
    c.rate_limit_burst = 5;
    let s = TestServer::start_with(c).await;
    let mut limited = None;
    for _ in 0..20 {
        let res = s.http.get(s.url("/v1/pairs")).send().await.unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(res);
            break;
        }
    }
    let res = limited.expect("limited within 20 requests");
    assert!(res.headers().get("retry-after").is_some());
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["code"], "RATE_LIMITED");
    s.stop().await;
}

/// Two tokens of one account, whatever the spelling of the scheme, spend one budget: the
/// limiter once keyed the raw `Authorization` header, so each token (and `bearer` beside
/// `Bearer`) had a budget of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_per_account_not_per_token() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = test_config(tmp.path());
    c.rate_limit_per_sec = 1;
    c.rate_limit_burst = 10;
    let s = TestServer::start_with(c).await;
    // Registration and tokens spend this address's budget (3 of 10), not the account's.
    let a = s.register("alice").await;
    let (st, v) = s.token(&a.client_id, &a.secret, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let second = v["access_token"].as_str().unwrap().to_string();
    assert_ne!(second, a.token);

    let mut sent = 0;
    loop {
        let (st, v) = s.get("/v1/wallet", Some(&a.token)).await;
        sent += 1;
        if st == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(v["code"], "RATE_LIMITED");
            break;
        }
        assert_eq!(st, StatusCode::OK, "{v}");
        assert!(sent <= 15, "the first token was never limited");
    }
    // The second token, spelled `bearer`: the same account, the same spent budget (a token
    // a second may have come back meanwhile, never the ten of a fresh bucket).
    let mut ok = 0;
    for _ in 0..10 {
        let res = s
            .http
            .get(s.url("/v1/wallet"))
            .header("authorization", format!("bearer {second}"))
            .send()
            .await
            .unwrap();
        match res.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(res.headers().get("retry-after").is_some());
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        ok <= 3,
        "the second token had its own budget: {ok} of 10 passed"
    );
    // The account's limit is not its address's: an anonymous call still passes.
    let (st, _) = s.get("/v1/pairs", None).await;
    assert_eq!(st, StatusCode::OK);
    s.stop().await;
}

/// The token endpoint is limited per client address whatever credentials each call
/// carries: HTTP Basic with a different client id each time once got a fresh budget per
/// credential string.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_is_limited_per_address_not_per_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = test_config(tmp.path());
    c.rate_limit_per_sec = 1;
    c.rate_limit_burst = 5;
    let s = TestServer::start_with(c).await;
    let mut limited_at = None;
    for i in 0..20 {
        let res = s
            .http
            .post(s.url("/v1/oauth2/token"))
            .basic_auth(format!("guess-{i}"), Some("secret"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        match res.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(res.headers().get("retry-after").is_some());
                let v: Value = res.json().await.unwrap();
                assert_eq!(v["code"], "RATE_LIMITED");
                limited_at = Some(i);
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let at = limited_at.expect("guessing credentials was never limited");
    assert!(at <= 7, "limited only after {at} guesses");
    // Right credentials in the form, from the same address: the same spent budget.
    let (st, v) = s.token(ADMIN_ID, ADMIN_SECRET, None).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
    s.stop().await;
}

/// A token lifetime the server cannot honour stops the start, naming the setting: with
/// `token_ttl_secs` 0, or 2^63 seconds and more (the expiry wrapped negative), the token
/// endpoint answered 200 with tokens every call then refused as expired. The largest
/// lifetime accepted issues tokens that work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_lifetime_that_issues_expired_tokens_stops_the_start() {
    for ttl in [0, 1 << 63, u64::MAX] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        config.token_ttl_secs = ttl;
        let err = api::server::spawn(config)
            .await
            .expect_err("a server whose tokens are born expired");
        assert!(err.to_string().contains("token_ttl_secs"), "{ttl}: {err}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.token_ttl_secs = api::config::MAX_TOKEN_TTL_SECS;
    let s = TestServer::start_with(config).await;
    let (st, v) = s.token(ADMIN_ID, ADMIN_SECRET, Some("admin")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["expires_in"], api::config::MAX_TOKEN_TTL_SECS);
    let token = v["access_token"].as_str().expect("token");
    let (st, v) = s.get("/v1/admin/audit", Some(token)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    s.stop().await;
}

/// `bourse_auth_secret_verifications_total` from `/metrics`.
async fn secret_verifications(s: &TestServer) -> u64 {
    let (_, m) = s.get_text("/metrics").await;
    m.lines()
        .find_map(|l| l.strip_prefix("bourse_auth_secret_verifications_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no verification counter in {m}"))
}

/// An unknown client id costs one argon2 verification like a wrong secret does (against a
/// dummy hash), so the token endpoint's timing does not tell which client ids exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_client_costs_an_argon2_verification_like_a_wrong_secret() {
    let s = TestServer::start().await;
    let a = s.register("alice").await;
    let before = secret_verifications(&s).await;
    let (st, e) = s.token(&a.client_id, "wrong", None).await;
    assert_eq!(
        (st, &e["error"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_client"))
    );
    assert_eq!(secret_verifications(&s).await, before + 1);
    let (st, e) = s.token("no-such-client", "wrong", None).await;
    assert_eq!(
        (st, &e["error"]),
        (StatusCode::UNAUTHORIZED, &json!("invalid_client"))
    );
    assert_eq!(secret_verifications(&s).await, before + 2);
    s.stop().await;
}

/// A made-up HTTP method is counted under `method="other"`: the label once carried any
/// method a client sent, so each made-up name added series to `/metrics` without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_label_made_up_methods_other() {
    let s = TestServer::start().await;
    for path in ["/v1/pairs", "/v1/no-such-route"] {
        let method = reqwest::Method::from_bytes(b"FROBNICATE").unwrap();
        let res = s.http.request(method, s.url(path)).send().await.unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
    }
    let (st, _) = s.get("/v1/pairs", None).await;
    assert_eq!(st, StatusCode::OK);
    let (_, m) = s.get_text("/metrics").await;
    assert!(!m.contains("FROBNICATE"), "{m}");
    let other: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("bourse_http_requests_total{method=\"other\""))
        .collect();
    assert_eq!(other.len(), 2, "one series per route: {m}");
    assert!(
        other
            .iter()
            .any(|l| l.contains("route=\"/v1/pairs\"") && l.ends_with(" 1")),
        "{other:?}"
    );
    assert!(m.contains("bourse_http_requests_total{method=\"GET\",route=\"/v1/pairs\""));
    s.stop().await;
}
