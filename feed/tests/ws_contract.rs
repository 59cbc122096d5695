//! The WebSocket contract of API.md, message by message: exact reply, error and data shapes,
//! the limits (connections, message size, inbound rate), book format and checksum, ticker,
//! candles of every interval, slow consumers (ticker conflation, book resync), private
//! channels across re-auth, and the streams after a restart. Real tokio-tungstenite clients
//! against the feed's router on 127.0.0.1:0.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use engine::{AccountId, Side, TimeInForce};
use feed::{AuthRefusal, FeedConfig, Grant, PrivateChannel, ReadScopes};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Sends up to 60 frames (`frame(i)`), stopping at the first the server refuses: the
/// server closes with 1008 rather than answering a flood forever.
async fn flood_is_closed_with_1008(ws: &mut Ws, frame: impl Fn(u64) -> Message) {
    for i in 0..60 {
        if ws.send(frame(i)).await.is_err() {
            break;
        }
    }
    assert_closes_with(ws, 1008, Duration::from_secs(5)).await;
}

/// A market (two accounts) whose connections have 4 KiB send buffers and queues of 8
/// messages, and are not closed for a stall within 30 s; `cfg` otherwise.
async fn small_buffer_market(cfg: FeedConfig) -> (tempfile::TempDir, Harness) {
    let dir = tmp();
    let cfg = FeedConfig {
        queue_bound: 8,
        stall_timeout: Duration::from_secs(30),
        ..cfg
    };
    let h = Harness::start_with_send_buffer(dir.path(), cfg, 4096).await;
    h.setup_market(2).await;
    (dir, h)
}

/// A client with a 2 KiB receive buffer (the server's writes block soon), subscribed to
/// `channel`.
async fn slow_subscriber(h: &Harness, channel: &str) -> Ws {
    let mut slow = h.ws_with_recv_buffer(2048).await;
    subscribed(&mut slow, 1, &[channel]).await;
    slow
}

/// Every reply echoes `id` (a string, an integer or null: README, Decisions) and has exactly
/// the fields API.md names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_echo_id_with_exact_shapes() {
    let (_dir, h) = Harness::with_market(FeedConfig::default(), 2).await;
    h.accept_tokens(&[("good", 1)]);
    let mut ws = h.ws().await;
    subscribed(&mut ws, 1, &["trades:BTC_SEK", "candles:1m:BTC_SEK"]).await;
    unsubscribed(&mut ws, "u-2", &["candles:1m:BTC_SEK"]).await;
    authenticated(&mut ws, "k-3", "good").await;
    send(&mut ws, json!({"op":"ping","id":4})).await;
    assert_eq!(next_json(&mut ws).await, json!({"op":"pong","id":4}));
    subscribed(&mut ws, 5, &["orders", "fills", "wallet"]).await;
    // Data: exactly channel, seq, data.
    h.sell_then_buy(0, (100_000, 2), (100_000, 2)).await;
    let m = next_json(&mut ws).await;
    let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3, "{m}");
    assert_eq!(m["channel"], "trades:BTC_SEK");
    assert!(m["seq"].as_u64().is_some(), "{m}");
    let rest = h.http.json("/v1/pairs/BTC_SEK/trades?limit=1").await;
    assert_eq!(m["data"], rest[0]);
    h.feed.publish_private(
        AccountId(1),
        PrivateChannel::Wallet,
        json!({"currency":"SEK","available":"1.00","held":"0.00","total":"1.00"}),
    );
    assert_eq!(
        next_json(&mut ws).await,
        json!({"channel":"wallet","seq":1,"data":{"currency":"SEK","available":"1.00","held":"0.00","total":"1.00"}})
    );
    nothing_pending(&mut ws, "end").await;
    h.stop().await;
}

/// Every error API.md lists is `{"op":"error","id","code","message"}` with the request's
/// id, and the connection stays open and usable after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_echoes_id_and_keeps_the_connection() {
    let cfg = FeedConfig {
        max_subscriptions: 2,
        ..FeedConfig::default()
    };
    let (_dir, h) = Harness::with_market(cfg, 2).await;
    h.accept_tokens(&[("good", 1)]);
    let mut ws = h.ws().await;
    for raw in ["{\"op\":\"ping\",\"id\":1", "[1,2]"] {
        send_raw(&mut ws, raw).await;
        assert_error(&next_json(&mut ws).await, Value::Null, "BAD_REQUEST");
    }
    let cases: Vec<(Value, &str)> = vec![
        (json!({"op":"dance","id":1}), "UNKNOWN_OP"),
        (json!({"id":2}), "BAD_REQUEST"),
        (subscribe(3, &["ticker:NOPE_SEK"]), "UNKNOWN_CHANNEL"),
        (subscribe(4, &["book:BTC_SEK:x"]), "UNKNOWN_CHANNEL"),
        (subscribe(5, &["candles:2h:BTC_SEK"]), "UNKNOWN_CHANNEL"),
        (subscribe(6, &["bogus"]), "UNKNOWN_CHANNEL"),
        (subscribe(7, &["orders"]), "UNAUTHORIZED"),
        (subscribe(8, &["trades:BTC_SEK", "fills"]), "UNAUTHORIZED"),
        (json!({"op":"auth","id":9,"token":"bad"}), "UNAUTHORIZED"),
        (json!({"op":"auth","id":10}), "BAD_REQUEST"),
        (
            json!({"op":"subscribe","id":11,"channels":"trades:BTC_SEK"}),
            "BAD_REQUEST",
        ),
        (
            json!({"op":"subscribe","id":12,"channels":[]}),
            "BAD_REQUEST",
        ),
        (
            json!({"op":"subscribe","id":13,"channels":[1]}),
            "BAD_REQUEST",
        ),
        (
            json!({"op":"unsubscribe","id":14,"channels":["ticker:NOPE_SEK"]}),
            "UNKNOWN_CHANNEL",
        ),
        (
            subscribe(15, &["trades:BTC_SEK", "ticker:BTC_SEK", "book:BTC_SEK"]),
            "LIMIT_EXCEEDED",
        ),
    ];
    assert_errors(&mut ws, cases).await;
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_error(&next_json(&mut ws).await, Value::Null, "BAD_REQUEST");
    // None of the failed subscribes subscribed anything: a trade sends nothing.
    h.sell_then_buy(0, (100_000, 1), (100_000, 1)).await;
    nothing_pending(&mut ws, "a").await;
    // Still usable: a subscribe within the limit works and delivers.
    subscribed(&mut ws, 16, &["trades:BTC_SEK"]).await;
    h.sell_then_buy(1, (100_000, 1), (100_000, 1)).await;
    assert_eq!(next_json(&mut ws).await["channel"], "trades:BTC_SEK");
    h.stop().await;
}

/// An id a reply could not echo unchanged is refused with no id (100000000000000000000000
/// would come back as 1e+23, 1.5 as a float); the extremes of 64-bit integers echo exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_a_reply_cannot_echo_exactly_is_refused() {
    let (_dir, h) = Harness::with_market(FeedConfig::default(), 1).await;
    let mut ws = h.ws().await;
    for raw in [
        "{\"op\":\"ping\",\"id\":100000000000000000000000}",
        "{\"op\":\"ping\",\"id\":1.5}",
    ] {
        send_raw(&mut ws, raw).await;
        assert_error(&next_json(&mut ws).await, Value::Null, "BAD_REQUEST");
    }
    for raw in [
        "{\"op\":\"ping\",\"id\":18446744073709551615}",
        "{\"op\":\"ping\",\"id\":-9223372036854775808}",
    ] {
        send_raw(&mut ws, raw).await;
        let m = next_json(&mut ws).await;
        assert_eq!(m["op"], "pong", "{m}");
        let echoed = serde_json::to_string(&m["id"]).unwrap();
        assert!(raw.contains(&format!(":{echoed}}}")), "{raw} -> {m}");
    }
    h.stop().await;
}

/// A channel named twice in one subscribe is one subscription: the reply names it once and
/// one snapshot follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_listed_twice_is_one_subscription() {
    let (_dir, h) = Harness::with_market(FeedConfig::default(), 2).await;
    let mut ws = h.ws().await;
    send(
        &mut ws,
        subscribe(1, &["book:BTC_SEK", "trades:BTC_SEK", "book:BTC_SEK"]),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"op":"subscribed","id":1,"channels":["book:BTC_SEK","trades:BTC_SEK"]})
    );
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    nothing_pending(&mut ws, "one snapshot").await;
    h.sell_then_buy(0, (100_000, 1), (100_000, 1)).await;
    let mut trades = 0;
    let mut book = 0;
    // The resting sell and the trade that takes it: one trade, and at most two book updates
    // (none when both fall in one merge interval: the book came back as it was).
    while trades < 1 {
        let m = next_json(&mut ws).await;
        match m["channel"].as_str() {
            Some("trades:BTC_SEK") => trades += 1,
            Some("book:BTC_SEK") => book += 1,
            _ => panic!("{m}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&mut ws, json!({"op":"ping","id":"z"})).await;
    loop {
        let m = next_json(&mut ws).await;
        if m["op"] == "pong" {
            break;
        }
        assert_eq!(m["channel"], "book:BTC_SEK", "{m}");
        book += 1;
    }
    assert_eq!(trades, 1);
    assert!(book <= 2, "{book} book updates for two commands");
    h.stop().await;
}

/// A harness whose connections have 4 KiB send buffers, and a client with a 2 KiB receive
/// buffer, authenticated as account 1 and subscribed to its wallet channel: a few thousand
/// published messages fill the socket and queue in the ring.
async fn wallet_subscriber_with_small_buffers(dir: &tempfile::TempDir) -> (Harness, Ws) {
    let h = Harness::start_with_send_buffer(dir.path(), FeedConfig::default(), 4096).await;
    h.accept_tokens(&[("tok-1", 1)]);
    let mut ws = h.ws_with_recv_buffer(2048).await;
    authenticated(&mut ws, 1, "tok-1").await;
    subscribed(&mut ws, 2, &["wallet"]).await;
    (h, ws)
}

/// Subscribing again to a channel already subscribed (a client re-sending its
/// subscriptions) loses nothing: a channel that cannot lose a message keeps its place, so
/// what was published before and not yet written still comes, in order, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_again_loses_no_message() {
    let dir = tmp();
    let (h, mut ws) = wallet_subscriber_with_small_buffers(&dir).await;
    let n = 2000u64;
    let pad = "x".repeat(100);
    for i in 0..n {
        h.feed.publish_private(
            AccountId(1),
            PrivateChannel::Wallet,
            json!({"i": i, "pad": pad}),
        );
    }
    // The server reads it while most of the backlog is still in the ring.
    send(&mut ws, subscribe(3, &["wallet"])).await;
    let (mut next, mut replied) = (0u64, false);
    while next < n || !replied {
        let m = next_json(&mut ws).await;
        if m["op"] == "subscribed" {
            replied = true;
            continue;
        }
        assert_eq!(m["seq"], next + 1, "{m}");
        assert_eq!(m["data"]["i"], next, "{m}");
        next += 1;
    }
    h.stop().await;
}

/// After `unsubscribe` nothing more arrives on the channel; the others keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_only_that_channel() {
    let (_dir, h) = Harness::with_market(FeedConfig::default(), 2).await;
    let mut ws = h.ws().await;
    subscribed(&mut ws, 1, &["trades:BTC_SEK", "candles:5m:BTC_SEK"]).await;
    h.sell_then_buy(0, (100_000, 1), (100_000, 1)).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(next_json(&mut ws).await["channel"].clone());
    }
    got.sort_by_key(|v| v.to_string());
    assert_eq!(got, [json!("candles:5m:BTC_SEK"), json!("trades:BTC_SEK")]);
    unsubscribed(&mut ws, 2, &["trades:BTC_SEK"]).await;
    h.sell_then_buy(1, (100_000, 1), (100_000, 1)).await;
    let m = next_json(&mut ws).await;
    assert_eq!(m["channel"], "candles:5m:BTC_SEK", "{m}");
    assert_eq!(m["data"]["trades"], 2);
    nothing_pending(&mut ws, "x").await;
    h.stop().await;
}

/// A message over `max_message_bytes` is an error and the connection stays open; one too
/// large to even buffer (over 64 KiB here) closes with 1009.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_too_large_is_an_error_and_the_connection_stays_open() {
    let cfg = FeedConfig {
        max_message_bytes: 1024,
        ..FeedConfig::default()
    };
    let (_dir, h) = Harness::with_market(cfg, 1).await;
    let mut ws = h.ws().await;
    let big = json!({"op":"ping","id":1,"pad":"x".repeat(2000)});
    send(&mut ws, big).await;
    assert_error(&next_json(&mut ws).await, Value::Null, "PAYLOAD_TOO_LARGE");
    // Exactly at the limit: fine.
    let pad = 1024 - json!({"op":"ping","id":2,"pad":""}).to_string().len();
    send(&mut ws, json!({"op":"ping","id":2,"pad":"y".repeat(pad)})).await;
    assert_eq!(next_json(&mut ws).await, json!({"op":"pong","id":2}));
    subscribed(&mut ws, 3, &["trades:BTC_SEK"]).await;
    nothing_pending(&mut ws, "p").await;
    // Far too large: a defined close, not a silent drop.
    send_raw(&mut ws, &"z".repeat(200 * 1024)).await;
    assert_closes_with(&mut ws, 1009, Duration::from_secs(5)).await;
    h.stop().await;
}

/// Past `max_inbound_per_sec` each message gets a RATE_LIMITED error with its id, the
/// connection stays open, the next second is served; a flood (10x) closes with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_rate_limit_is_an_error_then_a_close() {
    let cfg = FeedConfig {
        max_inbound_per_sec: 5,
        ..FeedConfig::default()
    };
    let (_dir, h) = Harness::with_market(cfg, 1).await;
    let mut ws = h.ws().await;
    for i in 0..8 {
        send(&mut ws, json!({"op":"ping","id":i})).await;
    }
    for i in 0..5 {
        assert_eq!(next_json(&mut ws).await, json!({"op":"pong","id":i}));
    }
    for i in 5..8 {
        assert_error(&next_json(&mut ws).await, json!(i), "RATE_LIMITED");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send(&mut ws, json!({"op":"ping","id":"later"})).await;
    assert_eq!(next_json(&mut ws).await, json!({"op":"pong","id":"later"}));
    flood_is_closed_with_1008(&mut ws, |i| {
        Message::text(json!({"op":"ping","id":i}).to_string())
    })
    .await;
    h.stop().await;
}

/// Binary frames count against the inbound rate like text ones: a flood of them is closed
/// with 1008 rather than answered forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_count_against_the_inbound_rate() {
    let cfg = FeedConfig {
        max_inbound_per_sec: 5,
        ..FeedConfig::default()
    };
    let (_dir, h) = Harness::with_market(cfg, 1).await;
    let mut ws = h.ws().await;
    let frame = |_| Message::binary(vec![0u8; 8]);
    for _ in 0..5 {
        ws.send(frame(0)).await.unwrap();
    }
    for _ in 0..5 {
        assert_error(&next_json(&mut ws).await, Value::Null, "BAD_REQUEST");
    }
    ws.send(frame(0)).await.unwrap();
    assert_error(&next_json(&mut ws).await, Value::Null, "RATE_LIMITED");
    flood_is_closed_with_1008(&mut ws, frame).await;
    h.stop().await;
}

/// Ping and unasked pong frames count against the inbound rate too: a flood of either is
/// closed with 1008 (pongs were not counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_pong_floods_are_closed() {
    for pong in [false, true] {
        let cfg = FeedConfig {
            max_inbound_per_sec: 5,
            ..FeedConfig::default()
        };
        let (_dir, h) = Harness::with_market(cfg, 1).await;
        let mut ws = h.ws().await;
        flood_is_closed_with_1008(&mut ws, |i| {
            let payload = i.to_be_bytes().to_vec();
            if pong {
                Message::Pong(payload.into())
            } else {
                Message::Ping(payload.into())
            }
        })
        .await;
        h.stop().await;
    }
}

/// `max_connections` open: the next upgrade is refused with 503; a closed one frees a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_refuses_then_frees() {
    let cfg = FeedConfig {
        max_connections: 2,
        ..FeedConfig::default()
    };
    let (_dir, h) = Harness::with_market(cfg, 1).await;
    let mut a = h.ws().await;
    let mut b = h.ws().await;
    nothing_pending(&mut a, "a").await;
    nothing_pending(&mut b, "b").await;
    match tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", h.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 503);
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a third connection was accepted"),
    }
    a.close(None).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while h.feed.connections() > 1 {
        assert!(std::time::Instant::now() < deadline, "slot not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = h.ws().await;
    nothing_pending(&mut c, "c").await;
    nothing_pending(&mut b, "b2").await;
    h.stop().await;
}

/// The book channel's exact messages: snapshot at the REST sequence with every level and
/// the checksum, then updates S+1, S+2 with absolute amounts (`"0"` removes), the checksum
/// after each; the REST book follows. The ticker's best bid/ask amounts, last price,
/// 24 h figures are exact, on REST and on the WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_and_ticker_messages_are_exact() {
    let cfg = FeedConfig {
        book_interval: Duration::ZERO,
        ..FeedConfig::default()
    };
    let (_dir, h) = Harness::with_market(cfg, 2).await;
    // Before any order: the ticker is sent at once, all empty.
    let mut ws = h.ws().await;
    subscribed(&mut ws, 1, &["ticker:BTC_SEK"]).await;
    let t0 = next_json(&mut ws).await;
    assert_eq!(t0["channel"], "ticker:BTC_SEK", "{t0}");
    let rest0 = h.http.json("/v1/pairs/BTC_SEK/ticker").await;
    assert_fields_eq(&t0["data"], &rest0, &["pair"]);
    assert_fields_eq(&t0["data"], &rest0, &TICKER_FIGURES);
    assert_eq!(t0["data"]["baseVolume"], "0");
    assert_eq!(t0["data"]["bestBid"], Value::Null);
    assert_eq!(t0["data"].as_object().unwrap().len(), 11);
    nothing_pending(&mut ws, "t0").await;
    unsubscribed(&mut ws, 2, &["ticker:BTC_SEK"]).await;

    for (id, acct, side, price, lots) in [
        (1, 1, Side::Sell, 100_100, 3),
        (2, 1, Side::Sell, 100_100, 2),
        (3, 1, Side::Sell, 100_200, 1),
        (4, 2, Side::Buy, 99_900, 5),
        (5, 2, Side::Buy, 99_800, 7),
    ] {
        h.run(limit(id, acct, side, price, lots, TimeInForce::Gtc))
            .await;
    }
    let rest = h.http.json("/v1/pairs/BTC_SEK/book").await;
    let s = rest["sequence"].as_u64().unwrap();
    subscribed(&mut ws, 3, &["book:BTC_SEK"]).await;
    let asks = [("1001.00", "0.0005"), ("1002.00", "0.0001")];
    let bids = [("999.00", "0.0005"), ("998.00", "0.0007")];
    assert_eq!(
        next_json(&mut ws).await,
        json!({"channel":"book:BTC_SEK","type":"snapshot","seq":s,
               "checksum":kraken(&asks, &bids),
               "data":{"bids":[["999.00","0.0005"],["998.00","0.0007"]],
                       "asks":[["1001.00","0.0005"],["1002.00","0.0001"]]}})
    );
    assert_eq!(
        kraken(&asks, &bids),
        crc32fast::hash(b"10010051002001999005998007")
    );
    // Cancel removes a level.
    h.run(cancel(3, 1)).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"channel":"book:BTC_SEK","type":"update","seq":s + 1,
               "checksum":kraken(&asks[..1], &bids),
               "data":{"bids":[],"asks":[["1002.00","0"]]}})
    );
    // A trade takes 0.0001 of the 1001.00 level.
    h.run(limit(6, 2, Side::Buy, 100_100, 1, TimeInForce::Gtc))
        .await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"channel":"book:BTC_SEK","type":"update","seq":s + 2,
               "checksum":kraken(&[("1001.00", "0.0004")], &bids),
               "data":{"bids":[],"asks":[["1001.00","0.0004"]]}})
    );
    let rest = h.http.json("/v1/pairs/BTC_SEK/book?depth=1").await;
    assert_eq!(
        rest,
        json!({"pair":"BTC_SEK","sequence":s + 2,"timestamp":rest["timestamp"],
               "bids":[["999.00","0.0005"]],"asks":[["1001.00","0.0004"]]})
    );
    // The ticker: best prices with the level totals, 24 h figures of the one trade
    // (1001.00 x 0.0001 = 0.1001 SEK, the buyer pays it rounded up: 0.11).
    let t = h.http.json("/v1/pairs/BTC_SEK/ticker").await;
    let expect = json!({"pair":"BTC_SEK","timestamp":t["timestamp"],"lastPrice":"1001.00",
        "bestBid":"999.00","bestBidAmount":"0.0005","bestAsk":"1001.00","bestAskAmount":"0.0004",
        "high":"1001.00","low":"1001.00","baseVolume":"0.0001","quoteVolume":"0.11"});
    assert_eq!(t, expect);
    assert!(
        t["timestamp"]
            .as_str()
            .is_some_and(|s| s.len() == 24 && s.ends_with('Z')),
        "{t}"
    );
    subscribed(&mut ws, 4, &["ticker:BTC_SEK"]).await;
    let m = next_json(&mut ws).await;
    assert_eq!(m["channel"], "ticker:BTC_SEK");
    let mut d = m["data"].clone();
    d["timestamp"] = t["timestamp"].clone();
    assert_eq!(d, expect);
    nothing_pending(&mut ws, "end").await;
    h.stop().await;
}

/// Every candle interval on the WebSocket: the REST candle of that interval, seq
/// consecutive per channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candles_of_every_interval_match_rest() {
    let (_dir, h) = Harness::with_market(FeedConfig::default(), 2).await;
    let ivs = ["1m", "5m", "15m", "1h", "4h", "1d"];
    let names: Vec<String> = ivs
        .iter()
        .map(|iv| format!("candles:{iv}:{PAIR}"))
        .collect();
    let mut ws = h.ws().await;
    subscribed(&mut ws, 1, &names).await;
    let mut last: BTreeMap<String, (u64, Value)> = BTreeMap::new();
    for (i, price) in [(0u64, 100_000u64), (1, 100_500)] {
        h.sell_then_buy(i, (price, 2), (price, 2)).await;
        for _ in 0..ivs.len() {
            let m = next_json(&mut ws).await;
            let ch = m["channel"].as_str().unwrap().to_string();
            let seq = m["seq"].as_u64().unwrap();
            if let Some((prev, _)) = last.get(&ch) {
                assert_eq!(seq, prev + 1, "{ch}");
            }
            last.insert(ch, (seq, m["data"].clone()));
        }
    }
    assert_eq!(last.len(), ivs.len());
    for iv in ivs {
        let rest = h
            .http
            .json(&format!("/v1/pairs/{PAIR}/candles?interval={iv}"))
            .await;
        let rest_last = rest.as_array().unwrap().last().unwrap().clone();
        let (_, ws_last) = &last[&format!("candles:{iv}:{PAIR}")];
        assert_eq!(ws_last, &rest_last, "{iv}");
        assert_eq!(ws_last.as_object().unwrap().len(), 8, "{iv}");
    }
    // One candle per interval unless the two trades straddled a boundary.
    let day = h
        .http
        .json(&format!("/v1/pairs/{PAIR}/candles?interval=1d"))
        .await;
    let total: u64 = day
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["trades"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 2);
    h.stop().await;
}

/// A book subscriber that stops reading is resent a fresh snapshot (not closed, not given a
/// gap): between snapshots the seqs are consecutive, every checksum matches, and it ends
/// holding the REST book at the REST sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_book_consumer_is_resynced_by_snapshot() {
    let cfg = FeedConfig {
        book_interval: Duration::ZERO,
        max_resyncs_per_min: 10_000,
        ..FeedConfig::default()
    };
    let (_dir, h) = small_buffer_market(cfg).await;
    // A deep book: every snapshot and many updates are large.
    for i in 0..200u64 {
        h.run(limit(
            1_000_000 + i,
            2,
            Side::Buy,
            50_000 + i,
            1000 + i,
            TimeInForce::Gtc,
        ))
        .await;
    }
    let mut slow = slow_subscriber(&h, "book:BTC_SEK").await;
    // Many large updates, each a sweep of the ask levels then their refill, while it reads
    // nothing.
    const ROUNDS: u64 = 60;
    const LEVELS: u64 = 50;
    let mut id = 10u64;
    for _round in 0..ROUNDS {
        let mut pending = Vec::new();
        for k in 0..LEVELS {
            id += 1;
            pending.push(
                h.submit(limit(
                    id,
                    1,
                    Side::Sell,
                    100_000 + k * 7,
                    1 + k,
                    TimeInForce::Gtc,
                ))
                .await,
            );
        }
        for p in pending {
            p.await.unwrap();
        }
        id += 1;
        h.run(limit(id, 2, Side::Buy, 200_000, 5000, TimeInForce::Ioc))
            .await;
    }
    let rest = h.http.json("/v1/pairs/BTC_SEK/book?depth=1000").await;
    let target = rest["sequence"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut view = BookView::default();
    let mut first = None::<u64>;
    let mut snapshots = 0;
    let mut messages = 0;
    while view.seq != Some(target) {
        let m = next_json(&mut slow).await;
        messages += 1;
        assert_eq!(m["channel"], "book:BTC_SEK", "{m}");
        let prev = view.seq;
        if view.apply(&m) {
            snapshots += 1;
            let s = view.seq.unwrap();
            first.get_or_insert(s);
            if let Some(prev) = prev {
                assert!(s >= prev, "snapshot went back: {prev} -> {s}");
            }
        }
    }
    assert!(snapshots >= 2, "never resynced ({messages} messages)");
    let updates = target - first.unwrap();
    assert!(
        messages - snapshots < updates,
        "{messages} messages for {updates} updates: the backlog was sent, not resynced"
    );
    view.assert_is(&rest);
    nothing_pending(&mut slow, "still open").await;
    h.stop().await;
}

/// A ticker subscriber that stops reading gets conflated tickers (fewer, seq rising with
/// gaps), is not closed, and ends with the current ticker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_ticker_consumer_is_conflated() {
    let (_dir, h) = small_buffer_market(FeedConfig::default()).await;
    let mut slow = slow_subscriber(&h, "ticker:BTC_SEK").await;
    let n = 1500u64;
    for i in 0..n {
        h.sell_then_buy(i, (100_000 + i, 1), (100_000 + i, 1)).await;
    }
    let rest = h.http.json("/v1/pairs/BTC_SEK/ticker").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut prev = None::<u64>;
    let mut count = 0u64;
    loop {
        let m = next_json(&mut slow).await;
        assert_eq!(m["channel"], "ticker:BTC_SEK", "{m}");
        let s = m["seq"].as_u64().unwrap();
        assert!(prev.is_none_or(|p| s > p), "seq {prev:?} -> {s}");
        prev = Some(s);
        count += 1;
        if m["data"]["lastPrice"] == rest["lastPrice"] {
            assert_fields_eq(&m["data"], &rest, &TICKER_FIGURES);
            break;
        }
    }
    // Two tickers per trade were published (each order moves the top of book).
    assert!(count < n, "{count} tickers for {n} trades: not conflated");
    nothing_pending(&mut slow, "still open").await;
    h.stop().await;
}

/// A shutdown closes with 1001 only after writing what the rings held when the connection
/// learned of it: a client that was behind (its socket full, 2,000 messages of some 150
/// bytes in the ring) still gets every message published before the stop, in order, then
/// the close. Before, the close frame went out behind what the socket held and the rest of
/// the backlog was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_writes_the_backlog_before_closing_with_1001() {
    let dir = tmp();
    let (h, mut ws) = wallet_subscriber_with_small_buffers(&dir).await;
    let n = 2000u64;
    assert!(
        n < FeedConfig::default().queue_bound as u64,
        "not a slow consumer"
    );
    let pad = "x".repeat(100);
    for i in 0..n {
        h.feed.publish_private(
            AccountId(1),
            PrivateChannel::Wallet,
            json!({"i": i, "pad": pad}),
        );
    }
    h.feed.close_connections();
    for i in 0..n {
        let m = next_json(&mut ws).await;
        assert_eq!(m["channel"], "wallet", "{m}");
        assert_eq!(m["data"]["i"], i, "message {i} of {n}");
    }
    assert_closes_with(&mut ws, 1001, Duration::from_secs(5)).await;
    // tungstenite sends its reply to the close on the next read; the server then ends the
    // connection.
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
    assert!(
        h.feed.connections_closed(Duration::from_secs(5)).await,
        "the connection did not end"
    );
    h.stop().await;
}

/// The drain is bounded by what the rings held at the stop: a channel that keeps
/// publishing does not hold the close back until the grace runs out (5 s of the default
/// 10 s close grace), the connection closes as soon as its backlog is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_drain_ends_while_messages_keep_coming() {
    let (_dir, h) = Harness::with_market(FeedConfig::default(), 0).await;
    h.accept_tokens(&[("tok-1", 1)]);
    let mut ws = h.ws().await;
    authenticated(&mut ws, 1, "tok-1").await;
    subscribed(&mut ws, 2, &["wallet"]).await;
    let feed = h.feed.clone();
    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = {
        let publishing = publishing.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            while publishing.load(Ordering::Relaxed) {
                feed.publish_private(AccountId(1), PrivateChannel::Wallet, json!({ "i": i }));
                i += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    assert_eq!(next_json(&mut ws).await["channel"], "wallet");
    let stop = std::time::Instant::now();
    h.feed.close_connections();
    assert_closes_with(&mut ws, 1001, Duration::from_secs(8)).await;
    let took = stop.elapsed();
    publishing.store(false, Ordering::Relaxed);
    publisher.await.expect("publisher");
    assert!(took < Duration::from_secs(2), "the drain took {took:?}");
    h.stop().await;
}

/// Private channels carry only the authenticated account: re-auth as another account
/// drops the first one's subscriptions (named in an `unsubscribed` of id null); each of the
/// account's connections gets its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_channels_follow_the_authenticated_account() {
    let (_dir, h) = Harness::with_market(FeedConfig::default(), 2).await;
    h.accept_tokens(&[("tok-1", 1), ("tok-2", 2)]);
    let orders = |account: u32, id: &str| {
        h.feed.publish_private(
            AccountId(account),
            PrivateChannel::Orders,
            json!({"id": id}),
        );
    };
    let mut a = h.ws().await;
    let mut a2 = h.ws().await;
    for ws in [&mut a, &mut a2] {
        authenticated(ws, 1, "tok-1").await;
        subscribed(ws, 2, &["orders"]).await;
    }
    orders(1, "o1");
    for ws in [&mut a, &mut a2] {
        assert_eq!(
            next_json(ws).await,
            json!({"channel":"orders","seq":1,"data":{"id":"o1"}})
        );
    }
    // A bad token keeps the account it had.
    send(&mut a, json!({"op":"auth","id":3,"token":"nope"})).await;
    assert_error(&next_json(&mut a).await, json!(3), "UNAUTHORIZED");
    // Re-auth as account 2: account 1's subscription is gone, and the client is told.
    send(&mut a, json!({"op":"auth","id":4,"token":"tok-2"})).await;
    assert_eq!(
        next_json(&mut a).await,
        json!({"op":"unsubscribed","id":null,"channels":["orders"]})
    );
    // The accepted tokens never expire: the grant's end is the latest time there is.
    assert_eq!(
        next_json(&mut a).await,
        json!({"op":"authenticated","id":4,"expiresAt":"2262-04-11T23:47:16.854Z"})
    );
    orders(1, "o2");
    orders(2, "x1");
    nothing_pending(&mut a, "after re-auth").await;
    assert_eq!(next_json(&mut a2).await["data"]["id"], "o2");
    subscribed(&mut a, 5, &["orders"]).await;
    orders(2, "x2");
    orders(1, "o3");
    let m = next_json(&mut a).await;
    assert_eq!(m["channel"], "orders");
    assert_eq!(m["data"]["id"], "x2");
    nothing_pending(&mut a, "only account 2").await;
    assert_eq!(next_json(&mut a2).await["data"]["id"], "o3");
    h.stop().await;
}

/// A token the authenticator could not check (the API's token store is unreadable) is a
/// `SERVICE_UNAVAILABLE` error, not `UNAUTHORIZED` (the client would throw a good token
/// away); the connection stays open and keeps what it was granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_could_not_be_checked_is_unavailable_not_unauthorized() {
    let (_dir, h) = Harness::with_market(FeedConfig::default(), 0).await;
    h.feed.set_authenticator(Arc::new(|t: &str| match t {
        "tok-1" => Ok(Grant {
            account: AccountId(1),
            scopes: ReadScopes {
                orders: true,
                wallet: true,
            },
            expires_ns: i64::MAX,
        }),
        "unchecked" => Err(AuthRefusal::Unavailable),
        _ => Err(AuthRefusal::Invalid),
    }));
    let mut ws = h.ws().await;
    send(&mut ws, json!({"op":"auth","id":1,"token":"unchecked"})).await;
    assert_error(&next_json(&mut ws).await, json!(1), "SERVICE_UNAVAILABLE");
    send(&mut ws, json!({"op":"auth","id":2,"token":"made-up"})).await;
    assert_error(&next_json(&mut ws).await, json!(2), "UNAUTHORIZED");
    authenticated(&mut ws, 3, "tok-1").await;
    subscribed(&mut ws, 4, &["orders"]).await;
    send(&mut ws, json!({"op":"auth","id":5,"token":"unchecked"})).await;
    assert_error(&next_json(&mut ws).await, json!(5), "SERVICE_UNAVAILABLE");
    h.feed
        .publish_private(AccountId(1), PrivateChannel::Orders, json!({"id": "o1"}));
    assert_eq!(
        next_json(&mut ws).await,
        json!({"channel":"orders","seq":1,"data":{"id":"o1"}})
    );
    nothing_pending(&mut ws, "still open").await;
    h.stop().await;
}

/// After a restart on the same data dir the WebSocket streams pick up where REST is: the
/// ticker is sent at once with the kept 24 h figures, the book snapshot is at the REST
/// sequence, and new trades flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_after_restart_continue_the_market() {
    let (dir, h) = Harness::with_market(FeedConfig::default(), 2).await;
    for i in 0..20u64 {
        h.sell_then_buy(i, (100_000 + i, 3), (100_050, 2)).await;
    }
    let ticker = h.http.json("/v1/pairs/BTC_SEK/ticker").await;
    h.stop().await;
    let h = Harness::start(dir.path(), FeedConfig::default()).await;
    let rest_book = h.http.json("/v1/pairs/BTC_SEK/book?depth=1000").await;
    let mut ws = h.ws().await;
    subscribed(&mut ws, 1, &["ticker:BTC_SEK", "book:BTC_SEK"]).await;
    let mut got_ticker = None;
    let mut got_snap = None;
    for _ in 0..2 {
        let m = next_json(&mut ws).await;
        match m["channel"].as_str() {
            Some("ticker:BTC_SEK") => got_ticker = Some(m),
            Some("book:BTC_SEK") => got_snap = Some(m),
            _ => panic!("{m}"),
        }
    }
    let t = got_ticker.expect("no ticker on subscribe after a restart");
    assert_fields_eq(&t["data"], &ticker, &TICKER_FIGURES);
    let snap = got_snap.unwrap();
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["seq"], rest_book["sequence"]);
    assert_eq!(snap["data"]["bids"], rest_book["bids"]);
    assert_eq!(snap["data"]["asks"], rest_book["asks"]);
    subscribed(&mut ws, 2, &["trades:BTC_SEK"]).await;
    h.sell_then_buy(100, (100_000, 1), (100_000, 1)).await;
    let mut saw_trade = false;
    for _ in 0..6 {
        let m = next_json(&mut ws).await;
        if m["channel"] == "trades:BTC_SEK" {
            assert_eq!(m["data"]["price"], "1000.00");
            saw_trade = true;
            break;
        }
    }
    assert!(saw_trade);
    h.stop().await;
}

/// The book's and the ticker's `timestamp` (the newest batch applied) do not step back
/// across a restart: orders that rested after the last trade moved it past that trade's
/// time, and it was rebuilt from the newest stored trade alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_do_not_step_back_across_a_restart() {
    let (dir, h) = Harness::with_market(FeedConfig::default(), 2).await;
    h.sell_then_buy(1, (100_000, 3), (100_000, 3)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A batch without a trade, later than the trade.
    h.run(limit(10, 1, Side::Buy, 99_000, 1, TimeInForce::Gtc))
        .await;
    let book = h.http.json("/v1/pairs/BTC_SEK/book").await;
    let ticker = h.http.json("/v1/pairs/BTC_SEK/ticker").await;
    let trades = h.http.json("/v1/pairs/BTC_SEK/trades").await;
    let traded = trades[0]["timestamp"].as_str().unwrap().to_string();
    let before = book["timestamp"].as_str().unwrap().to_string();
    assert!(
        before > traded,
        "the resting order's batch is later: {before} vs {traded}"
    );
    h.stop().await;
    let h = Harness::start(dir.path(), FeedConfig::default()).await;
    let book = h.http.json("/v1/pairs/BTC_SEK/book").await;
    let after_ticker = h.http.json("/v1/pairs/BTC_SEK/ticker").await;
    assert_eq!(book["timestamp"], before.as_str(), "{book}");
    assert_eq!(
        after_ticker["timestamp"], ticker["timestamp"],
        "{after_ticker}"
    );
    h.stop().await;
}

/// API.md's timings are the defaults: ping every 15 s, silent peers dropped after 60 s.
#[test]
fn default_timings_are_the_contract() {
    let c = FeedConfig::default();
    assert_eq!(c.ping_interval, Duration::from_secs(15));
    assert_eq!(c.idle_timeout, Duration::from_secs(60));
    assert!(c.max_connections > 0 && c.max_subscriptions > 0);
    assert!(c.max_inbound_per_sec > 0 && c.max_message_bytes > 0);
}
