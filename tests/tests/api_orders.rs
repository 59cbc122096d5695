//! Orders: success paths, every order error code, cross-account isolation, idempotency.

use bourse_tests::*;

async fn setup() -> (TestServer, String, User, User) {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    s.fund(&admin, &a, "SEK", "1000000").await;
    s.fund(&admin, &b, "BTC", "10").await;
    (s, admin, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_lifecycle_and_reads() {
    let (s, admin, a, b) = setup().await;
    let sell = s.limit(&b, "BTC_SEK", "sell", "1", "300000", "s1").await;
    assert_eq!(sell["status"], "open");
    assert_eq!(sell["price"], "300000.00");
    assert_eq!(sell["amount"], "1.00000000");
    // Taker buy at a better limit: fills at the maker's price.
    let buy = s.limit(&a, "BTC_SEK", "buy", "0.4", "310000", "b1").await;
    assert_eq!(buy["status"], "filled", "{buy}");
    assert_eq!(buy["averagePrice"], "300000.00");
    assert_eq!(buy["filledQuoteAmount"], "120000.00");
    assert_eq!(buy["fee"], "0.00080000");
    assert_eq!(buy["feeCurrency"], "BTC");
    assert_eq!(buy["fills"][0]["liquidity"], "taker");
    let id = sell["id"].as_str().unwrap();
    let (st, o) = s.get(&format!("/v1/orders/{id}"), Some(&b.token)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(o["status"], "partially_filled");
    assert_eq!(o["filledAmount"], "0.40000000");
    assert_eq!(o["fee"], "120.00");
    assert_eq!(o["fills"][0]["liquidity"], "maker");
    let (st, o2) = s.get("/v1/orders/by-client-id/s1", Some(&b.token)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(o2["id"], o["id"]);
    // Other account: 404, read and cancel.
    let (st, e) = s.get(&format!("/v1/orders/{id}"), Some(&a.token)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(e["code"], "ORDER_NOT_FOUND");
    let (st, _) = s.get("/v1/orders/by-client-id/s1", Some(&a.token)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s.delete(&format!("/v1/orders/{id}"), Some(&a.token)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, l) = s.get("/v1/orders", Some(&a.token)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(l["meta"]["totalCount"], 1, "{l}");
    // Lists and fills.
    let (_, l) = s.get("/v1/orders?status=open", Some(&b.token)).await;
    assert_eq!(l["meta"]["count"], 1);
    let (_, l) = s.get("/v1/orders?status=closed", Some(&b.token)).await;
    assert_eq!(l["meta"]["count"], 0);
    let (_, f) = s.get("/v1/fills?pair=BTC_SEK", Some(&a.token)).await;
    assert_eq!(f["meta"]["totalCount"], 1, "{f}");
    assert_eq!(f["data"][0]["side"], "buy");
    // Cancel, then cancel again.
    let (st, c) = s.delete(&format!("/v1/orders/{id}"), Some(&b.token)).await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert_eq!(c["status"], "cancelled");
    let (st, c) = s.delete(&format!("/v1/orders/{id}"), Some(&b.token)).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(c["code"], "ORDER_NOT_OPEN");
    // Cancel-all.
    s.limit(&b, "BTC_SEK", "sell", "0.1", "350000", "s2").await;
    s.limit(&b, "BTC_SEK", "sell", "0.1", "360000", "s3").await;
    let (st, c) = s.delete("/v1/orders?pair=BTC_SEK", Some(&b.token)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(c["cancelled"].as_array().unwrap().len(), 2, "{c}");
    // Market orders, IOC, FOK, post-only.
    s.limit(&b, "BTC_SEK", "sell", "0.5", "300000", "s4").await;
    let (st, m) = s
        .order(&a, json!({"pair":"BTC_SEK","side":"buy","type":"market","quoteAmount":"30000","clientId":"m1"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    assert_eq!(m["filledAmount"], "0.10000000", "{m}");
    let (st, p) = s
        .order(&a, json!({"pair":"BTC_SEK","side":"buy","type":"limit","amount":"0.1","price":"300000","postOnly":true,"clientId":"p1"}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(p["status"], "rejected");
    let (st, _) = s
        .order(&a, json!({"pair":"BTC_SEK","side":"buy","type":"limit","amount":"0.1","price":"300000","postOnly":true,"clientId":"p1"}))
        .await;
    assert_eq!(
        st,
        StatusCode::CONFLICT,
        "a post-only reject consumes the clientId"
    );
    let (st, f) = s
        .order(&a, json!({"pair":"BTC_SEK","side":"buy","type":"limit","amount":"2","price":"300000","timeInForce":"FOK","clientId":"f1"}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(f["status"], "expired");
    let (st, i) = s
        .order(&a, json!({"pair":"BTC_SEK","side":"buy","type":"limit","amount":"1","price":"300000","timeInForce":"IOC","clientId":"i1"}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(i["status"], "expired");
    assert_eq!(i["filledAmount"], "0.40000000");
    s.assert_audit_ok(&admin).await;
    s.assert_transactions_match_wallet(&a).await;
    s.assert_transactions_match_wallet(&b).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_errors_change_nothing() {
    let (s, admin, a, _b) = setup().await;
    let (_, before) = s.get("/v1/wallet", Some(&a.token)).await;
    let base = json!({"pair":"BTC_SEK","side":"buy","type":"limit","amount":"0.1","price":"300000","clientId":"x"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            with("pair", json!("NOPE_SEK")),
            StatusCode::BAD_REQUEST,
            "UNKNOWN_PAIR",
        ),
        (
            with("price", json!("300000.001")),
            StatusCode::BAD_REQUEST,
            "INVALID_PRICE_TICK",
        ),
        (
            with("amount", json!("0.000000001")),
            StatusCode::BAD_REQUEST,
            "INVALID_AMOUNT_STEP",
        ),
        (
            with("amount", json!("0.00001")),
            StatusCode::BAD_REQUEST,
            "AMOUNT_TOO_SMALL",
        ),
        (
            with("amount", json!("-1")),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            with("amount", json!("1e3")),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            with("amount", json!(1)),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            with("price", json!("99999999999999999999999999")),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            with("side", json!("hold")),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            with("type", json!("stop")),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            with("clientId", json!("bad id!")),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            with("clientId", json!("")),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            with("extra", json!(1)),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            with("price", Value::Null),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            with("amount", json!("100")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INSUFFICIENT_FUNDS",
        ),
        (
            json!({"pair":"BTC_SEK","side":"buy","type":"market","amount":"0.1","quoteAmount":"100","clientId":"x"}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            json!({"pair":"BTC_SEK","side":"buy","type":"limit","amount":"0.1"}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
    ];
    for (body, status, code) in cases {
        let (st, e) = s.order(&a, body.clone()).await;
        assert_eq!(st, status, "{body} -> {e}");
        assert_eq!(e["code"], code, "{body} -> {e}");
        assert!(
            e["requestId"].as_str().is_some_and(|r| !r.is_empty()),
            "{e}"
        );
        assert_eq!(e["instance"], "/v1/orders");
    }
    // The failed "x" attempts did not consume the clientId.
    let (st, _) = s.order(&a, base.clone()).await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, e) = s.order(&a, base.clone()).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(e["code"], "DUPLICATE_CLIENT_ID");
    assert!(e["orderId"].is_string());
    // Malformed bodies.
    for (ct, body) in [
        (Some("application/json"), b"{not json".to_vec()),
        (Some("text/plain"), base.to_string().into_bytes()),
        (None, base.to_string().into_bytes()),
        (Some("application/json"), b"[]".to_vec()),
    ] {
        let (st, e) = s
            .raw(
                reqwest::Method::POST,
                "/v1/orders",
                Some(&a.token),
                ct,
                body,
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(e["code"], "VALIDATION_FAILED");
    }
    let big = vec![b' '; 70 * 1024];
    let (st, e) = s
        .raw(
            reqwest::Method::POST,
            "/v1/orders",
            Some(&a.token),
            Some("application/json"),
            big,
        )
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(e["code"], "PAYLOAD_TOO_LARGE");
    // Halted pair.
    let (st, p) = s
        .patch(
            "/v1/admin/pairs/BTC_SEK",
            Some(&admin),
            &json!({"status":"halted"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(p["status"], "halted");
    let (st, e) = s.order(&a, with("clientId", json!("h1"))).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(e["code"], "PAIR_HALTED");
    s.patch(
        "/v1/admin/pairs/BTC_SEK",
        Some(&admin),
        &json!({"status":"active"}),
    )
    .await;
    // Pagination limits, unknown pair in a query.
    let (st, e) = s.get("/v1/orders?limit=1001", Some(&a.token)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    let (st, e) = s.get("/v1/orders?pair=XX_YY", Some(&a.token)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(e["code"], "UNKNOWN_PAIR");
    let (st, _) = s.get("/v1/orders/999999", Some(&a.token)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // State: only the one good order holds funds.
    let (_, after) = s.get("/v1/wallet", Some(&a.token)).await;
    let sek = |w: &Value| {
        w["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["currency"] == "SEK")
            .unwrap()
            .clone()
    };
    assert_eq!(sek(&before)["total"], sek(&after)["total"]);
    assert_eq!(sek(&after)["held"], "30000.00");
    s.assert_audit_ok(&admin).await;
    s.stop().await;
}

/// Orders whose client hangs up mid-request: the clientId is released once the engine has
/// decided, not when the connection goes. A refused order's clientId is free again (it used
/// to stay reserved until a restart, every retry a 409 naming an order that never existed);
/// a booked one's answers a 409 naming the order, which exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_client_hung_up_keeps_its_client_id_only_if_booked() {
    const N: usize = 8;
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let a = s.register("alice").await;
    let order = |cid: &str| {
        json!({"pair":"BTC_SEK","side":"buy","type":"limit","amount":"0.1","price":"1000",
            "clientId": cid})
    };
    // Alice holds nothing yet: the engine refuses every one of these.
    for i in 0..N {
        let body = order(&format!("gone-{i}"));
        s.post_and_hang_up("/v1/orders", &a.token, &body).await;
    }
    for i in 0..N {
        let cid = format!("gone-{i}");
        // A 409 only while the first is still in flight.
        let (st, v) = retry_while_conflict(|| s.order(&a, order(&cid))).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{cid}: {v}");
        assert_eq!(v["code"], "INSUFFICIENT_FUNDS", "{cid}: {v}");
    }
    s.fund(&admin, &a, "SEK", "100000").await;
    for i in 0..N {
        let v = s
            .limit(&a, "BTC_SEK", "buy", "0.1", "1000", &format!("gone-{i}"))
            .await;
        assert_eq!(v["status"], "open", "{v}");
    }
    // Funded now: the engine books these, and their clientIds stay taken by them.
    for i in 0..N {
        let body = order(&format!("kept-{i}"));
        s.post_and_hang_up("/v1/orders", &a.token, &body).await;
    }
    for i in 0..N {
        let cid = format!("kept-{i}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let (st, v) = s.order(&a, order(&cid)).await;
            if st == StatusCode::CREATED {
                // The hung-up request was dropped before it was submitted: nothing booked.
                break;
            }
            assert_eq!(st, StatusCode::CONFLICT, "{cid}: {v}");
            assert_eq!(v["code"], "DUPLICATE_CLIENT_ID", "{cid}: {v}");
            let id = v["orderId"].as_str().expect("orderId");
            let (st, o) = s.get(&format!("/v1/orders/{id}"), Some(&a.token)).await;
            if st == StatusCode::OK {
                assert_eq!(o["clientId"], cid.as_str(), "{o}");
                let by = s
                    .get_ok(&format!("/v1/orders/by-client-id/{cid}"), Some(&a.token))
                    .await;
                assert_eq!(by["id"], id, "{by}");
                break;
            }
            // Still in flight: its reply has not run yet.
            assert!(
                std::time::Instant::now() < deadline,
                "{cid}: order {id}: {o}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    // One order per clientId: the refused ones once each after funding, the kept ones once.
    let l = s.get_ok("/v1/orders?limit=100", Some(&a.token)).await;
    assert_eq!(l["meta"]["totalCount"], 2 * N, "{l}");
    s.assert_audit_ok(&admin).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_identical_orders_one_created() {
    let (s, admin, a, _b) = setup().await;
    let s = std::sync::Arc::new(s);
    let body = json!({"pair":"BTC_SEK","side":"buy","type":"limit","amount":"0.1","price":"1000","clientId":"same"});
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (s, a, body) = (s.clone(), a.clone(), body.clone());
        tasks.push(tokio::spawn(async move { s.order(&a, body).await }));
    }
    let mut created = Vec::new();
    let mut conflicts = Vec::new();
    for t in tasks {
        let (st, v) = t.await.unwrap();
        match st {
            StatusCode::CREATED => created.push(v),
            StatusCode::CONFLICT => conflicts.push(v),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(created.len(), 1);
    assert_eq!(conflicts.len(), 19);
    for c in &conflicts {
        assert_eq!(c["code"], "DUPLICATE_CLIENT_ID");
        assert_eq!(c["orderId"], created[0]["id"]);
    }
    let (_, l) = s.get("/v1/orders", Some(&a.token)).await;
    assert_eq!(l["meta"]["totalCount"], 1);
    // Same for deposits' externalId.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (s, a) = (s.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            s.post(
                "/v1/wallet/deposits",
                Some(&a.token),
                &json!({"currency":"EUR","amount":"10","externalId":"dep-same"}),
            )
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (st, v) = t.await.unwrap();
        if st == StatusCode::CREATED {
            ok += 1;
        } else {
            assert_eq!(v["code"], "DUPLICATE_EXTERNAL_ID", "{v}");
            assert!(v["existingId"].is_string());
        }
    }
    assert_eq!(ok, 1);
    s.assert_audit_ok(&admin).await;
}

/// `max_orders_per_book` reaches the engine: a GTC order that would rest on a full book is
/// a 503 `SERVICE_UNAVAILABLE` that changes nothing. The bound is journaled, so a changed setting
/// applies from the restart on and a replay of the journal (snapshots deleted) under yet
/// another setting keeps every order the live run booked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_orders_per_book_applies_and_survives_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let config = |max: u32| {
        let mut c = test_config(tmp.path());
        c.max_orders_per_book = max;
        c
    };
    let s = TestServer::start_with(config(2)).await;
    let admin = s.admin_token().await;
    let a = s.register("alice").await;
    s.fund(&admin, &a, "SEK", "1000000").await;
    s.limit(&a, "BTC_SEK", "buy", "0.1", "100000", "r1").await;
    s.limit(&a, "BTC_SEK", "buy", "0.1", "100001", "r2").await;
    let (_, wallet_before) = s.get("/v1/wallet", Some(&a.token)).await;
    let full = json!({"pair":"BTC_SEK","side":"buy","type":"limit","amount":"0.1","price":"100002","clientId":"r3"});
    let (st, e) = s.order(&a, full.clone()).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    assert_eq!(e["code"], "SERVICE_UNAVAILABLE");
    let (_, wallet_after) = s.get("/v1/wallet", Some(&a.token)).await;
    assert_eq!(wallet_after, wallet_before, "a refused order holds nothing");
    // An IOC never rests: not refused.
    let (st, e) = s
        .order(&a, json!({"pair":"BTC_SEK","side":"buy","type":"limit","amount":"0.1","price":"100002","clientId":"i1","timeInForce":"IOC"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{e}");
    assert_eq!(e["status"], "expired");
    s.stop().await;

    // Raised: the refused clientId is free, and a third order rests.
    let s = TestServer::start_with(config(3)).await;
    let (st, third) = s.order(&a, full.clone()).await;
    assert_eq!(st, StatusCode::CREATED, "{third}");
    assert_eq!(third["status"], "open");
    let (st, e) = s.order(&a, json!({"pair":"BTC_SEK","side":"buy","type":"limit","amount":"0.1","price":"100003","clientId":"r4"})).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    s.stop().await;

    // Lowered again and replayed from the journal alone: the three booked orders are all
    // on the book (replaying under the setting instead would have refused the third).
    let snapshots = tmp.path().join("snapshots");
    std::fs::remove_dir_all(&snapshots).unwrap();
    let s = TestServer::start_with(config(2)).await;
    let (st, book) = s.get("/v1/pairs/BTC_SEK/book", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(book["bids"].as_array().unwrap().len(), 3, "{book}");
    let (st, e) = s.order(&a, json!({"pair":"BTC_SEK","side":"buy","type":"limit","amount":"0.1","price":"99999","clientId":"r5"})).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    let (st, cancelled) = s
        .delete(
            &format!("/v1/orders/{}", third["id"].as_str().unwrap()),
            Some(&a.token),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{cancelled}");
    // An unchanged setting journals nothing at the next start.
    let (_, ready) = s.get("/ready", None).await;
    s.stop().await;
    let s = TestServer::start_with(config(2)).await;
    let (_, again) = s.get("/ready", None).await;
    assert_eq!(again["lastSeq"], ready["lastSeq"]);
    s.assert_audit_ok(&s.admin_token().await).await;
    s.stop().await;
}

/// A fresh data dir runs the current matching rules (start-up journals `SetRulesVersion`,
/// since every engine starts at the genesis rules): on a full book a crossing GTC order is
/// taken, and it is still there after a replay of the journal alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_data_dir_runs_the_current_matching_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = test_config(tmp.path());
        c.max_orders_per_book = 2;
        c
    };
    let s = TestServer::start_with(config()).await;
    let admin = s.admin_token().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    s.fund(&admin, &a, "SEK", "1000000").await;
    s.fund(&admin, &b, "BTC", "1").await;
    s.limit(&a, "BTC_SEK", "buy", "0.1", "100000", "b1").await;
    s.limit(&b, "BTC_SEK", "sell", "0.1", "100010", "s1").await;
    // Full; under the genesis rules this would be a 503.
    let taken = s.limit(&a, "BTC_SEK", "buy", "0.04", "100010", "b2").await;
    assert_eq!(taken["status"], "filled", "{taken}");
    let (_, book) = s.get("/v1/pairs/BTC_SEK/book", None).await;
    assert_eq!(book["asks"], json!([["100010.00", "0.06000000"]]), "{book}");
    s.stop().await;
    std::fs::remove_dir_all(tmp.path().join("snapshots")).unwrap();
    let s = TestServer::start_with(config()).await;
    let (_, replayed) = s.get("/v1/pairs/BTC_SEK/book", None).await;
    assert_eq!(replayed["asks"], book["asks"], "{replayed}");
    assert_eq!(replayed["bids"], book["bids"], "{replayed}");
    s.assert_audit_ok(&s.admin_token().await).await;
    s.stop().await;
}

/// Submits `command` to a pipeline and waits for its events.
fn submit_blocking(p: &engine::pipeline::Pipeline, command: engine::Command) -> Vec<engine::Event> {
    let (tx, rx) = std::sync::mpsc::channel();
    p.submit(
        command,
        Box::new(move |done: &engine::pipeline::Processed<'_>| {
            let _ = tx.send(done.events.to_vec());
        }),
    )
    .expect("submitted");
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .expect("reply")
}

/// An upgrade: a data dir whose journal was written before the full-book rule changed (at
/// the genesis rules, version 1), holding a crossing GTC order that the full book refused.
/// The upgraded server replays it refused (the ask it would have met is whole, no trade
/// appears) and then moves to the current rules: the same order sent now is taken. A
/// replay of the whole journal (snapshots deleted) gives the same book again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_data_dir_replays_old_orders_under_old_rules_then_runs_the_current_ones() {
    use engine::{
        AccountId, Amount, ClientOrderId, Command, CurrencyId, CurrencySpec, Event, OrderId,
        PairId, PairSpec, PairStatus, PlaceOrder, Price, RejectReason, RequestId, RequestSpec,
        Side,
    };
    let tmp = tempfile::tempdir().unwrap();
    // The old journal, written through the engine's pipeline as the previous build did.
    {
        let p = engine::pipeline::Pipeline::start(
            engine::pipeline::PipelineConfig::new(tmp.path()),
            Box::new(engine::pipeline::NullListener),
        )
        .unwrap();
        let currency = |code: &str, name: &str, decimals| {
            Command::AddCurrency(Box::new(CurrencySpec {
                code: code.into(),
                display_name: name.into(),
                decimals,
            }))
        };
        let credit = |request, account, currency, amount| {
            Command::DepositCredited(Box::new(RequestSpec {
                request: RequestId(request),
                account: AccountId(account),
                currency: CurrencyId(currency),
                amount,
                external_id: format!("old-{request}"),
                destination: String::new(),
            }))
        };
        // 0.1 BTC at `price` (SEK minor units, 2 decimals).
        let gtc = |id, account, side, price| {
            Command::Place(
                PlaceOrder::limit(
                    OrderId(id),
                    AccountId(account),
                    PairId(0),
                    side,
                    Price(price),
                    Amount(10_000_000),
                )
                .with_client_id(ClientOrderId::parse(&format!("old{id}")).unwrap()),
            )
        };
        let setup = [
            currency("BTC", "Bitcoin", 8),
            currency("SEK", "Swedish krona", 2),
            Command::AddPair(PairSpec {
                base: CurrencyId(0),
                quote: CurrencyId(1),
                price_decimals: 2,
                amount_decimals: 8,
                min_amount: Amount(10_000),
                maker_fee_ppm: 1000,
                taker_fee_ppm: 2000,
                status: PairStatus::Active,
            }),
            Command::SetMaxOrdersPerBook { max: 2 },
            credit(1, 1, 0, 100_000_000),
            credit(2, 2, 1, 100_000_000),
            gtc(1, 2, Side::Buy, 10_000_000),
            gtc(2, 1, Side::Sell, 10_001_000),
        ];
        for c in setup {
            submit_blocking(&p, c);
        }
        assert_eq!(p.query(|e| e.rules_version()).unwrap(), 1);
        let refused = submit_blocking(&p, gtc(3, 2, Side::Buy, 10_001_000));
        assert!(
            matches!(
                refused[..],
                [Event::Rejected {
                    reason: RejectReason::BookFull,
                    ..
                }]
            ),
            "{refused:?}"
        );
        p.shutdown().unwrap();
    }
    let config = || {
        let mut c = test_config(tmp.path());
        c.max_orders_per_book = 2;
        c
    };
    let s = TestServer::start_with(config()).await;
    let (_, book) = s.get("/v1/pairs/BTC_SEK/book", None).await;
    assert_eq!(book["asks"], json!([["100010.00", "0.10000000"]]), "{book}");
    assert_eq!(book["bids"], json!([["100000.00", "0.10000000"]]), "{book}");
    let (_, trades) = s.get("/v1/pairs/BTC_SEK/trades", None).await;
    assert_eq!(trades, json!([]), "the refused order traded on replay");
    // The current rules from now on: the same order is taken.
    let admin = s.admin_token().await;
    let c = s.register("carol").await;
    s.fund(&admin, &c, "SEK", "1000000").await;
    let taken = s.limit(&c, "BTC_SEK", "buy", "0.1", "100010", "c1").await;
    assert_eq!(taken["status"], "filled", "{taken}");
    let (_, book) = s.get("/v1/pairs/BTC_SEK/book", None).await;
    assert_eq!(book["asks"], json!([]), "{book}");
    s.assert_audit_ok(&admin).await;
    s.stop().await;
    // The whole journal again: the old order refused, the new one taken.
    std::fs::remove_dir_all(tmp.path().join("snapshots")).unwrap();
    let s = TestServer::start_with(config()).await;
    let (_, replayed) = s.get("/v1/pairs/BTC_SEK/book", None).await;
    assert_eq!(replayed, book);
    let (_, trades) = s.get("/v1/pairs/BTC_SEK/trades", None).await;
    assert_eq!(trades.as_array().map(Vec::len), Some(1), "{trades}");
    s.assert_audit_ok(&s.admin_token().await).await;
    s.stop().await;
}
