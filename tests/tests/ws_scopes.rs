//! The WebSocket's private channels honour the token's scopes exactly as REST does
//! (API.md): `orders` and `fills` need `orders:read` or `orders`, `wallet` needs
//! `wallet:read` or `wallet`. A token without the scope authenticates, but its subscribe
//! gets a `FORBIDDEN` error naming the scope, nothing of it is subscribed, and the
//! connection stays open. A re-auth with a narrower token (or another account's) drops the
//! subscriptions it may not read and says which; no private message is written once the
//! token has expired.

use bourse_tests::ws::{connect, next_text, request};
use bourse_tests::*;
use tokio::net::TcpStream;

/// A new connection authenticated with `token`.
async fn authenticated(s: &TestServer, token: &str) -> TcpStream {
    let mut ws = connect(&s.base).await;
    auth(&mut ws, 1, token).await;
    ws
}

async fn auth(ws: &mut TcpStream, id: u64, token: &str) {
    let r = request(ws, id, json!({"op": "auth", "id": id, "token": token})).await;
    assert_eq!(
        bourse_tests::ws::without_expiry(r),
        json!({"op": "authenticated", "id": id})
    );
}

async fn subscribe(ws: &mut TcpStream, id: u64, channels: &[&str]) -> Value {
    request(
        ws,
        id,
        json!({"op": "subscribe", "id": id, "channels": channels}),
    )
    .await
}

async fn subscribed(ws: &mut TcpStream, id: u64, channels: &[&str]) {
    let r = subscribe(ws, id, channels).await;
    assert_eq!(
        r,
        json!({"op": "subscribed", "id": id, "channels": channels})
    );
}

/// The subscribe is refused for want of `scope` (named in the message).
async fn forbidden(ws: &mut TcpStream, id: u64, channels: &[&str], scope: &str) {
    let r = subscribe(ws, id, channels).await;
    assert_eq!(r["op"], "error", "{channels:?}: {r}");
    assert_eq!(r["id"], id, "{r}");
    assert_eq!(r["code"], "FORBIDDEN", "{channels:?}: {r}");
    let message = r["message"].as_str().expect("message");
    assert!(message.contains(scope), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_channels_need_the_tokens_read_scope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    // Two subscriptions per connection: a refused subscribe that had subscribed anything
    // would make the next subscribe of two channels one too many.
    config.ws.max_subscriptions = 2;
    let s = TestServer::start_with(config).await;
    let admin = s.admin_token().await;
    let user = s.register("scoped").await;
    let token = |scope: &'static str| {
        let s = &s;
        let user = &user;
        async move {
            let (status, v) = s.token(&user.client_id, &user.secret, Some(scope)).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            assert_eq!(v["scope"], scope, "{v}");
            v["access_token"].as_str().expect("token").to_string()
        }
    };

    // transactions:read only: every private channel is refused, alone or with a public one.
    {
        let mut ws = authenticated(&s, &token("transactions:read").await).await;
        forbidden(&mut ws, 2, &["orders"], "orders:read").await;
        forbidden(&mut ws, 3, &["fills"], "orders:read").await;
        forbidden(&mut ws, 4, &["wallet"], "wallet:read").await;
        forbidden(&mut ws, 5, &["ticker:BTC_SEK", "orders"], "orders:read").await;
        subscribed(&mut ws, 6, &["trades:BTC_SEK", "trades:ETH_SEK"]).await;
    }
    // orders:read: orders and fills, not the wallet.
    {
        let mut ws = authenticated(&s, &token("orders:read").await).await;
        forbidden(&mut ws, 2, &["wallet"], "wallet:read").await;
        forbidden(&mut ws, 3, &["orders", "wallet"], "wallet:read").await;
        subscribed(&mut ws, 4, &["orders", "fills"]).await;
    }
    // wallet:read: the wallet, not orders or fills; and the wallet's data flows.
    {
        let mut ws = authenticated(&s, &token("wallet:read").await).await;
        forbidden(&mut ws, 2, &["orders"], "orders:read").await;
        forbidden(&mut ws, 3, &["fills"], "orders:read").await;
        subscribed(&mut ws, 4, &["wallet"]).await;
        s.fund(&admin, &user, "SEK", "100.00").await;
        let m = next_text(&mut ws).await;
        assert_eq!(m["channel"], "wallet", "{m}");
        assert_eq!(m["data"]["currency"], "SEK", "{m}");
        assert_eq!(m["data"]["total"], "100.00", "{m}");
    }
    // The write scopes include the reads.
    for (scope, channels) in [
        ("orders", &["orders", "fills"][..]),
        ("wallet", &["wallet"]),
    ] {
        let mut ws = authenticated(&s, &token(scope).await).await;
        subscribed(&mut ws, 2, channels).await;
    }
    // Re-auth with a narrower token: the wallet subscription goes, orders stays (so one
    // more channel fits the limit of two, and only one).
    {
        let mut ws = authenticated(&s, &user.token).await;
        subscribed(&mut ws, 2, &["orders", "wallet"]).await;
        auth(&mut ws, 3, &token("orders:read").await).await;
        subscribed(&mut ws, 4, &["ticker:BTC_SEK"]).await;
        let r = subscribe(&mut ws, 5, &["trades:BTC_SEK"]).await;
        assert_eq!(
            r["code"], "LIMIT_EXCEEDED",
            "orders is still subscribed: {r}"
        );
    }
    // Every client has hung up: the stop does not wait for one to answer its close frame.
    s.stop().await;
}

/// A WebSocket grant lasts as long as its token: once the token has expired (REST answers
/// 401 from then on), the private subscriptions end with an `UNAUTHORIZED` error of id null,
/// a private subscribe is refused, public channels go on, and a new token's `auth` restores
/// what it may read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_channels_end_when_the_token_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.token_ttl_secs = 2;
    // Two subscriptions per connection: a third is only possible once `orders` has gone.
    config.ws.max_subscriptions = 2;
    let s = TestServer::start_with(config).await;
    let user = s.register("expiring").await;
    let (status, v) = s.token(&user.client_id, &user.secret, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let token = v["access_token"].as_str().expect("token").to_string();

    let mut ws = authenticated(&s, &token).await;
    subscribed(&mut ws, 2, &["orders", "ticker:BTC_SEK"]).await;

    // The token lives 2 s; the connection looks once a second.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(6), async {
        loop {
            let v = next_text(&mut ws).await;
            if v["op"] == "error" {
                return v;
            }
        }
    })
    .await
    .expect("the expiry is announced within 6 s");
    assert_eq!(ended["id"], Value::Null, "{ended}");
    assert_eq!(ended["code"], "UNAUTHORIZED", "{ended}");
    let (status, _) = s.get("/v1/orders", Some(&token)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "REST refuses the token too"
    );

    let r = subscribe(&mut ws, 3, &["fills"]).await;
    assert_eq!(r["code"], "UNAUTHORIZED", "{r}");
    // `orders` has gone, `ticker:BTC_SEK` stays: room for exactly one more.
    subscribed(&mut ws, 6, &["trades:BTC_SEK"]).await;
    unsubscribe_trades(&mut ws, 7).await;
    let (status, v) = s.token(&user.client_id, &user.secret, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    auth(&mut ws, 4, v["access_token"].as_str().expect("token")).await;
    subscribed(&mut ws, 5, &["orders"]).await;
}

async fn unsubscribe_trades(ws: &mut TcpStream, id: u64) {
    let r = request(
        ws,
        id,
        json!({"op": "unsubscribe", "id": id, "channels": ["trades:BTC_SEK"]}),
    )
    .await;
    assert_eq!(r["op"], "unsubscribed", "{r}");
}

/// No private message is written once the token has expired, even when the connection's
/// once-a-second housekeeping has not looked yet: the order placed (with another token)
/// after the expiry is not sent, the `UNAUTHORIZED` error is. The connection was opened
/// before the token was issued, so its housekeeping tick falls ~0.9 s after the expiry:
/// the order message went out in that window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_private_message_is_written_after_the_token_expires() {
    use std::time::Duration;
    use tokio::time::{Instant, sleep, sleep_until};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.token_ttl_secs = 2;
    let s = TestServer::start_with(config).await;
    let admin = s.admin_token().await;
    let user = s.register("expiring-writer").await;
    s.fund(&admin, &user, "SEK", "1000").await;
    let new_token = || async {
        let (status, v) = s.token(&user.client_id, &user.secret, None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["access_token"].as_str().expect("token").to_string()
    };

    let mut ws = connect(&s.base).await;
    sleep(Duration::from_millis(100)).await;
    let token = new_token().await;
    // The token expires at most 2 s from here.
    let issued_by = Instant::now();
    auth(&mut ws, 1, &token).await;
    subscribed(&mut ws, 2, &["orders"]).await;
    sleep_until(issued_by + Duration::from_millis(900)).await;
    let other = User {
        token: new_token().await,
        ..user.clone()
    };
    sleep_until(issued_by + Duration::from_millis(2300)).await;
    let (status, _) = s.get("/v1/orders", Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the token has expired");
    s.limit(&other, "BTC_SEK", "buy", "0.01", "100", "after-expiry")
        .await;
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let v = next_text(&mut ws).await;
            assert_ne!(
                v["channel"], "orders",
                "an order message written after the token expired: {v}"
            );
            if v["op"] == "error" {
                return v;
            }
        }
    })
    .await
    .expect("the expiry is announced");
    assert_eq!(ended["code"], "UNAUTHORIZED", "{ended}");
    assert_eq!(ended["id"], Value::Null, "{ended}");
}

/// The next message that is not channel data.
async fn next_op(ws: &mut TcpStream) -> Value {
    loop {
        let v = next_text(ws).await;
        if v.get("channel").is_none() {
            return v;
        }
    }
}

/// A re-auth that ends private subscriptions (a narrower token, another account) says which,
/// with an `unsubscribed` of id null ahead of its `authenticated`; one that ends none (the
/// same account's token again) sends the reply alone. They ended silently: the client took
/// itself for subscribed to channels that had stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_auth_says_which_private_channels_it_ended() {
    let s = TestServer::start().await;
    let alice = s.register("alice-reauth").await;
    let bob = s.register("bob-reauth").await;
    let (status, v) = s
        .token(&alice.client_id, &alice.secret, Some("orders:read"))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let orders_only = v["access_token"].as_str().expect("token").to_string();

    let mut ws = authenticated(&s, &alice.token).await;
    subscribed(&mut ws, 2, &["orders", "ticker:BTC_SEK", "wallet", "fills"]).await;
    let auth_msg = |id: u64, token: &str| json!({"op": "auth", "id": id, "token": token});

    bourse_tests::ws::send(&mut ws, &auth_msg(3, &orders_only)).await;
    assert_eq!(
        next_op(&mut ws).await,
        json!({"op": "unsubscribed", "id": null, "channels": ["wallet"]})
    );
    assert_eq!(
        bourse_tests::ws::without_expiry(next_op(&mut ws).await),
        json!({"op": "authenticated", "id": 3})
    );

    bourse_tests::ws::send(&mut ws, &auth_msg(4, &bob.token)).await;
    assert_eq!(
        next_op(&mut ws).await,
        json!({"op": "unsubscribed", "id": null, "channels": ["orders", "fills"]})
    );
    assert_eq!(
        bourse_tests::ws::without_expiry(next_op(&mut ws).await),
        json!({"op": "authenticated", "id": 4})
    );

    subscribed(&mut ws, 5, &["wallet"]).await;
    bourse_tests::ws::send(&mut ws, &auth_msg(6, &bob.token)).await;
    assert_eq!(
        bourse_tests::ws::without_expiry(next_op(&mut ws).await),
        json!({"op": "authenticated", "id": 6})
    );
}

/// The `authenticated` reply says when the token expires (`expiresAt`, an extension of
/// API.md's reply): the token endpoint's `expires_in` from the moment it was issued, so a
/// client knows when to re-auth without keeping that number itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authenticated_reply_says_when_the_token_expires() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let now_ms = bourse_tests::ws::unix_now_ms;
    let before = now_ms();
    let (st, body) = s.token(&alice.client_id, &alice.secret, None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let after = now_ms();
    let token = body["access_token"].as_str().unwrap();
    let ttl_ms = body["expires_in"].as_i64().unwrap() * 1000;
    let mut ws = connect(&s.base).await;
    let r = request(&mut ws, 1, json!({"op": "auth", "id": 1, "token": token})).await;
    assert_eq!(r["op"], "authenticated", "{r}");
    let at = r["expiresAt"].as_str().expect("expiresAt");
    let at_ms = feed::views::parse_time_ms(at).expect("an RFC 3339 time");
    assert!(
        at_ms >= before + ttl_ms - 1000 && at_ms <= after + ttl_ms + 1000,
        "expiresAt {at} is not issue time + {ttl_ms} ms"
    );
    drop(ws);
    s.stop().await;
}

/// A WebSocket `auth` spends its address's rate budget, the one the token endpoint and
/// every anonymous request spend: past it the op is an error `RATE_LIMITED` (the token is
/// not looked at) and the connection stays open. Tokens could be tried over WebSockets at
/// 20 a second per connection, over as many connections as the server takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_ops_spend_the_address_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = test_config(tmp.path());
    c.rate_limit_per_sec = 1;
    c.rate_limit_burst = 6;
    let s = TestServer::start_with(c).await;
    let mut ws = connect(&s.base).await;
    let mut refused = 0;
    let mut limited = None;
    for id in 1..=10u64 {
        let r = request(
            &mut ws,
            id,
            json!({"op": "auth", "id": id, "token": format!("made-up-{id}")}),
        )
        .await;
        assert_eq!(r["op"], "error", "{r}");
        match r["code"].as_str() {
            Some("UNAUTHORIZED") => refused += 1,
            Some("RATE_LIMITED") => {
                limited = Some(r);
                break;
            }
            _ => panic!("unexpected reply {r}"),
        }
    }
    let limited = limited.expect("limited within 10 tries");
    assert!(
        limited["message"].as_str().unwrap().contains("retry"),
        "{limited}"
    );
    // The upgrade spent one of the 6; a little refill may have come in meanwhile.
    assert!(
        (5..=7).contains(&refused),
        "{refused} tries before the limit"
    );
    // The connection is open, and the address's REST budget is the one spent.
    let r = request(&mut ws, 50, json!({"op": "ping", "id": 50})).await;
    assert_eq!(r["op"], "pong", "{r}");
    let res = s.http.get(s.url("/v1/pairs")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(ws);
    s.stop().await;
}
