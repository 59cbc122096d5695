//! Money scenarios: deposits, withdrawals, approvals, trades with fees; transactions sum to
//! wallets, the audit reconciles, and everything survives a restart.

use bourse_tests::*;
use engine::units::format_units;

fn bal(w: &Value, cur: &str) -> Value {
    w["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["currency"] == cur)
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_scenario_and_restart() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;

    // Deposit request, pending until approved.
    let (st, d) = s
        .post(
            "/v1/wallet/deposits",
            Some(&a.token),
            &json!({"currency":"SEK","amount":"500000.5","externalId":"bank-1"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{d}");
    assert_eq!(d["status"], "pending");
    assert_eq!(d["amount"], "500000.50");
    let (_, w) = s.get("/v1/wallet", Some(&a.token)).await;
    assert_eq!(bal(&w, "SEK")["total"], "0.00");
    let (_, pending) = s
        .get(
            "/v1/admin/requests?status=pending&type=deposit",
            Some(&admin),
        )
        .await;
    assert_eq!(pending["meta"]["totalCount"], 1, "{pending}");
    let id = d["id"].as_str().unwrap();
    let (st, r) = s
        .post(
            &format!("/v1/admin/requests/{id}/approve"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "completed");
    let (st, r) = s
        .post(
            &format!("/v1/admin/requests/{id}/approve"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(r["code"], "REQUEST_NOT_PENDING");
    let (st, _) = s
        .post("/v1/admin/requests/9999/approve", Some(&admin), &json!({}))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // A rejected deposit credits nothing.
    let (_, d2) = s
        .post(
            "/v1/wallet/deposits",
            Some(&a.token),
            &json!({"currency":"SEK","amount":"1","externalId":"bank-2"}),
        )
        .await;
    let (st, r) = s
        .post(
            &format!("/v1/admin/requests/{}/reject", d2["id"].as_str().unwrap()),
            Some(&admin),
            &json!({"reason":"no funds arrived"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(r["status"], "rejected");
    assert_eq!(r["reason"], "no funds arrived");
    s.fund(&admin, &b, "BTC", "3").await;

    // Trades at several prices, maker and taker fees.
    s.limit(&b, "BTC_SEK", "sell", "0.5", "300000", "s1").await;
    s.limit(&b, "BTC_SEK", "sell", "0.5", "301000.33", "s2")
        .await;
    s.limit(&b, "BTC_SEK", "sell", "0.5", "302000", "s3").await;
    let t = s.limit(&a, "BTC_SEK", "buy", "0.7", "301500", "b1").await;
    assert_eq!(t["status"], "filled", "{t}");
    assert_eq!(t["fills"].as_array().unwrap().len(), 2);
    let rest = s.limit(&a, "BTC_SEK", "buy", "0.3", "299000", "b2").await;
    assert_eq!(rest["status"], "open");
    let (st, c) = s
        .delete(
            &format!("/v1/orders/{}", rest["id"].as_str().unwrap()),
            Some(&a.token),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    let (st, sell_taker) = s
        .order(&b, json!({"pair":"BTC_SEK","side":"sell","type":"limit","amount":"0.1","price":"1","timeInForce":"IOC","clientId":"s4"}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    assert_eq!(sell_taker["status"], "expired");

    // Withdrawals: hold, approve, reject, insufficient funds.
    let (st, wd) = s
        .post(
            "/v1/wallet/withdrawals",
            Some(&a.token),
            &json!({"currency":"BTC","amount":"0.1","externalId":"w1","destination":"bc1qxyz"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{wd}");
    assert_eq!(wd["status"], "pending");
    let (_, w) = s.get("/v1/wallet", Some(&a.token)).await;
    assert_eq!(bal(&w, "BTC")["held"], "0.10000000");
    s.post(
        &format!("/v1/admin/requests/{}/approve", wd["id"].as_str().unwrap()),
        Some(&admin),
        &json!({}),
    )
    .await;
    let (_, wd2) = s
        .post(
            "/v1/wallet/withdrawals",
            Some(&a.token),
            &json!({"currency":"SEK","amount":"1000","externalId":"w2","destination":"SE123"}),
        )
        .await;
    let (st, _) = s
        .post(
            &format!("/v1/admin/requests/{}/reject", wd2["id"].as_str().unwrap()),
            Some(&admin),
            &json!({"reason":"kyc"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, e) = s
        .post(
            "/v1/wallet/withdrawals",
            Some(&a.token),
            &json!({"currency":"BTC","amount":"100","externalId":"w3","destination":"x"}),
        )
        .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(e["code"], "INSUFFICIENT_FUNDS");
    let (st, e) = s.withdrawal_dup(&a).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(e["code"], "DUPLICATE_EXTERNAL_ID");
    assert_eq!(e["existingId"], wd["id"]);

    // Lists and single reads, cross-account isolation.
    let (_, l) = s.get("/v1/wallet/deposits", Some(&a.token)).await;
    assert_eq!(l["meta"]["totalCount"], 2);
    let (_, l) = s
        .get("/v1/wallet/withdrawals?limit=1", Some(&a.token))
        .await;
    assert_eq!(l["meta"]["totalCount"], 2);
    assert_eq!(l["meta"]["count"], 1);
    let (st, _) = s
        .get(
            &format!("/v1/wallet/requests/{}", wd["id"].as_str().unwrap()),
            Some(&a.token),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .get(
            &format!("/v1/wallet/requests/{}", wd["id"].as_str().unwrap()),
            Some(&b.token),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, txs) = s.get("/v1/transactions?order=ASC", Some(&a.token)).await;
    let first = txs["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(txs["data"][0]["type"], "TOPUP");
    let (st, _) = s
        .get(&format!("/v1/transactions/{first}"), Some(&a.token))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s
        .get(&format!("/v1/transactions/{first}"), Some(&b.token))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, fees) = s
        .get("/v1/transactions?type=FEE_COLLECTION", Some(&a.token))
        .await;
    assert_eq!(fees["meta"]["totalCount"], 2, "{fees}");
    let (st, _) = s.get("/v1/transactions?type=NOPE", Some(&a.token)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s
        .get("/v1/transactions?startDate=2020-13-01", Some(&a.token))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (_, none) = s
        .get("/v1/transactions?endDate=2000-01-01", Some(&a.token))
        .await;
    assert_eq!(none["meta"]["totalCount"], 0);

    s.assert_transactions_match_wallet(&a).await;
    s.assert_transactions_match_wallet(&b).await;
    s.assert_audit_ok(&admin).await;
    let (_, aw) = s
        .get(&format!("/v1/admin/users/{}/wallet", a.id), Some(&admin))
        .await;
    let (_, w_before) = s.get("/v1/wallet", Some(&a.token)).await;
    assert_eq!(aw, w_before);
    let (_, orders_before) = s.get("/v1/orders?limit=1000", Some(&a.token)).await;
    let (_, tx_before) = s.get("/v1/transactions?limit=1000", Some(&b.token)).await;

    // Restart: everything is still there, tokens included.
    let s = s.restart().await;
    let (_, w_after) = s.get("/v1/wallet", Some(&a.token)).await;
    assert_eq!(w_before, w_after);
    let (_, orders_after) = s.get("/v1/orders?limit=1000", Some(&a.token)).await;
    assert_eq!(orders_before, orders_after);
    let (_, tx_after) = s.get("/v1/transactions?limit=1000", Some(&b.token)).await;
    assert_eq!(tx_before, tx_after);
    let (st, e) = s.limit_dup(&a).await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    // An externalId used before the restart is still used (the index is loaded at start).
    let (st, e) = s.withdrawal_dup(&a).await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["existingId"], wd["id"], "{e}");
    let next = s
        .limit(&a, "BTC_SEK", "buy", "0.1", "1000", "after-restart")
        .await;
    assert!(next["id"].as_str().unwrap().parse::<u64>().unwrap() > 4);
    s.assert_audit_ok(&admin).await;
    s.stop().await;
}

/// Deposits and withdrawals whose client hangs up mid-request: the externalId is released
/// once the engine has decided, not when the connection goes. A refused withdrawal's
/// externalId is free again (it used to stay reserved until a restart, every retry a 409
/// naming a request that never existed); a stored deposit's answers a 409 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_hung_up_keeps_its_external_id_only_if_stored() {
    const N: usize = 8;
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let a = s.register("alice").await;
    let withdrawal =
        |ext: &str| json!({"currency":"BTC","amount":"0.5","externalId": ext,"destination":"x"});
    // Alice holds nothing yet: the engine refuses every one of these.
    for i in 0..N {
        let body = withdrawal(&format!("w-gone-{i}"));
        s.post_and_hang_up("/v1/wallet/withdrawals", &a.token, &body)
            .await;
    }
    let post = |body: Value| {
        let (s, token) = (&s, a.token.as_str());
        async move { s.post("/v1/wallet/withdrawals", Some(token), &body).await }
    };
    for i in 0..N {
        let ext = format!("w-gone-{i}");
        // A 409 only while the first is still in flight.
        let (st, v) = retry_while_conflict(|| post(withdrawal(&ext))).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{ext}: {v}");
        assert_eq!(v["code"], "INSUFFICIENT_FUNDS", "{ext}: {v}");
    }
    s.fund(&admin, &a, "BTC", "10").await;
    for i in 0..N {
        let ext = format!("w-gone-{i}");
        let w = s.request_withdrawal(&a, "BTC", "0.5", &ext, "x").await;
        assert_eq!(w["status"], "pending", "{w}");
    }
    // Deposits are never refused: their externalIds stay taken by them.
    let deposit = |ext: &str| json!({"currency":"SEK","amount":"10","externalId": ext});
    for i in 0..N {
        let body = deposit(&format!("d-kept-{i}"));
        s.post_and_hang_up("/v1/wallet/deposits", &a.token, &body)
            .await;
    }
    for i in 0..N {
        let ext = format!("d-kept-{i}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let (st, v) = s
                .post("/v1/wallet/deposits", Some(&a.token), &deposit(&ext))
                .await;
            if st == StatusCode::CREATED {
                // The hung-up request was dropped before it was submitted: nothing stored.
                break;
            }
            assert_eq!(st, StatusCode::CONFLICT, "{ext}: {v}");
            assert_eq!(v["code"], "DUPLICATE_EXTERNAL_ID", "{ext}: {v}");
            let id = v["existingId"].as_str().expect("existingId");
            let path = format!("/v1/wallet/requests/{id}");
            let (st, r) = s.get(&path, Some(&a.token)).await;
            if st == StatusCode::OK {
                assert_eq!(r["externalId"], ext.as_str(), "{r}");
                break;
            }
            // Still in flight: its reply has not run yet.
            assert!(
                std::time::Instant::now() < deadline,
                "{ext}: request {id}: {r}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    // One request per externalId.
    let l = s
        .get_ok("/v1/wallet/withdrawals?limit=100", Some(&a.token))
        .await;
    assert_eq!(l["meta"]["totalCount"], N, "{l}");
    // The deposits and the back office's credit that funded the withdrawals.
    let l = s
        .get_ok("/v1/wallet/deposits?limit=100", Some(&a.token))
        .await;
    assert_eq!(l["meta"]["totalCount"], N + 1, "{l}");
    s.assert_audit_ok(&admin).await;
    s.stop().await;
}

trait Dup {
    async fn limit_dup(&self, a: &User) -> (StatusCode, Value);
    /// A withdrawal that repeats the externalId `w1`.
    async fn withdrawal_dup(&self, a: &User) -> (StatusCode, Value);
}

impl Dup for TestServer {
    async fn limit_dup(&self, a: &User) -> (StatusCode, Value) {
        self.order(a, json!({"pair":"BTC_SEK","side":"buy","type":"limit","amount":"0.1","price":"1000","clientId":"b1"}))
            .await
    }

    async fn withdrawal_dup(&self, a: &User) -> (StatusCode, Value) {
        self.post(
            "/v1/wallet/withdrawals",
            Some(&a.token),
            &json!({"currency":"BTC","amount":"0.01","externalId":"w1","destination":"x"}),
        )
        .await
    }
}

/// A limit buy that commits its whole balance (API.md: it holds price x amount rounded up)
/// fills completely in two halves, although rounding each fill up would cost one öre more
/// than it holds: the fill the hold cannot round up is paid rounded down (matching rules
/// version 3, README "Decisions"). Before, the first partial fill expired the order with
/// INSUFFICIENT_FUNDS and no trade. Money still reconciles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buy_holding_its_whole_balance_fills_in_parts_despite_rounding() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    // 0.1 ETH at 100.05 is 10.005: it holds 10.01, all alice has.
    s.fund(&admin, &alice, "SEK", "10.01").await;
    s.fund(&admin, &bob, "ETH", "1").await;
    let buy = s
        .limit(&alice, "ETH_SEK", "buy", "0.1", "100.05", "all-in")
        .await;
    assert_eq!(buy["status"], "open", "{buy}");
    let id = buy["id"].as_str().unwrap().to_string();
    let (_, w) = s.get("/v1/wallet", Some(&alice.token)).await;
    assert_eq!(bal(&w, "SEK")["available"], "0.00", "{w}");

    // Half of it: 5.0025 SEK, which rounds up to 5.01 while the other half keeps 5.01.
    let sell = s
        .limit(&bob, "ETH_SEK", "sell", "0.05", "100.05", "half-1")
        .await;
    assert_eq!(sell["status"], "filled", "{sell}");
    let order = s
        .get_ok(&format!("/v1/orders/{id}"), Some(&alice.token))
        .await;
    assert_eq!(order["status"], "partially_filled", "{order}");
    assert_eq!(order["filledAmount"], "0.05000000", "{order}");
    assert_eq!(order["fills"][0]["quoteAmount"], "5.00", "{order}");
    let (_, w) = s.get("/v1/wallet", Some(&alice.token)).await;
    assert_eq!(bal(&w, "SEK")["held"], "5.01", "{w}");

    // The other half is paid rounded up, out of what is held: 10.01 in all.
    s.limit(&bob, "ETH_SEK", "sell", "0.05", "100.05", "half-2")
        .await;
    let order = s
        .get_ok(&format!("/v1/orders/{id}"), Some(&alice.token))
        .await;
    assert_eq!(order["status"], "filled", "{order}");
    assert_eq!(order["filledQuoteAmount"], "10.01", "{order}");
    let (_, w) = s.get("/v1/wallet", Some(&alice.token)).await;
    assert_eq!(bal(&w, "SEK")["total"], "0.00", "{w}");
    // 0.1 ETH less two maker fees of 0.1 % on 0.05.
    assert_eq!(bal(&w, "ETH")["total"], "0.09990000", "{w}");

    s.assert_transactions_match_wallet(&alice).await;
    s.assert_transactions_match_wallet(&bob).await;
    s.assert_audit_ok(&admin).await;
    s.stop().await;
}

/// A small deterministic generator (xorshift64*), so a failing run can be replayed from its
/// seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random trading on ETH_SEK over HTTP (prices with 2 decimals times amounts with 8, so
/// most values round; limit GTC, IOC and FOK orders, market orders by amount and by quote
/// amount, bids that commit an account's whole SEK, cancels), then the books must close: each
/// account's transactions sum to its wallet, its held SEK and ETH are exactly what its open
/// orders hold (a buy `ceil(price x remaining)`, a sell its remaining amount), and the audit
/// is ok. Every request is answered 201, 200, or the 422 / 409 API.md gives for a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_trading_reconciles_every_account() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let mut users = Vec::new();
    for name in ["ann", "ben", "cat", "dan"] {
        let u = s.register(name).await;
        s.fund(&admin, &u, "SEK", "2000").await;
        s.fund(&admin, &u, "ETH", "10").await;
        users.push(u);
    }
    let seed = 0x5eed_b0a5_e000_0001u64;
    let mut rng = Rng(seed);
    let mut open: Vec<(usize, String)> = Vec::new();
    for i in 0..400 {
        let k = rng.below(users.len() as u64) as usize;
        let u = &users[k];
        // 99.80 to 100.20 SEK; 0.001 to 0.5 ETH with all 8 decimals.
        let price = 9_980 + rng.below(41);
        let amount = 100_000 + rng.below(50_000_000);
        let side = if rng.below(2) == 0 { "buy" } else { "sell" };
        let cid = format!("r{i}");
        let (body, what) = match rng.below(10) {
            0..=4 => (
                json!({"pair":"ETH_SEK","side":side,"type":"limit","amount":format_units(amount.into(), 8),
                       "price":format_units(price.into(), 2),"clientId":cid}),
                "gtc",
            ),
            5 => (
                json!({"pair":"ETH_SEK","side":side,"type":"limit","amount":format_units(amount.into(), 8),
                       "price":format_units(price.into(), 2),"timeInForce":"IOC","clientId":cid}),
                "ioc",
            ),
            6 => (
                json!({"pair":"ETH_SEK","side":side,"type":"limit","amount":format_units(amount.into(), 8),
                       "price":format_units(price.into(), 2),"timeInForce":"FOK","clientId":cid}),
                "fok",
            ),
            7 => (
                json!({"pair":"ETH_SEK","side":side,"type":"market","amount":format_units(amount.into(), 8),"clientId":cid}),
                "market",
            ),
            8 => {
                // A bid of all the SEK the account has available, the case rounding made
                // fail before matching rules version 3.
                let (_, w) = s.get("/v1/wallet", Some(&u.token)).await;
                let avail = minor(bal(&w, "SEK")["available"].as_str().unwrap()) as u128;
                // lots of 1e-8 ETH such that ceil(price x lots / 1e8) <= avail (in öre)
                let lots = avail * 100_000_000 / u128::from(price);
                if lots < 100_000 {
                    continue;
                }
                (
                    json!({"pair":"ETH_SEK","side":"buy","type":"limit","amount":format_units(lots, 8),
                           "price":format_units(price.into(), 2),"clientId":cid}),
                    "all-in",
                )
            }
            _ => match open.is_empty() {
                true => continue,
                false => {
                    let (owner, id) = open.swap_remove(rng.below(open.len() as u64) as usize);
                    let (st, v) = s
                        .delete(&format!("/v1/orders/{id}"), Some(&users[owner].token))
                        .await;
                    assert!(
                        st == StatusCode::OK
                            || (st == StatusCode::CONFLICT && v["code"] == "ORDER_NOT_OPEN"),
                        "seed {seed:#x} op {i} cancel {id}: {st} {v}"
                    );
                    continue;
                }
            },
        };
        let (st, v) = s.order(u, body.clone()).await;
        match st {
            StatusCode::CREATED => {
                if v["status"] == "open" || v["status"] == "partially_filled" {
                    open.push((k, v["id"].as_str().unwrap().to_string()));
                }
                if what == "all-in" {
                    assert_ne!(
                        v["rejectReason"], "INSUFFICIENT_FUNDS",
                        "seed {seed:#x} op {i}: {v}"
                    );
                }
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                assert_eq!(
                    v["code"], "INSUFFICIENT_FUNDS",
                    "seed {seed:#x} op {i}: {body} {v}"
                );
            }
            _ => panic!("seed {seed:#x} op {i} ({what}): {st} for {body}: {v}"),
        }
    }
    // Every open order's hold, summed per account, is what the wallet holds.
    for u in &users {
        let (_, orders) = s
            .get("/v1/orders?status=open&limit=1000", Some(&u.token))
            .await;
        let (mut sek, mut eth) = (0u128, 0u128);
        for o in orders["data"].as_array().unwrap() {
            let remaining = (minor(o["amount"].as_str().unwrap())
                - minor(o["filledAmount"].as_str().unwrap())) as u128;
            if o["side"] == "buy" {
                let price = minor(o["price"].as_str().unwrap()) as u128;
                sek += (price * remaining).div_ceil(100_000_000);
            } else {
                eth += remaining;
            }
        }
        let (_, w) = s.get("/v1/wallet", Some(&u.token)).await;
        assert_eq!(
            minor(bal(&w, "SEK")["held"].as_str().unwrap()) as u128,
            sek,
            "{} {w}",
            u.id
        );
        assert_eq!(
            minor(bal(&w, "ETH")["held"].as_str().unwrap()) as u128,
            eth,
            "{} {w}",
            u.id
        );
        s.assert_transactions_match_wallet(u).await;
        // A limit order holds all it can pay, so none ends for want of funds (matching
        // rules version 3; before it a fill's rounding unit could expire one).
        let (_, closed) = s
            .get("/v1/orders?status=closed&limit=1000", Some(&u.token))
            .await;
        for o in closed["data"].as_array().unwrap() {
            assert!(
                !(o["type"] == "limit" && o["rejectReason"] == "INSUFFICIENT_FUNDS"),
                "seed {seed:#x}: {o}"
            );
        }
    }
    s.assert_audit_ok(&admin).await;
    let (_, trades) = s.get("/v1/pairs/ETH_SEK/trades?limit=1000", None).await;
    assert!(
        trades.as_array().unwrap().len() > 50,
        "the run traded: {}",
        trades.as_array().unwrap().len()
    );
    s.stop().await;
}

/// A market order's budget in value units (its quote amount, or a market buy's hold, times
/// `10^(priceDecimals + amountDecimals - quote decimals)`) passes `u128` on a pair whose
/// decimals add up to 20 over the quote's, with an amount below the 2^62 bound. It used to
/// wrap (release) or panic the engine thread (debug): a market sell for 3,402,823,669,209,384,635
/// JPY sold 0.003662539256 WEI for 0 JPY and reported itself filled, and a market buy whose
/// account held that much JPY stopped for want of funds after the same sliver. A budget that
/// large is larger than any trade: it now saturates (matching rules version 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_market_budget_past_u128_in_value_units_does_not_wrap() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    for (code, decimals) in [("JPY", 0), ("WEI", 18)] {
        s.post_expect(
            "/v1/admin/currencies",
            Some(&admin),
            &json!({"currency": code, "minorAmountDecimals": decimals, "displayName": code}),
            StatusCode::CREATED,
        )
        .await;
    }
    // A value unit is 10^-20 JPY: 8 price decimals and 12 amount decimals over JPY's 0.
    s.post_expect(
        "/v1/admin/pairs",
        Some(&admin),
        &json!({"base":"WEI","quote":"JPY","priceDecimals":8,"amountDecimals":12,
                "minAmount":"0.000000000001","makerFeeRate":"0","takerFeeRate":"0"}),
        StatusCode::CREATED,
    )
    .await;
    // The smallest amount whose value units pass 2^128: the wrapped budget was 3.66e19
    // value units, 0.366 JPY.
    let huge = "3402823669209384635";
    let (alice, bob, carol, dave) = (
        s.register("alice").await,
        s.register("bob").await,
        s.register("carol").await,
        s.register("dave").await,
    );
    s.fund(&admin, &alice, "WEI", "1").await;
    s.fund(&admin, &bob, "JPY", "200").await;
    s.fund(&admin, &carol, "JPY", huge).await;
    s.fund(&admin, &dave, "WEI", "1").await;

    // A market sell by a quote amount larger than the book: it sells all alice has.
    s.limit(&bob, "WEI_JPY", "buy", "1.05", "100", "bid").await;
    let (st, sell) = s
        .order(&alice, json!({"pair":"WEI_JPY","side":"sell","type":"market","quoteAmount":huge,"clientId":"sell-all"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{sell}");
    assert_eq!(sell["filledAmount"], "1.000000000000", "{sell}");
    assert_eq!(sell["filledQuoteAmount"], "100", "{sell}");
    assert_eq!(sell["status"], "expired", "{sell}");

    // A market buy by amount, holding all of carol's JPY: it buys what it asked for (dave's
    // ask first fills the rest of bob's bid, 0.05).
    s.limit(&dave, "WEI_JPY", "sell", "0.55", "100", "ask")
        .await;
    let (st, buy) = s
        .order(
            &carol,
            json!({"pair":"WEI_JPY","side":"buy","type":"market","amount":"0.5","clientId":"buy"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{buy}");
    assert_eq!(buy["status"], "filled", "{buy}");
    assert_eq!(buy["filledAmount"], "0.500000000000", "{buy}");
    assert_eq!(buy["filledQuoteAmount"], "50", "{buy}");

    for u in [&alice, &bob, &carol, &dave] {
        s.assert_transactions_match_wallet(u).await;
    }
    s.assert_audit_ok(&admin).await;
    s.stop().await;
}

/// A market order by `quoteAmount` that spends all of it is filled, also when it takes the
/// last order of the book: it used to end `expired` with `rejectReason` `NO_LIQUIDITY`
/// (it looked at the empty book for more before it looked at its budget), so a client that
/// bought 50.00 SEK of ETH was told its order had expired for want of liquidity and could
/// well send it again (matching rules version 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_market_order_that_spends_its_whole_quote_amount_is_filled() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    s.fund(&admin, &alice, "SEK", "100").await;
    s.fund(&admin, &bob, "ETH", "1").await;

    // The whole book: 0.5 ETH at 100 SEK, 50.00 SEK.
    s.limit(&bob, "ETH_SEK", "sell", "0.5", "100", "ask").await;
    let (st, buy) = s
        .order(&alice, json!({"pair":"ETH_SEK","side":"buy","type":"market","quoteAmount":"50","clientId":"buy-50"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{buy}");
    assert_eq!(buy["filledQuoteAmount"], "50.00", "{buy}");
    assert_eq!(buy["status"], "filled", "{buy}");
    assert_eq!(buy["rejectReason"], Value::Null, "{buy}");

    // The other way: bob sells for 50.00 SEK into alice's bid, all the book holds.
    s.limit(&alice, "ETH_SEK", "buy", "0.25", "200", "bid")
        .await;
    let (st, sell) = s
        .order(&bob, json!({"pair":"ETH_SEK","side":"sell","type":"market","quoteAmount":"50","clientId":"sell-50"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{sell}");
    assert_eq!(sell["filledAmount"], "0.25000000", "{sell}");
    assert_eq!(sell["filledQuoteAmount"], "50.00", "{sell}");
    assert_eq!(sell["status"], "filled", "{sell}");
    assert_eq!(sell["rejectReason"], Value::Null, "{sell}");

    s.assert_transactions_match_wallet(&alice).await;
    s.assert_transactions_match_wallet(&bob).await;
    s.assert_audit_ok(&admin).await;
    s.stop().await;
}

/// The text fields of money requests and currencies are bounded in characters, as their
/// 400s say, not in UTF-8 bytes: a reject reason of 300 'é' (600 bytes) was refused as over
/// "at most 512 characters", a destination of 256 'å' and a display name of 64 'ö' likewise.
/// A destination or a display name with a control character (a line feed, a NUL) is a 400,
/// as an account name with one is: they were stored as sent and shown to the back office
/// and on the public currency list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_fields_count_characters_and_refuse_control_characters() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let alice = s.register("alice").await;
    s.fund(&admin, &alice, "SEK", "10").await;
    let withdrawal = |ext: &str, destination: &str| json!({"currency":"SEK","amount":"1","externalId":ext,"destination":destination});
    let token = Some(alice.token.as_str());
    let w = s
        .post_expect(
            "/v1/wallet/withdrawals",
            token,
            &withdrawal("w-1", &"å".repeat(256)),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(w["destination"], "å".repeat(256), "{w}");
    for (i, bad) in ["å".repeat(257), "SE12\n34".into(), "SE\u{0}12".into()]
        .iter()
        .enumerate()
    {
        let e = s
            .post_expect(
                "/v1/wallet/withdrawals",
                token,
                &withdrawal(&format!("w-bad-{i}"), bad),
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert_eq!(e["code"], "VALIDATION_FAILED", "{bad:?}: {e}");
    }
    // Nothing else was held.
    let w2 = s
        .request_withdrawal(&alice, "SEK", "1", "w-2", "SE12")
        .await;

    let path = |id: &Value, verb: &str| format!("/v1/admin/requests/{}/{verb}", id_of(id));
    let e = s
        .post_expect(
            &path(&w, "reject"),
            Some(&admin),
            &json!({"reason": "é".repeat(513)}),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(e["code"], "VALIDATION_FAILED", "{e}");
    let r = s.reject(&admin, id_of(&w), &"é".repeat(512)).await;
    assert_eq!(r["reason"], "é".repeat(512), "{r}");
    s.approve(&admin, id_of(&w2)).await;

    let currency = |code: &str, name: &str| json!({"currency": code, "minorAmountDecimals": 2, "displayName": name});
    let c = s
        .post_expect(
            "/v1/admin/currencies",
            Some(&admin),
            &currency("NOK", &"ö".repeat(64)),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(c["displayName"], "ö".repeat(64), "{c}");
    for (code, bad) in [("DKK", "ö".repeat(65)), ("ISK", "Krona\n".into())] {
        let e = s
            .post_expect(
                "/v1/admin/currencies",
                Some(&admin),
                &currency(code, &bad),
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert_eq!(e["code"], "VALIDATION_FAILED", "{bad:?}: {e}");
    }
    let (_, w) = s.get("/v1/wallet", token).await;
    assert_eq!(bal(&w, "SEK")["total"], "9.00", "{w}");
    assert_eq!(bal(&w, "SEK")["held"], "0.00", "{w}");
    s.assert_transactions_match_wallet(&alice).await;
    s.assert_audit_ok(&admin).await;
    s.stop().await;
}
