//! One command that makes more messages than a channel's ring holds (4,096 by default): a
//! cancel-all of an account's thousands of open orders on its `orders` channel, a market
//! order that sweeps thousands of resting orders on `trades`. A subscriber that keeps up
//! gets every message, in order, and stays connected. Before, the engine thread pushed the
//! whole batch before it woke anyone, the ring overwrote the start of the burst, and every
//! subscriber was closed with 1008 "slow consumer" however fast it read (a cancel-all of
//! 12,000 orders: closed after 6,088 messages; a sweep of 9,000 orders: closed before the
//! first trade).

use std::time::Duration;

use bourse_tests::ws::{connect, read_frame, request, signed_in};
use bourse_tests::*;
use tokio::net::TcpStream;

/// More than a ring's 4,096 slots.
const BURST: usize = 4_500;
/// A private channel's burst. Before, its messages were woken one by one, so whether a
/// reader kept up depended on the engine thread's speed: the release build closed a reader
/// of a 12,000-order cancel-all, this debug test build did not. They are now woken once per
/// batch, so the whole burst is in the ring before anyone reads: this test fails unless the
/// ring holds it (checked with the ring's growth turned off).
const PRIVATE_BURST: usize = BURST;

/// Places `n` resting orders of `user` from 8 concurrent clients; each body comes from
/// `body(i)`.
async fn place_many(s: &TestServer, user: &User, n: usize, body: impl Fn(usize) -> Value) {
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..8 {
        let (http, url, token) = (s.http.clone(), s.url("/v1/orders"), user.token.clone());
        let bodies: Vec<Value> = (lane..n).step_by(8).map(&body).collect();
        tasks.spawn(async move {
            for b in bodies {
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&b)
                    .send()
                    .await
                    .expect("order sent");
                assert_eq!(r.status(), StatusCode::CREATED, "{b}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("placing task");
    }
}

/// The next `count` data messages of `channel` (replies and other frames skipped); a close
/// frame fails the test with its code.
async fn data_messages(ws: &mut TcpStream, channel: &str, count: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(count);
    tokio::time::timeout(Duration::from_secs(60), async {
        while out.len() < count {
            let (opcode, payload) = read_frame(ws).await.expect("a frame");
            match opcode {
                0x1 => {
                    let m: Value = serde_json::from_slice(&payload).expect("JSON");
                    if m["channel"] == channel {
                        out.push(m);
                    }
                }
                0x8 => panic!(
                    "closed after {} of {count} messages: {:?}",
                    out.len(),
                    String::from_utf8_lossy(&payload)
                ),
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{channel}: {count} messages within 60 s"));
    out
}

/// Each message's seq follows the one before it.
fn assert_consecutive(messages: &[Value]) {
    for w in messages.windows(2) {
        assert_eq!(
            w[1]["seq"].as_u64(),
            w[0]["seq"].as_u64().map(|s| s + 1),
            "{} then {}",
            w[0],
            w[1]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_all_of_thousands_of_orders_reaches_the_orders_channel_whole() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let user = s.register("many-orders").await;
    s.fund(&admin, &user, "SEK", "100000").await;
    place_many(&s, &user, PRIVATE_BURST, |i| {
        json!({"pair": "BTC_SEK", "side": "buy", "type": "limit", "amount": "0.001",
               "price": "1000", "clientId": format!("rest-{i}")})
    })
    .await;

    let mut ws = signed_in(&s.base, &user.token, &["orders"]).await;

    let (st, cancelled) = s.delete("/v1/orders?pair=BTC_SEK", Some(&user.token)).await;
    assert_eq!(st, StatusCode::OK, "{cancelled}");
    let ids = cancelled["cancelled"].as_array().expect("cancelled ids");
    assert_eq!(ids.len(), PRIVATE_BURST);

    let messages = data_messages(&mut ws, "orders", PRIVATE_BURST).await;
    assert_consecutive(&messages);
    let mut got: Vec<&str> = messages
        .iter()
        .map(|m| {
            assert_eq!(m["data"]["status"], "cancelled", "{m}");
            m["data"]["id"].as_str().expect("order id")
        })
        .collect();
    let mut want: Vec<&str> = ids.iter().map(|v| v.as_str().expect("id")).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "every cancelled order once");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_market_order_sweeping_thousands_of_orders_reaches_the_trades_channel_whole() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let maker = s.register("many-asks").await;
    let taker = s.register("sweeper").await;
    s.fund(&admin, &maker, "BTC", "10").await;
    s.fund(&admin, &taker, "SEK", "100000").await;
    place_many(&s, &maker, BURST, |i| {
        json!({"pair": "BTC_SEK", "side": "sell", "type": "limit", "amount": "0.001",
               "price": "1000", "clientId": format!("ask-{i}")})
    })
    .await;

    let mut ws = connect(&s.base).await;
    let r = request(
        &mut ws,
        1,
        json!({"op": "subscribe", "id": 1, "channels": ["trades:BTC_SEK"]}),
    )
    .await;
    assert_eq!(r["op"], "subscribed", "{r}");

    let amount = format!("{}.{:03}", BURST / 1000, BURST % 1000);
    let (st, order) = s
        .order(
            &taker,
            json!({"pair": "BTC_SEK", "side": "buy", "type": "market", "amount": amount,
                   "clientId": "sweep"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "filled", "{order}");

    let messages = data_messages(&mut ws, "trades:BTC_SEK", BURST).await;
    assert_consecutive(&messages);
    for m in &messages {
        assert_eq!(m["data"]["amount"], "0.00100000", "{m}");
        assert_eq!(m["data"]["price"], "1000.00", "{m}");
    }
    s.stop().await;
}
