//! The history store is a read model: delete it, restart, and the journal rebuilds it,
//! accounts and client credentials included (registrations are journaled).

use bourse_tests::*;

async fn relogin(s: &TestServer, u: &User) -> User {
    let (st, t) = s.token(&u.client_id, &u.secret, None).await;
    assert_eq!(st, StatusCode::OK, "{t}");
    User {
        token: t["access_token"].as_str().expect("token").to_string(),
        ..u.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_store_rebuilt_from_journal_with_accounts() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    s.fund(&admin, &a, "SEK", "100000").await;
    s.fund(&admin, &b, "BTC", "2").await;
    // Trades at two prices, a resting remainder, a cancel, a withdrawal.
    s.limit(&a, "BTC_SEK", "buy", "0.5", "10000", "a1").await;
    s.limit(&a, "BTC_SEK", "buy", "0.5", "11000", "a2").await;
    let sold = s.limit(&b, "BTC_SEK", "sell", "0.8", "9000", "b1").await;
    assert_eq!(sold["status"], "filled", "{sold}");
    let rest = s.limit(&a, "BTC_SEK", "buy", "0.1", "5000", "a3").await;
    let (st, c) = s
        .delete(
            &format!("/v1/orders/{}", rest["id"].as_str().unwrap()),
            Some(&a.token),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{c}");
    let (st, w) = s
        .post(
            "/v1/wallet/withdrawals",
            Some(&b.token),
            &json!({"currency":"SEK","amount":"100","externalId":"w1","destination":"SE123"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{w}");
    let before_a = s.account_state(&a).await;
    let before_b = s.account_state(&b).await;

    let s = s
        .restart_with(|dir| {
            for f in ["history.sqlite", "history.sqlite-wal", "history.sqlite-shm"] {
                let _ = std::fs::remove_file(dir.join(f));
            }
            assert!(!dir.join("history.sqlite").exists());
        })
        .await;

    // Tokens are not journaled (short-lived): the old one is gone, the credentials work.
    let (st, _) = s.get("/v1/wallet", Some(&a.token)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let a = relogin(&s, &a).await;
    let b = relogin(&s, &b).await;
    assert_eq!(s.account_state(&a).await, before_a);
    assert_eq!(s.account_state(&b).await, before_b);
    let admin = s.admin_token().await;
    s.assert_audit_ok(&admin).await;
    s.assert_transactions_match_wallet(&a).await;
    s.assert_transactions_match_wallet(&b).await;

    // Ids stay unique and idempotency keys survive.
    let c = s.register("carol").await;
    let ids: Vec<u64> = [&a.id, &b.id, &c.id]
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(ids[2] > ids[0] && ids[2] > ids[1], "{ids:?}");
    let (st, e) = s
        .order(
            &a,
            json!({"pair":"BTC_SEK","side":"buy","type":"limit","amount":"0.1","price":"1000","clientId":"a1"}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    let (st, e) = s
        .post(
            "/v1/wallet/withdrawals",
            Some(&b.token),
            &json!({"currency":"SEK","amount":"100","externalId":"w1","destination":"SE123"}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    let (st, aw) = s
        .get(&format!("/v1/admin/users/{}/wallet", a.id), Some(&admin))
        .await;
    assert_eq!(st, StatusCode::OK, "{aw}");
    assert_eq!(aw, before_a[0]);

    // And once more, a plain restart keeps it all.
    let s = s.restart().await;
    let a = relogin(&s, &a).await;
    assert_eq!(s.account_state(&a).await, before_a);
    s.stop().await;
}
