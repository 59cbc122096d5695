//! Test harness: the real pipeline on a temp dir, the feed's router on 127.0.0.1:0, and
//! WebSocket clients (tokio-tungstenite).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use engine::pipeline::{Durability, Pipeline, PipelineConfig, Processed};
use engine::{
    AccountId, Amount, ClientOrderId, Command, CurrencyId, CurrencySpec, Event, OrderId, PairId,
    PairSpec, PairStatus, PlaceOrder, Price, RequestId, RequestSpec, Side, TimeInForce,
};
use feed::{AuthRefusal, Feed, FeedConfig, Grant, ReadScopes, checksum_of};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a reply reported.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seq: u64,
    pub timestamp_ns: i64,
    pub events: Vec<Event>,
}

pub struct Harness {
    pub pipeline: Option<Arc<Pipeline>>,
    pub feed: Feed,
    pub addr: SocketAddr,
    pub server: tokio::task::JoinHandle<()>,
    pub http: reqwest_lite::Client,
}

/// A tiny HTTP GET over tokio (no extra client crate).
pub mod reqwest_lite {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Clone, Copy, Debug)]
    pub struct Client(pub SocketAddr);

    impl Client {
        /// Returns (status, body).
        pub async fn get(&self, path: &str) -> (u16, String) {
            let mut s = tokio::net::TcpStream::connect(self.0).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.unwrap();
            let text = String::from_utf8(buf).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
            let body = if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked")
            {
                dechunk(body)
            } else {
                body.to_string()
            };
            (status, body)
        }

        pub async fn json(&self, path: &str) -> serde_json::Value {
            let (status, body) = self.get(path).await;
            assert_eq!(status, 200, "{path}: {body}");
            serde_json::from_str(&body).unwrap()
        }
    }

    fn dechunk(mut s: &str) -> String {
        let mut out = String::new();
        loop {
            let (len, rest) = s.split_once("\r\n").unwrap();
            let n = usize::from_str_radix(len.trim(), 16).unwrap();
            if n == 0 {
                return out;
            }
            out.push_str(&rest[..n]);
            s = &rest[n + 2..];
        }
    }
}

pub const PAIR: &str = "BTC_SEK";

impl Harness {
    pub async fn start(dir: &Path, config: FeedConfig) -> Harness {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Harness::serve(dir, config, tcp).await
    }

    /// Like [`Harness::start`], but the listener (and so every accepted connection) has a
    /// send buffer of `send_buffer` bytes, fixed (no autotuning): a client that stops
    /// reading blocks the server's writes after a few KiB rather than a few MiB.
    pub async fn start_with_send_buffer(
        dir: &Path,
        config: FeedConfig,
        send_buffer: u32,
    ) -> Harness {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_send_buffer_size(send_buffer).unwrap();
        sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        Harness::serve(dir, config, sock.listen(1024).unwrap()).await
    }

    /// A temp dir, the harness on it and [`Harness::setup_market`] with `accounts` funded.
    pub async fn with_market(config: FeedConfig, accounts: u32) -> (tempfile::TempDir, Harness) {
        let dir = tmp();
        let h = Harness::start(dir.path(), config).await;
        h.setup_market(accounts).await;
        (dir, h)
    }

    /// The pipeline and feed on `dir`, the router served on `tcp`.
    async fn serve(dir: &Path, config: FeedConfig, tcp: tokio::net::TcpListener) -> Harness {
        let feed = Feed::open(config, dir).unwrap();
        let mut pc = PipelineConfig::new(dir.join("engine"));
        pc.durability = Durability::None;
        let listener = feed.listener();
        let pipeline = tokio::task::spawn_blocking(move || Pipeline::start(pc, listener))
            .await
            .unwrap()
            .unwrap();
        let addr = tcp.local_addr().unwrap();
        let router = feed.router();
        let server = tokio::spawn(async move {
            axum::serve(tcp, router).await.unwrap();
        });
        Harness {
            pipeline: Some(Arc::new(pipeline)),
            feed,
            addr,
            server,
            http: reqwest_lite::Client(addr),
        }
    }

    /// Tokens `tokens` authenticate as their accounts, with every read scope; any other
    /// token is refused.
    pub fn accept_tokens(&self, tokens: &'static [(&'static str, u32)]) {
        self.feed.set_authenticator(Arc::new(move |t: &str| {
            tokens
                .iter()
                .find(|(tok, _)| *tok == t)
                .map(|(_, a)| Grant {
                    account: AccountId(*a),
                    scopes: ReadScopes {
                        orders: true,
                        wallet: true,
                    },
                    expires_ns: i64::MAX,
                })
                .ok_or(AuthRefusal::Invalid)
        }));
    }

    pub async fn stop(mut self) {
        self.server.abort();
        let p = self.pipeline.take().unwrap();
        let p = Arc::try_unwrap(p).unwrap();
        tokio::task::spawn_blocking(move || p.shutdown().map(|_| ()))
            .await
            .unwrap()
            .unwrap();
    }

    /// Submits and waits for the outcome.
    pub async fn run(&self, cmd: Command) -> Outcome {
        self.submit(cmd).await.await.unwrap()
    }

    /// Account 1 sells `sell_lots` at `sell_price` (order id `10 i + 1`), then account 2 buys
    /// `buy_lots` at `buy_price` (order id `10 i + 2`), both GTC: a trade when the prices cross.
    pub async fn sell_then_buy(
        &self,
        i: u64,
        (sell_price, sell_lots): (u64, u64),
        (buy_price, buy_lots): (u64, u64),
    ) {
        let sell = limit(
            10 * i + 1,
            1,
            Side::Sell,
            sell_price,
            sell_lots,
            TimeInForce::Gtc,
        );
        self.run(sell).await;
        let buy = limit(
            10 * i + 2,
            2,
            Side::Buy,
            buy_price,
            buy_lots,
            TimeInForce::Gtc,
        );
        self.run(buy).await;
    }

    /// Submits; the receiver yields the outcome.
    pub async fn submit(&self, cmd: Command) -> tokio::sync::oneshot::Receiver<Outcome> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply: engine::pipeline::Reply = Box::new(move |p: &Processed<'_>| {
            let _ = tx.send(Outcome {
                seq: p.seq,
                timestamp_ns: p.timestamp_ns,
                events: p.events.to_vec(),
            });
        });
        let pipeline = self.pipeline.as_ref().unwrap();
        pipeline
            .submit(cmd, reply)
            .unwrap_or_else(|e| panic!("submit: {e}"));
        rx
    }

    /// BTC (8), SEK (2), BTC_SEK (price 2 decimals, amount 4), accounts 1..=n funded.
    pub async fn setup_market(&self, accounts: u32) {
        for (code, d) in [("BTC", 8u8), ("SEK", 2u8)] {
            self.run(Command::AddCurrency(Box::new(CurrencySpec {
                code: code.into(),
                display_name: code.into(),
                decimals: d,
            })))
            .await;
        }
        let out = self
            .run(Command::AddPair(PairSpec {
                base: CurrencyId(0),
                quote: CurrencyId(1),
                price_decimals: 2,
                amount_decimals: 4,
                min_amount: Amount(1),
                maker_fee_ppm: 1000,
                taker_fee_ppm: 2000,
                status: PairStatus::Active,
            }))
            .await;
        assert!(matches!(out.events[0], Event::PairAdded { .. }), "{out:?}");
        self.fund(1..=accounts).await;
    }

    pub async fn fund(&self, accounts: std::ops::RangeInclusive<u32>) {
        for a in accounts {
            for (c, amount) in [(0u16, 1_000_000_000_000u64), (1, 100_000_000_000_000)] {
                self.run(Command::DepositCredited(Box::new(RequestSpec {
                    request: RequestId(u64::from(a) * 10 + u64::from(c)),
                    account: AccountId(a),
                    currency: CurrencyId(c),
                    amount,
                    external_id: format!("d{a}-{c}"),
                    destination: String::new(),
                })))
                .await;
            }
        }
    }

    pub async fn ws(&self) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", self.addr))
            .await
            .unwrap();
        ws
    }

    /// A client with a receive buffer of `recv_buffer` bytes: the server's writes block soon
    /// when it does not read.
    pub async fn ws_with_recv_buffer(&self, recv_buffer: u32) -> Ws {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(recv_buffer).unwrap();
        let tcp = MaybeTlsStream::Plain(sock.connect(self.addr).await.unwrap());
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://{}/v1/ws", self.addr), tcp)
            .await
            .unwrap();
        ws
    }
}

pub fn limit(
    id: u64,
    account: u32,
    side: Side,
    price: u64,
    lots: u64,
    tif: TimeInForce,
) -> Command {
    Command::Place(
        PlaceOrder::limit(
            OrderId(id),
            AccountId(account),
            PairId(0),
            side,
            Price(price),
            Amount(lots),
        )
        .with_tif(tif)
        .with_client_id(ClientOrderId::parse(&format!("c{id}")).unwrap()),
    )
}

pub fn cancel(id: u64, account: u32) -> Command {
    Command::Cancel {
        account: AccountId(account),
        order: OrderId(id),
    }
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

pub async fn send_raw(ws: &mut Ws, s: &str) {
    ws.send(Message::text(s.to_string())).await.unwrap();
}

/// The next JSON text message (pings skipped), within 10 s.
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended")
            .expect("ws error");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

pub fn subscribe<C: Serialize>(id: i64, channels: &[C]) -> Value {
    json!({"op":"subscribe","id":id,"channels":channels})
}

/// Subscribes and asserts the reply: exactly `subscribed` with the id and the channels.
pub async fn subscribed<C: Serialize>(ws: &mut Ws, id: i64, channels: &[C]) {
    send(ws, subscribe(id, channels)).await;
    let want = json!({"op":"subscribed","id":id,"channels":channels});
    assert_eq!(next_json(ws).await, want);
}

/// Unsubscribes and asserts the reply: exactly `unsubscribed` with the id and the channels.
pub async fn unsubscribed(ws: &mut Ws, id: impl Serialize, channels: &[&str]) {
    let id = json!(id);
    send(ws, json!({"op":"unsubscribe","id":id,"channels":channels})).await;
    let want = json!({"op":"unsubscribed","id":id,"channels":channels});
    assert_eq!(next_json(ws).await, want);
}

/// Authenticates and asserts the reply: exactly `authenticated` with the id and the
/// token's expiry.
pub async fn authenticated(ws: &mut Ws, id: impl Serialize, token: &str) {
    let id = json!(id);
    send(ws, json!({"op":"auth","id":id,"token":token})).await;
    let mut reply = next_json(ws).await;
    let at = reply
        .as_object_mut()
        .and_then(|o| o.remove("expiresAt"))
        .unwrap_or_else(|| panic!("no expiresAt in {reply}"));
    assert!(
        at.as_str().and_then(feed::views::parse_time_ms).is_some(),
        "expiresAt {at}"
    );
    assert_eq!(reply, json!({"op":"authenticated","id":id}));
}

/// Sends a ping and asserts the very next message is its pong: nothing else was queued.
pub async fn nothing_pending(ws: &mut Ws, id: &str) {
    send(ws, json!({"op":"ping","id":id})).await;
    let m = next_json(ws).await;
    assert_eq!(
        m,
        json!({"op":"pong","id":id}),
        "unexpected message before pong"
    );
}

/// An error reply: exactly `op`, `id`, `code`, `message` (a non-empty string).
pub fn assert_error(m: &Value, id: Value, code: &str) {
    let obj = m
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {m}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "id", "message", "op"], "{m}");
    assert_eq!(m["op"], "error", "{m}");
    assert_eq!(m["id"], id, "{m}");
    assert_eq!(m["code"], code, "{m}");
    assert!(m["message"].as_str().is_some_and(|s| !s.is_empty()), "{m}");
}

/// Sends each request and asserts its reply is the error `code` with the request's id.
pub async fn assert_errors(ws: &mut Ws, cases: Vec<(Value, &str)>) {
    for (msg, code) in cases {
        let id = msg["id"].clone();
        send(ws, msg).await;
        assert_error(&next_json(ws).await, id, code);
    }
}

/// Reads until the server closes, within `within`, and asserts it closed with `code`.
pub async fn assert_closes_with(ws: &mut Ws, code: u16, within: Duration) {
    assert_eq!(close_code(ws, within).await, Some(code));
}

/// Reads until the server closes; the close code (None: the stream ended without one).
async fn close_code(ws: &mut Ws, within: Duration) -> Option<u16> {
    tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => return Some(u16::from(f.code)),
                Some(Ok(Message::Close(None))) => return None,
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("the server did not close")
}

/// Asserts `got[k] == want[k]` for every key.
pub fn assert_fields_eq(got: &Value, want: &Value, keys: &[&str]) {
    for k in keys {
        assert_eq!(got[k], want[k], "{k}");
    }
}

/// The ticker's figures (all but `pair` and `timestamp`).
pub const TICKER_FIGURES: [&str; 9] = [
    "lastPrice",
    "high",
    "low",
    "baseVolume",
    "quoteVolume",
    "bestBid",
    "bestBidAmount",
    "bestAsk",
    "bestAskAmount",
];

/// One side of a book: price units -> (price, amount) as sent.
pub type Levels = BTreeMap<u128, (String, String)>;

/// Applies levels as sent (absolute amounts, "0" removes).
pub fn apply_levels(side: &mut Levels, levels: &Value) {
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

/// The Kraken checksum written out independently: top 10 asks (lowest first) then top 10
/// bids (highest first), price then amount, '.' removed and leading zeros stripped.
pub fn kraken(asks: &[(&str, &str)], bids: &[(&str, &str)]) -> u32 {
    let strip = |x: &str| x.replace('.', "").trim_start_matches('0').to_string();
    let mut s = String::new();
    for (p, a) in asks.iter().take(10).chain(bids.iter().take(10)) {
        s += &strip(p);
        s += &strip(a);
    }
    crc32fast::hash(s.as_bytes())
}

/// A book client: the book as the `book:` channel built it, and the last seq.
#[derive(Default)]
pub struct BookView {
    pub bids: Levels,
    pub asks: Levels,
    pub seq: Option<u64>,
}

impl BookView {
    /// Applies one `book:` message: a snapshot replaces the book, an update must be the
    /// next seq; the checksum must match the book after it (the feed's function and
    /// [`kraken`]). Returns whether it was a snapshot.
    pub fn apply(&mut self, m: &Value) -> bool {
        let seq = m["seq"].as_u64().unwrap();
        let snapshot = match m["type"].as_str().unwrap() {
            "snapshot" => {
                self.bids.clear();
                self.asks.clear();
                true
            }
            "update" => {
                assert_eq!(Some(seq), self.seq.map(|s| s + 1), "book seq gap");
                false
            }
            t => panic!("type {t}"),
        };
        apply_levels(&mut self.bids, &m["data"]["bids"]);
        apply_levels(&mut self.asks, &m["data"]["asks"]);
        self.seq = Some(seq);
        let asks: Vec<(&str, &str)> = self.asks.values().take(10).map(as_strs).collect();
        let bids: Vec<(&str, &str)> = self.bids.values().rev().take(10).map(as_strs).collect();
        let owned = |v: &[(&str, &str)]| -> Vec<[String; 2]> {
            v.iter()
                .map(|(p, a)| [p.to_string(), a.to_string()])
                .collect()
        };
        let c = m["checksum"].as_u64().expect("checksum");
        let feeds = checksum_of(&owned(&asks), &owned(&bids));
        assert_eq!(c, u64::from(feeds), "checksum at {seq}");
        assert_eq!(c, u64::from(kraken(&asks, &bids)), "checksum at {seq}");
        snapshot
    }

    /// Asserts the book is the REST book `rest` (every level, in order).
    pub fn assert_is(&self, rest: &Value) {
        let bids: Vec<Value> = self
            .bids
            .values()
            .rev()
            .map(|(p, a)| json!([p, a]))
            .collect();
        let asks: Vec<Value> = self.asks.values().map(|(p, a)| json!([p, a])).collect();
        assert_eq!(Value::Array(bids), rest["bids"], "bids at {:?}", self.seq);
        assert_eq!(Value::Array(asks), rest["asks"], "asks at {:?}", self.seq);
    }
}

fn as_strs((p, a): &(String, String)) -> (&str, &str) {
    (p, a)
}

/// Spawns a reader that forwards every JSON message to a channel.
pub fn reader(mut ws: Ws) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m
                && tx
                    .send(serde_json::from_str::<Value>(t.as_str()).unwrap())
                    .is_err()
            {
                return;
            }
        }
    });
    rx
}

/// "310438.36" -> 31043836 (fixed decimals).
pub fn units(s: &str) -> u128 {
    s.replace('.', "").parse().unwrap()
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}
