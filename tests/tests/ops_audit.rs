//! The audit read while orders flow: the engine's figures were compared with the read
//! model's balances, which lag the engine by the commands in flight, so an audit taken
//! under load said `ok: false` now and then though nothing was wrong, a false alarm for
//! any operator alerting on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bourse_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_is_ok_while_orders_flow() {
    let s = Arc::new(TestServer::start().await);
    let admin = s.admin_token().await;
    let mut traders = Vec::new();
    for i in 0..4 {
        let u = s.register(&format!("t{i}")).await;
        s.fund(&admin, &u, "SEK", "1000000").await;
        s.fund(&admin, &u, "BTC", "100").await;
        traders.push(u);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, u) in traders.into_iter().enumerate() {
        let (s, stop) = (s.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let side = if (n + i as u64).is_multiple_of(2) {
                    "buy"
                } else {
                    "sell"
                };
                let (st, body) = s
                    .order(
                        &u,
                        json!({"pair": "BTC_SEK", "side": side, "type": "limit",
                               "amount": "0.001", "price": format!("{}", 1000 + n % 7),
                               "clientId": format!("c{i}-{n}")}),
                    )
                    .await;
                assert_eq!(st, StatusCode::CREATED, "{body}");
            }
        }));
    }
    let mut bad = Vec::new();
    for _ in 0..40 {
        let (st, audit) = s.get("/v1/admin/audit", Some(&admin)).await;
        assert_eq!(st, StatusCode::OK, "{audit}");
        if audit["ok"] != true {
            bad.push(audit);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        bad.is_empty(),
        "{} of 40 audits not ok: {}",
        bad.len(),
        bad[0]
    );
    s.assert_audit_ok(&admin).await;
    // At rest the read model is still compared with the engine: a balance it got wrong
    // shows.
    let key = {
        let mut balances = s.state().model.balances.write();
        let (key, b) = balances.iter_mut().next().expect("a balance");
        b.available += 1;
        *key
    };
    let (_, audit) = s.get("/v1/admin/audit", Some(&admin)).await;
    assert_eq!(audit["ok"], false, "{audit}");
    s.state()
        .model
        .balances
        .write()
        .get_mut(&key)
        .unwrap()
        .available -= 1;
    s.assert_audit_ok(&admin).await;
}
