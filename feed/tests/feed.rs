//! Black-box tests of the feed: the real pipeline, the router on a port-0 server, real
//! WebSocket clients.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::*;
use engine::{AccountId, Command, Event, Side, TimeInForce};
use feed::{FeedConfig, PrivateChannel};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// open, high, low, close, base, quote, trades
type Agg = (u128, u128, u128, u128, u128, u128, u64);

/// Random orders and cancels from accounts 1..=8, seeded.
struct RandomOrders {
    rng: StdRng,
    open: Vec<(u64, u32)>,
    price_steps: u64,
    ioc: bool,
}

impl RandomOrders {
    fn new(seed: u64, price_steps: u64, ioc: bool) -> RandomOrders {
        RandomOrders {
            rng: StdRng::seed_from_u64(seed),
            open: Vec::new(),
            price_steps,
            ioc,
        }
    }

    /// One in four (while any is open) a cancel of an open order; else limit order `id` at
    /// one of `price_steps` prices 0.25 apart from 1000.00, 1 to 4999 lots, GTC (with `ioc`,
    /// one in ten IOC).
    fn next(&mut self, id: u64) -> Command {
        let rng = &mut self.rng;
        if !self.open.is_empty() && rng.random_range(0..4) == 0 {
            let (oid, acct) = self.open.swap_remove(rng.random_range(0..self.open.len()));
            return cancel(oid, acct);
        }
        let side = if rng.random_bool(0.5) {
            Side::Buy
        } else {
            Side::Sell
        };
        let price = 100_000 + rng.random_range(0..self.price_steps) * 25;
        let lots = rng.random_range(1..5000u64);
        let acct = rng.random_range(1..=8u32);
        let tif = if self.ioc && rng.random_range(0..10) == 0 {
            TimeInForce::Ioc
        } else {
            TimeInForce::Gtc
        };
        self.open.push((id, acct));
        limit(id, acct, side, price, lots, tif)
    }
}

/// The next message a [`reader`] forwarded, within 20 s.
async fn next_read(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("stream stalled")
        .expect("stream ended")
}

/// Random orders and cancels: the WS client's book equals the REST book at the same seq,
/// every checksum matches, no seq gap; ticker, trades and candles match the trades.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_ticker_trades_candles_agree_with_the_engine() {
    // One book update per batch: commands run one at a time here, so one per command.
    let config = FeedConfig {
        book_interval: Duration::ZERO,
        ..FeedConfig::default()
    };
    let (_dir, h) = Harness::with_market(config, 8).await;
    let mut ws = h.ws().await;
    let channels = ["book", "trades", "ticker", "candles:1m"].map(|c| format!("{c}:{PAIR}"));
    subscribed(&mut ws, 1, &channels).await;
    let mut rx = reader(ws);

    let mut orders = RandomOrders::new(7, 40, true);
    let mut trades = Vec::new();
    let n = 3000u64;
    for i in 0..n {
        let cmd = orders.next(1000 + i);
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
    let mut view = BookView::default();
    let mut ws_trades: Vec<Value> = Vec::new();
    let mut trade_seq = None::<u64>;
    let mut last_ticker = Value::Null;
    let mut candles: HashMap<String, Value> = HashMap::new();
    // Ticker and candle messages: the last ticker, the last candle of each minute.
    let mut keep = |m: &Value| {
        let ch = m["channel"].as_str().unwrap_or_default();
        if ch.starts_with("ticker:") {
            last_ticker = m["data"].clone();
        } else if ch.starts_with("candles:") {
            candles.insert(
                m["data"]["openTime"].as_str().unwrap().to_string(),
                m["data"].clone(),
            );
        }
    };
    let mut checks = 0;
    while view.seq != Some(target_seq) || ws_trades.len() < trades.len() {
        let m = next_read(&mut rx).await;
        let ch = m["channel"].as_str().unwrap_or_default().to_string();
        let seq = m["seq"].as_u64().unwrap();
        if ch.starts_with("book:") {
            let resync = view.seq.is_some();
            if view.apply(&m) {
                assert!(!resync, "unexpected resync");
            }
            checks += 1;
        } else if ch.starts_with("trades:") {
            if let Some(s) = trade_seq {
                assert_eq!(seq, s + 1, "trades seq gap");
            }
            trade_seq = Some(seq);
            ws_trades.push(m["data"].clone());
        } else {
            keep(&m);
        }
    }
    assert!(checks > 1000);
    // Channels are independent streams: let the last ticker arrive.
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        keep(&m);
    }
    view.assert_is(&rest_book);

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
    let config = FeedConfig {
        book_interval: Duration::from_millis(3),
        ..FeedConfig::default()
    };
    let (_dir, h) = Harness::with_market(config, 8).await;
    let mut ws = h.ws().await;
    subscribed(&mut ws, 1, &[format!("book:{PAIR}")]).await;
    let mut rx = reader(ws);

    let mut orders = RandomOrders::new(11, 30, false);
    let mut rest_books: BTreeMap<u64, Value> = BTreeMap::new();
    let mut level_commands = 0u64;
    let mut id = 1000u64;
    for _round in 0..60 {
        let mut pending = Vec::new();
        for k in 0..40 {
            id += 1;
            let cmd = orders.next(id);
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

    let mut view = BookView::default();
    let mut updates = 0u64;
    let mut compared = 0;
    while view.seq != Some(last_seq) {
        let m = next_read(&mut rx).await;
        let resync = view.seq.is_some();
        if view.apply(&m) {
            assert!(!resync, "unexpected resync");
        } else {
            let levels = m["data"]["bids"].as_array().unwrap().len()
                + m["data"]["asks"].as_array().unwrap().len();
            assert!(levels > 0, "an update without levels at {}", m["seq"]);
            updates += 1;
        }
        if let Some(rest) = rest_books.get(&view.seq.unwrap()) {
            view.assert_is(rest);
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
    let (_dir, h) = Harness::with_market(FeedConfig::default(), 1).await;
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
        // A range that ends before it starts is a mistake, not an empty market.
        (
            "/v1/pairs/BTC_SEK/candles?interval=1m&start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z",
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
    let cfg = FeedConfig {
        max_subscriptions: 3,
        ..FeedConfig::default()
    };
    let (_dir, h) = Harness::with_market(cfg, 1).await;
    let mut ws = h.ws().await;
    send_raw(&mut ws, "{not json").await;
    assert_error(&next_json(&mut ws).await, Value::Null, "BAD_REQUEST");
    let cases: Vec<(Value, &str)> = vec![
        (json!({"op":"dance","id":5}), "UNKNOWN_OP"),
        (subscribe(6, &["ticker:NOPE"]), "UNKNOWN_CHANNEL"),
        (subscribe(7, &["candles:2h:BTC_SEK"]), "UNKNOWN_CHANNEL"),
        (subscribe(8, &["orders"]), "UNAUTHORIZED"),
        (json!({"op":"auth","id":9,"token":"x"}), "UNAUTHORIZED"),
        (
            subscribe(
                10,
                &[
                    "ticker:BTC_SEK",
                    "trades:BTC_SEK",
                    "candles:1m:BTC_SEK",
                    "candles:5m:BTC_SEK",
                ],
            ),
            "LIMIT_EXCEEDED",
        ),
    ];
    assert_errors(&mut ws, cases).await;
    subscribed(&mut ws, 11, &["trades:BTC_SEK"]).await;
    unsubscribed(&mut ws, 12, &["trades:BTC_SEK"]).await;
    nothing_pending(&mut ws, "p").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_channels_only_carry_the_account() {
    let (_dir, h) = Harness::with_market(FeedConfig::default(), 2).await;
    h.accept_tokens(&[("tok-1", 1), ("tok-2", 2)]);
    let mut a = h.ws().await;
    let mut b = h.ws().await;
    for (ws, tok) in [(&mut a, "tok-1"), (&mut b, "tok-2")] {
        authenticated(ws, 1, tok).await;
        subscribed(ws, 2, &["orders", "fills", "wallet"]).await;
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
    nothing_pending(&mut b, "b saw no other account's data").await;
    h.stop().await;
}

/// A client that never reads does not delay a fast one, and is closed with 1008 once its
/// socket is full and its backlog past the bound (a backlog alone is not slowness: see
/// `tests/tests/ws_bursts.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_and_does_not_delay_others() {
    let cfg = FeedConfig {
        queue_bound: 256,
        channel_capacity: 8192,
        stall_timeout: Duration::from_secs(1),
        ..FeedConfig::default()
    };
    let (_dir, h) = Harness::with_market(cfg, 2).await;
    // The slow client: a tiny receive buffer, subscribed to everything, never reads.
    let mut slow = h.ws_with_recv_buffer(4096).await;
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
    subscribed(&mut fast, 1, &[format!("trades:{PAIR}")]).await;
    let mut fast = reader(fast);
    let is_trade = |m: &Value| {
        m["channel"]
            .as_str()
            .is_some_and(|c| c.starts_with("trades:"))
    };

    // Trades flow until the slow client is closed (its socket fills: the kernel's buffers
    // take a few MB first), at least 3000 and at most 30,000.
    let start = std::time::Instant::now();
    let mut seen = 0u64;
    let mut n = 0u64;
    while n < 3000 || (h.feed.connections() == 2 && n < 30_000) {
        h.sell_then_buy(n, (100_000 + n % 7, 5), (100_010, 5)).await;
        n += 1;
        while let Ok(m) = fast.try_recv() {
            if is_trade(&m) {
                seen += 1;
            }
        }
    }
    while seen < n {
        let m = tokio::time::timeout(Duration::from_secs(5), fast.recv())
            .await
            .expect("fast client delayed")
            .unwrap();
        if is_trade(&m) {
            seen += 1;
        }
    }
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    // Now read the slow client: it ends with a 1008 close.
    assert_closes_with(&mut slow, 1008, Duration::from_secs(20)).await;
    h.stop().await;
}

/// Restart on the same data dir keeps the 24 h figures, trades and candles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_ticker_trades_and_candles() {
    restart_keeps_the_market_data(|_| Vec::new()).await;
}

/// A `marketdata.sqlite` that is not a database (4 KiB of 0xAB) no longer stops the start
/// ("market data store: file is not a database"): it is set aside
/// (`marketdata.sqlite.damaged-<secs>`, its bytes kept) and a new store is rebuilt by the
/// journal's replay, with the same trades, candles and 24 h figures as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_market_data_store_is_set_aside_and_rebuilt_from_the_journal() {
    restart_keeps_the_market_data(|dir| {
        let db = dir.join("marketdata.sqlite");
        std::fs::write(&db, [0xAB; 4096]).unwrap();
        vec![vec![0xAB; 4096]]
    })
    .await;
}

/// The rebuild marker `marketdata.sqlite.rebuild` (left by a store writer that found the
/// file damaged, or made by hand) has the next start set the sound store aside, with the
/// marker beside it as `.reason`, and rebuild it from the journal: the same market data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebuild_marker_sets_the_market_data_store_aside_at_the_next_start() {
    restart_keeps_the_market_data(|dir| {
        let db = dir.join("marketdata.sqlite");
        std::fs::write(dir.join("marketdata.sqlite.rebuild"), b"by hand").unwrap();
        vec![std::fs::read(&db).unwrap(), b"by hand".to_vec()]
    })
    .await;
}

/// Trades on a market, a stop, `damage` done to the stopped data dir (it returns the
/// contents expected of the set-aside copy and, when there is one, of its `.reason`; none
/// when nothing is to be set aside), a restart: the market data read back is what it was.
async fn restart_keeps_the_market_data(damage: impl FnOnce(&std::path::Path) -> Vec<Vec<u8>>) {
    let (dir, h) = Harness::with_market(FeedConfig::default(), 2).await;
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
    let aside_expected = damage(dir.path());
    let rebuilt = !aside_expected.is_empty();
    let h = Harness::start(dir.path(), FeedConfig::default()).await;
    let mut aside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("marketdata.sqlite.damaged-"))
        .collect();
    aside.sort();
    if let [main, rest @ ..] = &aside_expected[..] {
        assert_eq!(&std::fs::read(dir.path().join(&aside[0])).unwrap(), main);
        match rest {
            [] => assert_eq!(aside.len(), 1, "{aside:?}"),
            [reason] => {
                assert_eq!(aside.len(), 2, "{aside:?}");
                assert_eq!(aside[1], format!("{}.reason", aside[0]));
                assert_eq!(&std::fs::read(dir.path().join(&aside[1])).unwrap(), reason);
            }
            _ => unreachable!(),
        }
        assert!(!dir.path().join("marketdata.sqlite.rebuild").exists());
    } else {
        assert_eq!(aside, Vec::<String>::new());
    }
    for (p, b) in paths.iter().zip(&before) {
        let mut a = h.http.json(p).await;
        let mut b = b.clone();
        if p.contains("/book") {
            a["timestamp"] = Value::Null;
            b["timestamp"] = Value::Null;
            if rebuilt {
                // The book's sequence is the feed's own count of published changes, kept
                // only in the store: a new store starts from the engine's count of
                // book-changing commands, which is at least as many (so a seq never names
                // two different books), not the same number.
                assert!(a["sequence"].as_u64() >= b["sequence"].as_u64(), "{a} {b}");
                a["sequence"] = Value::Null;
                b["sequence"] = Value::Null;
            }
        }
        assert_eq!(a, b, "{p}");
    }
    let t2 = h.http.json(&format!("/v1/pairs/{PAIR}/ticker")).await;
    assert_fields_eq(&t2, &ticker, &TICKER_FIGURES);
    // New trades continue the figures.
    h.sell_then_buy(9_900, (100_000, 1), (100_000, 1)).await;
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
    let cfg = FeedConfig {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(800),
        ..FeedConfig::default()
    };
    let (_dir, h) = Harness::with_market(cfg, 1).await;
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
    assert_closes_with(&mut silent, 1001, Duration::from_secs(5)).await;
    // Still serving: a GET without an upgrade is refused with a problem.
    let (status, body) = h.http.get("/v1/ws").await;
    assert_eq!(status, 426, "{body}");
    assert!(body.contains("VALIDATION_FAILED"), "{body}");
    h.stop().await;
}

/// A busy connection gathers between writes for its write interval (here 1 s: one
/// connection, `max_writes_per_sec` 1), but a reply does not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_do_not_wait_for_the_write_interval() {
    let cfg = FeedConfig {
        max_writes_per_sec: 1,
        ..FeedConfig::default()
    };
    let (_dir, h) = Harness::with_market(cfg, 2).await;
    let mut ws = h.ws().await;
    subscribed(&mut ws, 1, &[format!("trades:{PAIR}")]).await;
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
    let (_dir, h) = Harness::with_market(FeedConfig::default(), 2).await;
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
    // Room for more than the kernel's socket buffers hold (4 MiB send buffer at most here).
    let cfg = FeedConfig {
        queue_bound: 65_536,
        channel_capacity: 65_536,
        ..FeedConfig::default()
    };
    let (_dir, h) = Harness::with_market(cfg, 2).await;
    let mut ws = h.ws_with_recv_buffer(2048).await;
    subscribed(&mut ws, 1, &[format!("trades:{PAIR}")]).await;
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

/// Candles older than what the feed keeps in memory (`candles_retained` per pair and
/// interval, the newest) are read from the store, where every candle stays: the list is
/// that of every interval that had trades, for any range. The REST list answered from
/// memory alone, so a range before the oldest candle in memory came back empty, as if
/// nothing had traded then (with the default 10,000, 1m candles older than about a week).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candles_older_than_memory_come_from_the_store() {
    use feed::candles::{Candle, Interval};
    let dir = tmp();
    let t0 = 1_700_000_040_000i64 / 60_000 * 60_000;
    {
        let path = dir.path().join("marketdata.sqlite");
        let mut store = feed::store::Store::open(&path).unwrap();
        let candles: Vec<_> = (0..5u64)
            .map(|i| {
                let mut c = Candle::new(t0 + i as i64 * 60_000, 100 + i);
                c.add(100 + i, 1, 1);
                (0u16, Interval::M1, c)
            })
            .collect();
        store.commit(&[], &candles, &[], (0, 0)).unwrap();
    }
    let config = FeedConfig {
        candles_retained: 2,
        ..FeedConfig::default()
    };
    let h = Harness::start(dir.path(), config).await;
    h.setup_market(1).await;
    let opens = |v: Value| -> Vec<String> {
        let list = v.as_array().unwrap();
        list.iter()
            .map(|c| c["open"].as_str().unwrap().to_string())
            .collect()
    };
    let url = |q: &str| format!("/v1/pairs/{PAIR}/candles?interval=1m{q}");
    let m = |i: i64| t0 + i * 60_000;
    for (q, want) in [
        (String::new(), vec!["1.00", "1.01", "1.02", "1.03", "1.04"]),
        ("&limit=3".to_string(), vec!["1.02", "1.03", "1.04"]),
        ("&limit=4".to_string(), vec!["1.01", "1.02", "1.03", "1.04"]),
        (format!("&start={}&limit=2", m(1)), vec!["1.01", "1.02"]),
        (
            format!("&start={}&limit=3", m(2)),
            vec!["1.02", "1.03", "1.04"],
        ),
        (
            format!("&start={}&end={}", m(0), m(3)),
            vec!["1.00", "1.01", "1.02"],
        ),
        (format!("&end={}", m(2)), vec!["1.00", "1.01"]),
        (format!("&end={}&limit=1", m(4)), vec!["1.03"]),
        (format!("&start={}", m(4)), vec!["1.04"]),
    ] {
        assert_eq!(opens(h.http.json(&url(&q)).await), want, "{q}");
    }
    h.stop().await;
}

/// After a restart the tickers start with the 24 h window as of now: a server down for a
/// day does not hand a new ticker subscriber the volume, high and low of trades that have
/// left the window. The channels' first ticker held them until the feed clock's first tick
/// (up to a second) while the REST ticker already said "0".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickers_after_a_restart_leave_out_trades_older_than_a_day() {
    let (dir, h) = Harness::with_market(FeedConfig::default(), 2).await;
    h.sell_then_buy(1, (100_000, 3), (100_000, 3)).await;
    let t = h.http.json(&format!("/v1/pairs/{PAIR}/ticker")).await;
    assert_eq!(t["baseVolume"], "0.0003");
    h.stop().await;
    // The same trade two days before the last batch (batches without trades came since)
    // and then, the batches too, as if the server had been down for two days.
    for sql in [
        "UPDATE trades SET ts_ns = ts_ns - 2 * 86400000000000",
        "UPDATE meta SET value = value - 2 * 86400000000000 WHERE key = 'last_ts_ns'",
    ] {
        let db = rusqlite::Connection::open(dir.path().join("marketdata.sqlite")).unwrap();
        db.execute(sql, []).unwrap();
        drop(db);
        let h = Harness::start(dir.path(), FeedConfig::default()).await;
        let mut ws = h.ws().await;
        subscribed(&mut ws, 1, &[format!("ticker:{PAIR}")]).await;
        let first = next_json(&mut ws).await;
        assert_eq!(first["data"]["baseVolume"], "0", "{sql}: {first}");
        assert_eq!(first["data"]["high"], Value::Null, "{sql}: {first}");
        assert_eq!(first["data"]["lastPrice"], "1000.00", "{sql}: {first}");
        h.stop().await;
    }
}
