//! `/metrics` read as an operator's dashboard reads it: after a known workload every
//! counter says exactly what happened, and a restart that rebuilds the history store from
//! the journal does not count the journal's history again.

use bourse_tests::*;

/// The value of the sample `name` (with its labels, exactly as written) in `text`.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse::<u64>().expect("an integer sample"))
        })
        .unwrap_or(0)
}

async fn metrics(s: &TestServer) -> String {
    let (st, text) = s.get_text("/metrics").await;
    assert_eq!(st, StatusCode::OK);
    text
}

/// N orders, M trades and K refusals of each kind, counted exactly; paths with ids and
/// unknown paths add no series of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_a_known_workload() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    s.fund(&admin, &a, "SEK", "100000").await;
    s.fund(&admin, &b, "BTC", "10").await;
    let before = metrics(&s).await;
    for i in 0..6 {
        s.limit(&a, "BTC_SEK", "buy", "0.01", "1000", &format!("a{i}"))
            .await;
    }
    let mut trades = 0;
    for i in 0..4 {
        let (st, o) = s
            .order(
                &b,
                json!({"pair": "BTC_SEK", "side": "sell", "type": "limit", "amount": "0.01",
                       "price": "1000", "clientId": format!("b{i}")}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{o}");
        trades += o["fills"].as_array().unwrap().len() as u64;
    }
    assert_eq!(trades, 4);
    // Refused orders: 3 the wallet cannot pay (422), 2 off the price tick (400).
    for (count, amount, price, tag, status) in [
        (3, "100", "100000", "poor", StatusCode::UNPROCESSABLE_ENTITY),
        (2, "0.01", "1000.001", "tick", StatusCode::BAD_REQUEST),
    ] {
        for i in 0..count {
            let (st, _) = s
                .order(
                    &a,
                    json!({"pair": "BTC_SEK", "side": "buy", "type": "limit", "amount": amount,
                           "price": price, "clientId": format!("{tag}{i}")}),
                )
                .await;
            assert_eq!(st, status);
        }
    }
    for i in 0..25 {
        let (st, _) = s
            .get(&format!("/v1/orders/{}", 900_000 + i), Some(&a.token))
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = s.get(&format!("/no/such/path/{i}"), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
    let after = metrics(&s).await;
    let delta = |name: &str| sample(&after, name) - sample(&before, name);
    let route = |m: &str, r: &str, st: u16| {
        format!("bourse_http_requests_total{{method=\"{m}\",route=\"{r}\",status=\"{st}\"}}")
    };
    assert_eq!(delta("bourse_orders_total"), 10, "{after}");
    assert_eq!(delta("bourse_trades_total"), 4, "{after}");
    assert_eq!(delta(&route("POST", "/v1/orders", 201)), 10, "{after}");
    assert_eq!(delta(&route("POST", "/v1/orders", 422)), 3, "{after}");
    assert_eq!(delta(&route("POST", "/v1/orders", 400)), 2, "{after}");
    assert_eq!(delta(&route("GET", "/v1/orders/{id}", 404)), 25, "{after}");
    assert_eq!(delta(&route("GET", "unmatched", 404)), 25, "{after}");
    assert!(
        !after.contains("900000") && !after.contains("/no/such"),
        "a path's id became a label:\n{after}"
    );
    // The latency histogram: cumulative buckets ending in +Inf = count.
    let buckets: Vec<u64> = after
        .lines()
        .filter(|l| {
            l.starts_with(
                "bourse_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/orders\",",
            )
        })
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(
        buckets.last().copied(),
        Some(sample(
            &after,
            "bourse_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/orders\"}"
        ))
    );
    s.stop().await;
}

/// A history store rebuilt from the journal at start (deleted, or lost with its disk)
/// replays every order and trade of the journal into it; those were counted as if placed
/// since the start, so `bourse_orders_total` began at the whole history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_history_store_is_not_counted_again() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    s.fund(&admin, &a, "SEK", "100000").await;
    s.fund(&admin, &b, "BTC", "10").await;
    for i in 0..3 {
        s.limit(&a, "BTC_SEK", "buy", "0.01", "1000", &format!("a{i}"))
            .await;
        s.limit(&b, "BTC_SEK", "sell", "0.01", "1000", &format!("b{i}"))
            .await;
    }
    let text = metrics(&s).await;
    assert_eq!(sample(&text, "bourse_orders_total"), 6, "{text}");
    assert_eq!(sample(&text, "bourse_trades_total"), 3, "{text}");
    assert_eq!(sample(&text, "bourse_engine_failed"), 0, "{text}");
    for limit in ["global", "per_address"] {
        let line = format!("bourse_connections_refused_total{{limit=\"{limit}\"}} 0");
        assert!(text.lines().any(|l| l == line), "no `{line}`:\n{text}");
    }
    let s = s
        .restart_with(|dir| {
            for f in ["history.sqlite", "history.sqlite-wal", "history.sqlite-shm"] {
                let _ = std::fs::remove_file(dir.join(f));
            }
        })
        .await;
    // The store was rebuilt: the orders are there again...
    let (_, token) = s.token(&a.client_id, &a.secret, None).await;
    let token = token["access_token"].as_str().expect("a token").to_string();
    let (st, list) = s.get("/v1/orders?status=all", Some(&token)).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(list["meta"]["totalCount"], 3, "{list}");
    // ...and the counters start from nothing, as every other counter of a new process.
    let text = metrics(&s).await;
    assert_eq!(sample(&text, "bourse_orders_total"), 0, "{text}");
    assert_eq!(sample(&text, "bourse_trades_total"), 0, "{text}");
    s.stop().await;
}
