//! The `wallet` channel reports changes of a balance (API.md: "the wallet balance of one
//! currency"): an order that holds funds and gives them back within its own command (an
//! IOC with nothing to match) leaves the balance as it was and sends no wallet message,
//! while its order updates still come; a hold that stays and a credit each send one.
//!
//! A private channel's `seq` never goes back during the server's run, also across a
//! subscription that ended and a new one (README, Decisions).

use bourse_tests::ws::{next_text, request, signed_in};
use bourse_tests::*;
use tokio::net::TcpStream;

/// The next message of a private channel, replies skipped.
async fn next_data(ws: &mut TcpStream) -> Value {
    loop {
        let m = next_text(ws).await;
        if m.get("channel").is_some() {
            return m;
        }
    }
}

/// The next `wallet` message; the `orders` messages before it are returned too.
async fn next_wallet(ws: &mut TcpStream) -> (Value, Vec<Value>) {
    let mut orders = Vec::new();
    loop {
        let m = next_data(ws).await;
        match m["channel"].as_str() {
            Some("wallet") => return (m["data"].clone(), orders),
            Some("orders") => orders.push(m["data"].clone()),
            _ => panic!("unexpected message {m}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_messages_are_balance_changes_only() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let user = s.register("wallet-watcher").await;
    s.fund(&admin, &user, "SEK", "1000").await;

    let mut ws = signed_in(&s.base, &user.token, &["orders", "wallet"]).await;

    // An IOC buy on an empty book: held and released by the same command.
    let (st, ioc) = s
        .order(
            &user,
            json!({"pair": "BTC_SEK", "side": "buy", "type": "limit", "timeInForce": "IOC",
                   "amount": "0.01", "price": "500", "clientId": "ioc-empty"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{ioc}");
    assert_eq!(ioc["status"], "expired", "{ioc}");
    // A credit after it: its wallet message must be the first one.
    s.fund(&admin, &user, "SEK", "1").await;
    let (wallet, mut orders) = next_wallet(&mut ws).await;
    assert_eq!(
        wallet,
        json!({"currency": "SEK", "available": "1001.00", "held": "0.00", "total": "1001.00"}),
        "the IOC left the balance unchanged: no wallet message for it"
    );
    // The IOC's order update still comes (channels are not ordered among each other: a
    // write takes each subscription's ring in turn, so it may come after the wallet's).
    while !orders.iter().any(|o| o["id"] == ioc["id"]) {
        let m = next_data(&mut ws).await;
        assert_eq!(m["channel"], "orders", "{m}");
        orders.push(m["data"].clone());
    }

    // A resting order's hold is a change.
    s.limit(&user, "BTC_SEK", "buy", "0.01", "500", "gtc-rests")
        .await;
    let (wallet, _) = next_wallet(&mut ws).await;
    assert_eq!(
        wallet,
        json!({"currency": "SEK", "available": "996.00", "held": "5.00", "total": "1001.00"})
    );
    // Hung up first: the stop does not wait for the client to answer its close frame.
    drop(ws);
    s.stop().await;
}

/// `orders` was subscribed, unsubscribed, changed while nobody listened (its ring went), and
/// subscribed again: the new subscription's seq starts past the old one's. It started again
/// at 1, so a client that drops messages at or below the last seq it saw dropped new orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_seq_never_goes_back_across_subscriptions() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let user = s.register("resubscriber").await;
    s.fund(&admin, &user, "SEK", "1000").await;
    let mut ws = signed_in(&s.base, &user.token, &["orders"]).await;
    let subscribe = json!({"op": "subscribe", "id": 2, "channels": ["orders"]});
    let mut seen = Vec::new();
    for n in 0..3 {
        s.limit(&user, "BTC_SEK", "buy", "0.01", "100", &format!("seq-a{n}"))
            .await;
        seen.push(next_data(&mut ws).await["seq"].as_u64().expect("seq"));
    }
    assert_eq!(seen[1], seen[0] + 1, "{seen:?}");
    assert_eq!(seen[2], seen[1] + 1, "{seen:?}");
    let r = request(
        &mut ws,
        3,
        json!({"op": "unsubscribe", "id": 3, "channels": ["orders"]}),
    )
    .await;
    assert_eq!(r["op"], "unsubscribed", "{r}");
    // Nobody of the account listens to `orders` now (this connection is open, so the
    // change is published, and its ring, read by no one, goes).
    s.limit(&user, "BTC_SEK", "buy", "0.01", "100", "seq-b")
        .await;
    let r = request(&mut ws, 2, subscribe).await;
    assert_eq!(r["op"], "subscribed", "{r}");
    for n in 0..2 {
        s.limit(&user, "BTC_SEK", "buy", "0.01", "100", &format!("seq-c{n}"))
            .await;
        let m = next_data(&mut ws).await;
        let seq = m["seq"].as_u64().expect("seq");
        let last = *seen.last().expect("seen");
        assert!(seq > last, "seq {seq} after {last}: {m}");
        if n == 1 {
            assert_eq!(seq, last + 1, "one by one within a subscription");
        }
        seen.push(seq);
    }
}
