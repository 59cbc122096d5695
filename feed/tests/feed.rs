//! Black-box tests of the feed: the real pipeline, the router on a port-0 server, real
//! WebSocket clients.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::*;
use engine::{AccountId, Event, Side, TimeInForce};
use feed::{FeedConfig, PrivateChannel, checksum_of};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// open, high, low, close, base, quote, trades
type Agg = (u128, u128, u128, u128, u128, u128, u64);

type Book = (
    BTreeMap<u128, (String, String)>,
    BTreeMap<u128, (String, String)>,
);

fn apply_levels(side: &mut BTreeMap<u128, (String, String)>, levels: &Value) {
    for lv in levels.as_array().unwrap() {
        let p = lv[0].as_str().unwrap().to_string();
        let a = lv[1].as_str().unwrap().to_string();
        if units(&a) == 0 {
            side.remove(&units(&p));
        } else {
            side.insert(units(&p), (p, a));
        }
    }
}

fn own_checksum(book: &Book) -> u32 {
    let asks: Vec<[String; 2]> = book
        .1
        .values()
        .take(10)
        .map(|(p, a)| [p.clone(), a.clone()])
        .collect();
    let bids: Vec<[String; 2]> = book
        .0
        .values()
        .rev()
        .take(10)
        .map(|(p, a)| [p.clone(), a.clone()])
        .collect();
    checksum_of(&asks, &bids)
}

fn independent_checksum(book: &Book) -> u32 {
    let mut s = String::new();
    let strip = |x: &str| x.replace('.', "").trim_start_matches('0').to_string();
    for (p, a) in book.1.values().take(10) {
        s += &strip(p);
        s += &strip(a);
    }
    for (p, a) in book.0.values().rev().take(10) {
        s += &strip(p);
        s += &strip(a);
    }
    crc32fast::hash(s.as_bytes())
}

/// Random orders and cancels: the WS client's book equals the REST book at the same seq,
/// every checksum matches, no seq gap; ticker, trades and candles match the trades.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_ticker_trades_candles_agree_with_the_engine() {
    let dir = tmp();
    // One book update per batch: commands run one at a time here, so one per command.
    let config = FeedConfig {
        book_interval: Duration::ZERO,
        ..FeedConfig::default()
    };
    let h = Harness::start(dir.path(), config).await;
    h.setup_market(8).await;
    let mut ws = h.ws().await;
    send(
        &mut ws,
        json!({"op":"subscribe","id":1,"channels":[
            format!("book:{PAIR}"), format!("trades:{PAIR}"), format!("ticker:{PAIR}"),
            format!("candles:1m:{PAIR}")]}),
    )
    .await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["op"], "subscribed");
    assert_eq!(first["id"], 1);
    let mut rx = reader(ws);

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut open: Vec<(u64, u32)> = Vec::new();
    let mut trades = Vec::new();
    let n = 3000u64;
    for i in 0..n {
        let id = 1000 + i;
        let cmd = if !open.is_empty() && rng.random_range(0..4) == 0 {
            let k = rng.random_range(0..open.len());
            let (oid, acct) = open.swap_remove(k);
            cancel(oid, acct)
        } else {
            let side = if rng.random_bool(0.5) {
                Side::Buy
            } else {
                Side::Sell
            };
            let price = 100_000 + rng.random_range(0..40u64) * 25;
            let lots = rng.random_range(1..5000u64);
            let acct = rng.random_range(1..=8u32);
            let tif = if rng.random_range(0..10) == 0 {
                TimeInForce::Ioc
            } else {
                TimeInForce::Gtc
            };
            open.push((id, acct));
            limit(id, acct, side, price, lots, tif)
        };
        let out = h.run(cmd).await;
        for e in &out.events {
            if let Event::Trade(t) = e {
                trades.push((*t, out.timestamp_ns));
            }
        }
    }
    assert!(trades.len() > 500, "only {} trades", trades.len());

    let rest_book = h
        .http
        .json(&format!("/v1/pairs/{PAIR}/book?depth=1000"))
        .await;
    let target_seq = rest_book["sequence"].as_u64().unwrap();

    // Apply the stream until the book reaches the REST sequence and all trades arrived.
    let mut book: Book = Default::default();
    let mut book_seq = None::<u64>;
    let mut ws_trades: Vec<Value> = Vec::new();
    let mut trade_seq = None::<u64>;
    let mut last_ticker = Value::Null;
    let mut candles: HashMap<String, Value> = HashMap::new();
    let mut checks = 0;
    while book_seq != Some(target_seq) || ws_trades.len() < trades.len() {
        let m = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("stream stalled")
            .expect("stream ended");
        let ch = m["channel"].as_str().unwrap_or_default().to_string();
        let seq = m["seq"].as_u64().unwrap();
        if ch.starts_with("book:") {
            match m["type"].as_str().unwrap() {
                "snapshot" => {
                    assert!(book_seq.is_none(), "unexpected resync");
                    book = Default::default();
                    apply_levels(&mut book.0, &m["data"]["bids"]);
                    apply_levels(&mut book.1, &m["data"]["asks"]);
                }
                "update" => {
                    assert_eq!(Some(seq), book_seq.map(|s| s + 1), "book seq gap");
                    apply_levels(&mut book.0, &m["data"]["bids"]);
                    apply_levels(&mut book.1, &m["data"]["asks"]);
                }
                t => panic!("type {t}"),
            }
            book_seq = Some(seq);
            let c = m["checksum"].as_u64().unwrap() as u32;
            assert_eq!(c, own_checksum(&book), "checksum at {seq}");
            assert_eq!(c, independent_checksum(&book));
            checks += 1;
        } else if ch.starts_with("trades:") {
            if let Some(s) = trade_seq {
                assert_eq!(seq, s + 1, "trades seq gap");
            }
            trade_seq = Some(seq);
            ws_trades.push(m["data"].clone());
        } else if ch.starts_with("ticker:") {
            last_ticker = m["data"].clone();
        } else if ch.starts_with("candles:") {
            candles.insert(
                m["data"]["openTime"].as_str().unwrap().to_string(),
                m["data"].clone(),
            );
        }
    }
    assert!(checks > 1000);
    // Channels are independent streams: let the last ticker arrive.
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        let ch = m["channel"].as_str().unwrap_or_default();
        if ch.starts_with("ticker:") {
            last_ticker = m["data"].clone();
        } else if ch.starts_with("candles:") {
            candles.insert(
                m["data"]["openTime"].as_str().unwrap().to_string(),
                m["data"].clone(),
            );
        }
    }
    let bids: Vec<Value> = book.0.values().rev().map(|(p, a)| json!([p, a])).collect();
    let asks: Vec<Value> = book.1.values().map(|(p, a)| json!([p, a])).collect();
    assert_eq!(Value::Array(bids), rest_book["bids"]);
    assert_eq!(Value::Array(asks), rest_book["asks"]);

    // Trades stream equals the engine's trades, in order.
    assert_eq!(ws_trades.len(), trades.len());
    for (w, (t, _)) in ws_trades.iter().zip(&trades) {
        assert_eq!(w["id"], t.id.0.to_string());
        assert_eq!(units(w["price"].as_str().unwrap()), u128::from(t.price.0));
        assert_eq!(units(w["amount"].as_str().unwrap()), u128::from(t.amount.0));
        assert_eq!(
            w["side"],
            if t.taker_side == Side::Buy {
                "buy"
            } else {
                "sell"
            }
        );
    }
    let rest_trades = h
        .http
        .json(&format!("/v1/pairs/{PAIR}/trades?limit=1000"))
        .await;
    let newest: Vec<Value> = ws_trades.iter().rev().take(1000).cloned().collect();
    assert_eq!(rest_trades, Value::Array(newest));

    // Ticker: figures implied by the trades (all inside 24 h).
    let ticker = h.http.json(&format!("/v1/pairs/{PAIR}/ticker")).await;
    let hi = trades.iter().map(|t| t.0.price.0).max().unwrap();
    let lo = trades.iter().map(|t| t.0.price.0).min().unwrap();
    let base: u128 = trades.iter().map(|t| u128::from(t.0.amount.0)).sum();
    // Quote: each trade's value rounded up to the quote minor unit (10^4 value units).
    let quote: u128 = ws_trades
        .iter()
        .map(|w| {
            (units(w["price"].as_str().unwrap()) * units(w["amount"].as_str().unwrap()))
                .div_ceil(10_000)
        })
        .sum();
    assert_eq!(units(ticker["high"].as_str().unwrap()), u128::from(hi));
    assert_eq!(units(ticker["low"].as_str().unwrap()), u128::from(lo));
    assert_eq!(units(ticker["baseVolume"].as_str().unwrap()), base);
    assert_eq!(units(ticker["quoteVolume"].as_str().unwrap()), quote);
    assert_eq!(ticker["lastPrice"], ws_trades.last().unwrap()["price"]);
    assert_eq!(ticker["bestBid"], rest_book["bids"][0][0]);
    assert_eq!(ticker["bestAsk"], rest_book["asks"][0][0]);
    assert_eq!(last_ticker["high"], ticker["high"]);
    assert_eq!(last_ticker["baseVolume"], ticker["baseVolume"]);
    assert_eq!(last_ticker["quoteVolume"], ticker["quoteVolume"]);

    // Candles: an independent aggregation of the trades stream.
    let mut agg: BTreeMap<String, Agg> = BTreeMap::new();
    for w in &ws_trades {
        let ts = w["timestamp"].as_str().unwrap();
        let minute = format!("{}:00.000Z", &ts[..16]);
        let p = units(w["price"].as_str().unwrap());
        let a = units(w["amount"].as_str().unwrap());
        let e = agg.entry(minute).or_insert((p, p, p, p, 0, 0, 0));
        e.1 = e.1.max(p);
        e.2 = e.2.min(p);
        e.3 = p;
        e.4 += a;
        e.5 += (p * a).div_ceil(10_000);
        e.6 += 1;
    }
    let rest_candles = h
        .http
        .json(&format!("/v1/pairs/{PAIR}/candles?interval=1m&limit=1000"))
        .await;
    let rest_candles = rest_candles.as_array().unwrap();
    assert_eq!(rest_candles.len(), agg.len());
    for (c, (minute, e)) in rest_candles.iter().zip(&agg) {
        assert_eq!(c["openTime"], minute.as_str());
        let got = (
            units(c["open"].as_str().unwrap()),
            units(c["high"].as_str().unwrap()),
            units(c["low"].as_str().unwrap()),
            units(c["close"].as_str().unwrap()),
            units(c["baseVolume"].as_str().unwrap()),
            units(c["quoteVolume"].as_str().unwrap()),
            c["trades"].as_u64().unwrap(),
        );
        assert_eq!(&got, e);
        assert_eq!(candles.get(minute.as_str()), Some(c), "ws candle {minute}");
    }
    let day = h
        .http
        .json(&format!("/v1/pairs/{PAIR}/candles?interval=1d"))
        .await;
    assert_eq!(day[0]["trades"].as_u64().unwrap() as usize, trades.len());
    h.stop().await;
}

/// Book updates merge many commands (`book_interval`, commands in flight together): seqs
/// stay gap-free, every checksum matches, and at every sequence the REST book reported
/// (read while orders flow) the client holds exactly that book.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_book_updates_equal_the_rest_book_at_each_sequence() {
    let dir = tmp();
    let config = FeedConfig {
        book_interval: Duration::from_millis(3),
        ..FeedConfig::default()
    };
    let h = Harness::start(dir.path(), config).await;
    h.setup_market(8).await;
    let mut ws = h.ws().await;
    send(
        &mut ws,
        json!({"op":"subscribe","id":1,"channels":[format!("book:{PAIR}")]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["op"], "subscribed");
    let mut rx = reader(ws);

    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut open: Vec<(u64, u32)> = Vec::new();
    let mut rest_books: BTreeMap<u64, Value> = BTreeMap::new();
    let mut level_commands = 0u64;
    let mut id = 1000u64;
    for _round in 0..60 {
        let mut pending = Vec::new();
        for k in 0..40 {
            id += 1;
            let cmd = if !open.is_empty() && rng.random_range(0..4) == 0 {
                let (oid, acct) = open.swap_remove(rng.random_range(0..open.len()));
                cancel(oid, acct)
            } else {
                let side = if rng.random_bool(0.5) {
                    Side::Buy
                } else {
                    Side::Sell
                };
                let price = 100_000 + rng.random_range(0..30u64) * 25;
                let acct = rng.random_range(1..=8u32);
                open.push((id, acct));
                limit(
                    id,
                    acct,
                    side,
                    price,
                    rng.random_range(1..5000u64),
                    TimeInForce::Gtc,
                )
            };
            pending.push(h.submit(cmd).await);
            if k == 20 {
                // A read while commands are in flight.
                let b = h
                    .http
                    .json(&format!("/v1/pairs/{PAIR}/book?depth=1000"))
                    .await;
                rest_books.insert(b["sequence"].as_u64().unwrap(), b);
            }
        }
        for rx in pending {
            let out = rx.await.unwrap();
            if out
                .events
                .iter()
                .any(|e| matches!(e, Event::LevelChanged { .. }))
            {
                level_commands += 1;
            }
        }
        let b = h
            .http
            .json(&format!("/v1/pairs/{PAIR}/book?depth=1000"))
            .await;
        rest_books.insert(b["sequence"].as_u64().unwrap(), b);
    }
    let last_seq = *rest_books.keys().last().unwrap();

    let mut book: Book = Default::default();
    let mut book_seq = None::<u64>;
    let mut updates = 0u64;
    let mut compared = 0;
    while book_seq != Some(last_seq) {
        let m = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("stream stalled")
            .expect("stream ended");
        let seq = m["seq"].as_u64().unwrap();
        match m["type"].as_str().unwrap() {
            "snapshot" => {
                assert!(book_seq.is_none(), "unexpected resync");
                apply_levels(&mut book.0, &m["data"]["bids"]);
                apply_levels(&mut book.1, &m["data"]["asks"]);
            }
            "update" => {
                assert_eq!(Some(seq), book_seq.map(|s| s + 1), "book seq gap");
                let levels = m["data"]["bids"].as_array().unwrap().len()
                    + m["data"]["asks"].as_array().unwrap().len();
                assert!(levels > 0, "an update without levels at {seq}");
                apply_levels(&mut book.0, &m["data"]["bids"]);
                apply_levels(&mut book.1, &m["data"]["asks"]);
                updates += 1;
            }
            t => panic!("type {t}"),
        }
        book_seq = Some(seq);
        let c = m["checksum"].as_u64().unwrap() as u32;
        assert_eq!(c, own_checksum(&book), "checksum at {seq}");
        assert_eq!(c, independent_checksum(&book), "checksum at {seq}");
        if let Some(rest) = rest_books.get(&seq) {
            let bids: Vec<Value> = book.0.values().rev().map(|(p, a)| json!([p, a])).collect();
            let asks: Vec<Value> = book.1.values().map(|(p, a)| json!([p, a])).collect();
            assert_eq!(Value::Array(bids), rest["bids"], "bids at {seq}");
            assert_eq!(Value::Array(asks), rest["asks"], "asks at {seq}");
            compared += 1;
        }
    }
    // Every REST sequence was one the stream passed through (reads at an unchanged book
    // share a sequence).
    assert_eq!(compared, rest_books.len());
    assert!(
        rest_books.len() > 60,
        "{} distinct REST reads",
        rest_books.len()
    );
    assert!(
        updates < level_commands,
        "{updates} updates for {level_commands} commands that changed the book: none merged"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_errors_are_problems() {
    let dir = tmp();
    let h = Harness::start(dir.path(), FeedConfig::default()).await;
    h.setup_market(1).await;
    for (path, status, code) in [
        ("/v1/pairs/NOPE_SEK/ticker", 404, "UNKNOWN_PAIR"),
        ("/v1/pairs/NOPE_SEK/book", 404, "UNKNOWN_PAIR"),
        (
            "/v1/pairs/BTC_SEK/book?depth=1001",
            400,
            "VALIDATION_FAILED",
        ),
        ("/v1/pairs/BTC_SEK/book?depth=x", 400, "VALIDATION_FAILED"),
        (
            "/v1/pairs/BTC_SEK/trades?limit=1001",
            400,
            "VALIDATION_FAILED",
        ),
        (
            "/v1/pairs/BTC_SEK/candles?interval=2h",
            400,
            "VALIDATION_FAILED",
        ),
        ("/v1/pairs/BTC_SEK/candles", 400, "VALIDATION_FAILED"),
        (
            "/v1/pairs/BTC_SEK/candles?interval=1m&start=nope",
            400,
            "VALIDATION_FAILED",
        ),
    ] {
        let (s, body) = h.http.get(path).await;
        assert_eq!(s, status, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], code, "{path}");
        assert_eq!(v["status"], status);
    }
    let t = h.http.json("/v1/pairs/BTC_SEK/ticker").await;
    assert_eq!(t["lastPrice"], Value::Null);
    assert_eq!(t["high"], Value::Null);
    assert_eq!(t["bestBid"], Value::Null);
    assert_eq!(units(t["baseVolume"].as_str().unwrap()), 0);
    let all = h.http.json("/v1/tickers").await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let doc = serde_json::to_value(feed::openapi()).unwrap();
    assert!(doc["paths"]["/v1/pairs/{pair}/book"].is_object());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_errors_and_the_connection_stays_open() {
    let dir = tmp();
    let cfg = FeedConfig {
        max_subscriptions: 3,
        ..FeedConfig::default()
    };
    let h = Harness::start(dir.path(), cfg).await;
    h.setup_market(1).await;
    let mut ws = h.ws().await;
    send_raw(&mut ws, "{not json").await;
    let m = next_json(&mut ws).await;
    assert_eq!(
        (m["op"].as_str(), m["code"].as_str()),
        (Some("error"), Some("BAD_REQUEST"))
    );
    send(&mut ws, json!({"op":"dance","id":5})).await;
    let m = next_json(&mut ws).await;
    assert_eq!(
        (m["code"].as_str(), m["id"].as_i64()),
        (Some("UNKNOWN_OP"), Some(5))
    );
    send(
        &mut ws,
        json!({"op":"subscribe","id":6,"channels":["ticker:NOPE"]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["code"], "UNKNOWN_CHANNEL");
    send(
        &mut ws,
        json!({"op":"subscribe","id":7,"channels":["candles:2h:BTC_SEK"]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["code"], "UNKNOWN_CHANNEL");
    send(
        &mut ws,
        json!({"op":"subscribe","id":8,"channels":["orders"]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["code"], "UNAUTHORIZED");
    send(&mut ws, json!({"op":"auth","id":9,"token":"x"})).await;
    assert_eq!(next_json(&mut ws).await["code"], "UNAUTHORIZED");
    send(
        &mut ws,
        json!({"op":"subscribe","id":10,"channels":["ticker:BTC_SEK","trades:BTC_SEK","candles:1m:BTC_SEK","candles:5m:BTC_SEK"]}),
    )
    .await;
    let m = next_json(&mut ws).await;
    assert_eq!(
        (m["code"].as_str(), m["id"].as_i64()),
        (Some("LIMIT_EXCEEDED"), Some(10))
    );
    send(
        &mut ws,
        json!({"op":"subscribe","id":11,"channels":["trades:BTC_SEK"]}),
    )
    .await;
    let m = next_json(&mut ws).await;
    assert_eq!(m["op"], "subscribed");
    assert_eq!(m["channels"], json!(["trades:BTC_SEK"]));
    send(
        &mut ws,
        json!({"op":"unsubscribe","id":12,"channels":["trades:BTC_SEK"]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["op"], "unsubscribed");
    send(&mut ws, json!({"op":"ping","id":"p"})).await;
    let m = next_json(&mut ws).await;
    assert_eq!(
        (m["op"].as_str(), m["id"].as_str()),
        (Some("pong"), Some("p"))
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_channels_only_carry_the_account() {
    let dir = tmp();
    let h = Harness::start(dir.path(), FeedConfig::default()).await;
    h.setup_market(2).await;
    h.feed
        .set_authenticator(std::sync::Arc::new(|t: &str| match t {
            "tok-1" => Some(AccountId(1)),
            "tok-2" => Some(AccountId(2)),
            _ => None,
        }));
    let mut a = h.ws().await;
    let mut b = h.ws().await;
    for (ws, tok) in [(&mut a, "tok-1"), (&mut b, "tok-2")] {
        send(ws, json!({"op":"auth","id":1,"token":tok})).await;
        assert_eq!(next_json(ws).await["op"], "authenticated");
        send(
            ws,
            json!({"op":"subscribe","id":2,"channels":["orders","fills","wallet"]}),
        )
        .await;
        assert_eq!(next_json(ws).await["op"], "subscribed");
    }
    for i in 0..3 {
        h.feed.publish_private(
            AccountId(1),
            PrivateChannel::Orders,
            json!({"id": format!("a{i}")}),
        );
        h.feed.publish_private(
            AccountId(2),
            PrivateChannel::Fills,
            json!({"tradeId": format!("b{i}")}),
        );
        h.feed.publish_private(
            AccountId(3),
            PrivateChannel::Wallet,
            json!({"currency": "SEK"}),
        );
    }
    h.feed.publish_private(
        AccountId(1),
        PrivateChannel::Wallet,
        json!({"currency": "BTC"}),
    );
    // Each channel is ordered by its own seq; channels interleave freely.
    let mut got_a = Vec::new();
    for _ in 0..4 {
        got_a.push(next_json(&mut a).await);
    }
    let orders: Vec<&Value> = got_a.iter().filter(|m| m["channel"] == "orders").collect();
    assert_eq!(orders.len(), 3);
    for (i, m) in orders.iter().enumerate() {
        assert_eq!(m["seq"].as_u64(), Some(i as u64 + 1));
        assert_eq!(m["data"]["id"], format!("a{i}"));
    }
    let wallet: Vec<&Value> = got_a.iter().filter(|m| m["channel"] == "wallet").collect();
    assert_eq!(wallet.len(), 1);
    assert_eq!(wallet[0]["data"]["currency"], "BTC");
    for i in 0..3 {
        let m = next_json(&mut b).await;
        assert_eq!(m["channel"], "fills");
        assert_eq!(m["data"]["tradeId"], format!("b{i}"));
    }
    send(&mut b, json!({"op":"ping","id":3})).await;
    assert_eq!(
        next_json(&mut b).await["op"],
        "pong",
        "b saw another account's data"
    );
    h.stop().await;
}

/// A client that never reads does not delay a fast one, and is closed with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_and_does_not_delay_others() {
    let dir = tmp();
    let cfg = FeedConfig {
        queue_bound: 256,
        channel_capacity: 8192,
        stall_timeout: Duration::from_secs(1),
        ..FeedConfig::default()
    };
    let h = Harness::start(dir.path(), cfg).await;
    h.setup_market(2).await;
    // The slow client: a tiny receive buffer, subscribed to everything, never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(h.addr).await.unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut slow, _) = tokio_tungstenite::client_async(format!("ws://{}/v1/ws", h.addr), stream)
        .await
        .unwrap();
    let all: Vec<String> = ["1m", "5m", "15m", "1h", "4h", "1d"]
        .iter()
        .map(|iv| format!("candles:{iv}:{PAIR}"))
        .chain([
            format!("trades:{PAIR}"),
            format!("book:{PAIR}"),
            format!("ticker:{PAIR}"),
        ])
        .collect();
    send(&mut slow, json!({"op":"subscribe","id":1,"channels":all})).await;
    let mut fast = h.ws().await;
    send(
        &mut fast,
        json!({"op":"subscribe","id":1,"channels":[format!("trades:{PAIR}")]}),
    )
    .await;
    assert_eq!(next_json(&mut fast).await["op"], "subscribed");
    let mut fast = reader(fast);

    let n = 3000u64;
    let start = std::time::Instant::now();
    let mut seen = 0u64;
    for i in 0..n {
        h.sell_then_buy(i, (100_000 + i % 7, 5), (100_010, 5)).await;
        while let Ok(m) = fast.try_recv() {
            if m["channel"]
                .as_str()
                .is_some_and(|c| c.starts_with("trades:"))
            {
                seen += 1;
            }
        }
    }
    while seen < n {
        let m = tokio::time::timeout(Duration::from_secs(5), fast.recv())
            .await
            .expect("fast client delayed")
            .unwrap();
        if m["channel"]
            .as_str()
            .is_some_and(|c| c.starts_with("trades:"))
        {
            seen += 1;
        }
    }
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    // Now read the slow client: it ends with a 1008 close.
    let code = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Close(Some(f)))) => return Some(u16::from(f.code)),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("slow client never closed");
    assert_eq!(code, Some(1008));
    h.stop().await;
}

/// Restart on the same data dir keeps the 24 h figures, trades and candles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_ticker_trades_and_candles() {
    let dir = tmp();
    let h = Harness::start(dir.path(), FeedConfig::default()).await;
    h.setup_market(2).await;
    for i in 0..200u64 {
        h.sell_then_buy(i, (100_000 + i % 13, 3 + i % 5), (100_020, 2))
            .await;
    }
    let paths = [
        format!("/v1/pairs/{PAIR}/trades?limit=1000"),
        format!("/v1/pairs/{PAIR}/candles?interval=1m"),
        format!("/v1/pairs/{PAIR}/candles?interval=1d"),
        format!("/v1/pairs/{PAIR}/book?depth=1000"),
    ];
    let mut before = Vec::new();
    for p in &paths {
        before.push(h.http.json(p).await);
    }
    let ticker = h.http.json(&format!("/v1/pairs/{PAIR}/ticker")).await;
    h.stop().await;
    let h = Harness::start(dir.path(), FeedConfig::default()).await;
    for (p, b) in paths.iter().zip(&before) {
        let mut a = h.http.json(p).await;
        let mut b = b.clone();
        if p.contains("/book") {
            a["timestamp"] = Value::Null;
            b["timestamp"] = Value::Null;
        }
        assert_eq!(a, b, "{p}");
    }
    let t2 = h.http.json(&format!("/v1/pairs/{PAIR}/ticker")).await;
    for k in [
        "lastPrice",
        "high",
        "low",
        "baseVolume",
        "quoteVolume",
        "bestBid",
        "bestAsk",
    ] {
        assert_eq!(t2[k], ticker[k], "{k}");
    }
    // New trades continue the figures.
    h.run(limit(99_001, 1, Side::Sell, 100_000, 1, TimeInForce::Gtc))
        .await;
    h.run(limit(99_002, 2, Side::Buy, 100_000, 1, TimeInForce::Gtc))
        .await;
    let t3 = h.http.json(&format!("/v1/pairs/{PAIR}/ticker")).await;
    assert_eq!(
        units(t3["baseVolume"].as_str().unwrap()),
        units(ticker["baseVolume"].as_str().unwrap()) + 1
    );
    h.stop().await;
}

/// The server pings; a peer that does not answer is closed, one that reads stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peers_are_dropped_and_live_ones_kept() {
    let dir = tmp();
    let cfg = FeedConfig {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(800),
        ..FeedConfig::default()
    };
    let h = Harness::start(dir.path(), cfg).await;
    h.setup_market(1).await;
    let mut silent = h.ws().await;
    let live = h.ws().await;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let live_task = tokio::spawn(async move {
        let mut live = live;
        let mut pings = 0;
        loop {
            tokio::select! {
                m = live.next() => match m {
                    Some(Ok(Message::Ping(_))) => pings += 1,
                    Some(Ok(Message::Close(f))) => panic!("live peer closed: {f:?}"),
                    Some(Ok(_)) => {}
                    _ => panic!("live peer ended"),
                },
                _ = &mut stop_rx => return pings,
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(());
    assert!(live_task.await.unwrap() >= 5);
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), silent.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(f)))) => break Some(u16::from(f.code)),
            Some(Ok(_)) => {}
            _ => break None,
        }
    };
    assert_eq!(code, Some(1001));
    let (status, body) = h.http.get("/v1/ws").await;
    assert!(status >= 400, "{status}");
    assert!(body.contains("BAD_REQUEST"), "{body}");
    h.stop().await;
}

/// A busy connection gathers between writes for its write interval (here 1 s: one
/// connection, `max_writes_per_sec` 1), but a reply does not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_do_not_wait_for_the_write_interval() {
    let dir = tmp();
    let cfg = FeedConfig {
        max_writes_per_sec: 1,
        ..FeedConfig::default()
    };
    let h = Harness::start(dir.path(), cfg).await;
    h.setup_market(2).await;
    let mut ws = h.ws().await;
    send(
        &mut ws,
        json!({"op":"subscribe","id":1,"channels":[format!("trades:{PAIR}")]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["op"], "subscribed");
    let trade = |i: u64| {
        let h = &h;
        async move {
            h.sell_then_buy(i, (100_000, 1), (100_000, 1)).await;
        }
    };
    // The subscribe reply was the last write: this trade waits for the interval.
    trade(1).await;
    let start = std::time::Instant::now();
    send(&mut ws, json!({"op":"ping","id":2})).await;
    let m = next_json(&mut ws).await;
    assert_eq!(m["op"], "pong", "{m}");
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "pong after {:?}",
        start.elapsed()
    );
    // The pong went out with what was gathered; the next trade waits for the interval.
    let mut seen = 0;
    while seen < 1 {
        let m = next_json(&mut ws).await;
        if m["channel"] == format!("trades:{PAIR}") {
            seen += 1;
        }
    }
    trade(2).await;
    let start = std::time::Instant::now();
    let m = next_json(&mut ws).await;
    assert_eq!(m["channel"], format!("trades:{PAIR}"));
    assert!(
        start.elapsed() > Duration::from_millis(300),
        "a busy connection wrote again after {:?}",
        start.elapsed()
    );
    h.stop().await;
}

/// `Feed::ws_write_totals` counts the bytes every frame a client received took on the
/// wire, in at least one write and at most one write per frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_totals_count_what_clients_receive() {
    let dir = tmp();
    let h = Harness::start(dir.path(), FeedConfig::default()).await;
    h.setup_market(2).await;
    let before = h.feed.ws_write_totals();
    let mut ws = h.ws().await;
    send(
        &mut ws,
        json!({"op":"subscribe","id":1,"channels":[format!("trades:{PAIR}")]}),
    )
    .await;
    // A server text frame is a 2-byte header (4 from 126 bytes on) and the payload.
    let wire = |m: &Value| {
        let n = m.to_string().len();
        n + if n < 126 { 2 } else { 4 }
    };
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["op"], "subscribed");
    let mut frames = 1;
    let mut bytes = wire(&reply);
    for i in 0..5u64 {
        h.sell_then_buy(i, (100_000, 1), (100_000, 1)).await;
    }
    for _ in 0..5 {
        let m = next_json(&mut ws).await;
        assert_eq!(m["channel"], format!("trades:{PAIR}"), "{m}");
        frames += 1;
        bytes += wire(&m);
    }
    let after = h.feed.ws_write_totals();
    assert_eq!(after.bytes - before.bytes, bytes as u64);
    let writes = after.writes - before.writes;
    assert!((1..=frames).contains(&writes), "{writes} writes");
    h.stop().await;
}

/// A client that reads slowly through a small receive buffer makes the server's writes stop
/// short, mid-frame: every trade still arrives whole, in order, without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_writes_keep_frames_whole() {
    let dir = tmp();
    // Room for more than the kernel's socket buffers hold (4 MiB send buffer at most here).
    let cfg = FeedConfig {
        queue_bound: 65_536,
        channel_capacity: 65_536,
        ..FeedConfig::default()
    };
    let h = Harness::start(dir.path(), cfg).await;
    h.setup_market(2).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    let tcp = sock.connect(h.addr).await.unwrap();
    let tcp = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/v1/ws", h.addr), tcp)
        .await
        .unwrap();
    send(
        &mut ws,
        json!({"op":"subscribe","id":1,"channels":[format!("trades:{PAIR}")]}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["op"], "subscribed");
    let n = 40_000u64;
    // In groups, so that the pipeline's rings never run full.
    for group in 0..n / 500 {
        let mut pending = Vec::new();
        for i in group * 500..(group + 1) * 500 {
            let sell = limit(10 * i + 1, 1, Side::Sell, 100_000, 1, TimeInForce::Gtc);
            let buy = limit(10 * i + 2, 2, Side::Buy, 100_000, 1, TimeInForce::Gtc);
            pending.push(h.submit(sell).await);
            pending.push(h.submit(buy).await);
        }
        for p in pending {
            p.await.unwrap();
        }
    }
    // Nothing read yet: the socket fills and the server's last write stopped short.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut last = 0;
    while last < n {
        let m = next_json(&mut ws).await;
        let seq = m["seq"].as_u64().unwrap();
        assert_eq!(seq, last + 1, "{m}");
        assert_eq!(m["data"]["amount"], "0.0001");
        last = seq;
        if seq % 1000 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    h.stop().await;
}
