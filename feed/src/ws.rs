//! `GET /v1/ws`: subscriptions to the public channels and the account's private channels.
//!
//! Per connection, two tasks:
//! - the connection task reads client ops and pulls from its channels' broadcast receivers
//!   into a bounded queue (`try_send` only: it never waits for the socket);
//! - the writer task drains the queue into the socket.
//!
//! When the queue is full (the client reads too slowly): a ticker is conflated (only the
//! latest is kept and sent when there is room), a book channel drops its updates and is
//! resent as a fresh snapshot when there is room, and a channel that cannot lose messages
//! (trades, candles, private) closes the connection with 1008. A broadcast receiver that
//! lags behind its channel is treated the same way. A queue that stays full for
//! `stall_timeout`, or more than `max_resyncs_per_min` book resyncs, also closes with 1008.
//! The output thread only ever does a non-blocking broadcast send.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use engine::{AccountId, PairId};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamMap;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::candles::Interval;
use crate::problem::Problem;
use crate::state::Published;
use crate::{Feed, FeedConfig, PrivateChannel};

/// Close code for slow consumers and abuse.
const POLICY: u16 = 1008;

struct ConnGuard(Feed);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.inner.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn ws_upgrade(
    State(feed): State<Feed>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return Problem::new(e.status(), "BAD_REQUEST", "a WebSocket upgrade is required")
                .into_response();
        }
    };
    let cfg = feed.inner.config.clone();
    let before = feed.inner.connections.fetch_add(1, Ordering::Relaxed);
    let guard = ConnGuard(feed.clone());
    if before >= cfg.max_connections {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "too many WebSocket connections",
        )
        .into_response();
    }
    ws.max_message_size(cfg.max_message_bytes)
        .max_frame_size(cfg.max_message_bytes)
        .on_upgrade(move |socket| async move {
            let _guard = guard;
            run(feed, socket).await;
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Conflated: only the latest matters.
    Ticker,
    /// Resynced by snapshot.
    Book(PairId),
    /// Must not lose a message: overflow closes the connection.
    Lossless,
}

#[derive(Clone, Copy, Debug)]
enum Sel {
    Ticker,
    Trades,
    Book,
    Candles(Interval),
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Public(PairId, Sel),
    Private(PrivateChannel),
}

struct Conn {
    feed: Feed,
    cfg: FeedConfig,
    tx: mpsc::Sender<Message>,
    subs: StreamMap<String, BroadcastStream<Published>>,
    kinds: HashMap<String, Kind>,
    snap_seq: HashMap<String, u64>,
    pending_ticker: HashMap<String, Utf8Bytes>,
    resync: HashSet<String>,
    account: Option<AccountId>,
    close: Option<(u16, &'static str)>,
    ended: bool,
    last_seen: Instant,
    last_ping: Instant,
    full_since: Option<Instant>,
    rate_window: Instant,
    rate_count: u32,
    resync_window: Instant,
    resyncs: u32,
}

async fn run(feed: Feed, socket: WebSocket) {
    let cfg = feed.inner.config.clone();
    let (sink, mut stream) = socket.split();
    let (tx, rx) = mpsc::channel::<Message>(cfg.queue_bound.max(4));
    let (close_tx, close_rx) = oneshot::channel();
    let writer = tokio::spawn(writer(sink, rx, close_rx, cfg.close_grace));
    let now = Instant::now();
    let tick_every = [
        Duration::from_secs(1),
        cfg.ping_interval,
        cfg.idle_timeout / 2,
        cfg.stall_timeout / 2,
    ]
    .into_iter()
    .min()
    .unwrap_or(Duration::from_secs(1))
    .max(Duration::from_millis(10));
    let mut conn = Conn {
        feed,
        cfg,
        tx,
        subs: StreamMap::new(),
        kinds: HashMap::new(),
        snap_seq: HashMap::new(),
        pending_ticker: HashMap::new(),
        resync: HashSet::new(),
        account: None,
        close: None,
        ended: false,
        last_seen: now,
        last_ping: now,
        full_since: None,
        rate_window: now,
        rate_count: 0,
        resync_window: now,
        resyncs: 0,
    };
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while conn.close.is_none() && !conn.ended {
        let has_pending = !conn.resync.is_empty() || !conn.pending_ticker.is_empty();
        tokio::select! {
            biased;
            _ = tick.tick() => conn.housekeeping(),
            inbound = stream.next() => match inbound {
                Some(Ok(msg)) => {
                    conn.last_seen = Instant::now();
                    match msg {
                        Message::Text(t) => conn.on_text(t.as_str()),
                        Message::Binary(_) => {
                            conn.error(Value::Null, "BAD_REQUEST", "binary frames are not supported")
                        }
                        Message::Close(_) => conn.ended = true,
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                _ => conn.ended = true,
            },
            permit = conn.tx.clone().reserve_owned(), if has_pending => match permit {
                Ok(permit) => conn.flush_one(permit),
                Err(_) => conn.ended = true,
            },
            item = conn.subs.next(), if !conn.subs.is_empty() => {
                if let Some((key, item)) = item {
                    conn.on_item(key, item);
                }
            }
        }
    }
    let ended_by_peer = conn.ended;
    let close = conn.close.take();
    let grace = conn.cfg.close_grace;
    let _ = close_tx.send(close);
    drop(conn);
    if close.is_some() && !ended_by_peer {
        // Keep reading (and discarding) until the peer answers the close frame, so that
        // closing the socket with unread data does not reset it before the peer read it.
        let drain = async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::join!(writer, tokio::time::timeout(grace, drain));
    } else {
        let _ = writer.await;
    }
}

async fn writer(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Message>,
    mut close_rx: oneshot::Receiver<Option<(u16, &'static str)>>,
    grace: Duration,
) {
    async fn finish(
        sink: &mut SplitSink<WebSocket, Message>,
        close: Option<(u16, &'static str)>,
        grace: Duration,
    ) {
        match close {
            Some((code, reason)) => {
                let frame = CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                };
                let _ = tokio::time::timeout(grace, sink.send(Message::Close(Some(frame)))).await;
            }
            None => {
                let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
            }
        }
    }
    loop {
        let msg = tokio::select! {
            biased;
            c = &mut close_rx => {
                finish(&mut sink, c.ok().flatten(), grace).await;
                return;
            }
            m = rx.recv() => m,
        };
        let Some(msg) = msg else {
            let c = close_rx.await.ok().flatten();
            finish(&mut sink, c, grace).await;
            return;
        };
        tokio::select! {
            biased;
            c = &mut close_rx => {
                finish(&mut sink, c.ok().flatten(), grace).await;
                return;
            }
            r = sink.send(msg) => if r.is_err() { return },
        }
    }
}

impl Conn {
    fn shut(&mut self, code: u16, reason: &'static str) {
        if self.close.is_none() {
            self.close = Some((code, reason));
        }
    }

    /// Queues a message without waiting; false when the queue is full.
    fn try_send(&mut self, text: Utf8Bytes) -> bool {
        match self.tx.try_send(Message::Text(text)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.full_since.get_or_insert_with(Instant::now);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.ended = true;
                false
            }
        }
    }

    /// Sends a control reply; a client too slow to take even that is closed.
    fn reply(&mut self, v: Value) {
        if !self.try_send(Utf8Bytes::from(v.to_string())) {
            self.shut(POLICY, "slow consumer");
        }
    }

    fn error(&mut self, id: Value, code: &str, message: &str) {
        self.reply(json!({"op": "error", "id": id, "code": code, "message": message}));
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_seen) > self.cfg.idle_timeout {
            self.shut(1001, "idle timeout");
            return;
        }
        if now.duration_since(self.last_ping) >= self.cfg.ping_interval {
            self.last_ping = now;
            let _ = self.tx.try_send(Message::Ping(Bytes::new()));
        }
        if self.tx.capacity() == 0 {
            let since = *self.full_since.get_or_insert(now);
            if now.duration_since(since) > self.cfg.stall_timeout {
                self.shut(POLICY, "slow consumer");
            }
        } else if self.resync.is_empty() && self.pending_ticker.is_empty() {
            self.full_since = None;
        }
        if now.duration_since(self.resync_window) >= Duration::from_secs(60) {
            self.resync_window = now;
            self.resyncs = 0;
        }
    }

    fn mark_resync(&mut self, key: String) {
        self.resyncs += 1;
        if self.resyncs > self.cfg.max_resyncs_per_min {
            self.shut(POLICY, "slow consumer");
            return;
        }
        self.resync.insert(key);
    }

    fn on_item(&mut self, key: String, item: Result<Published, BroadcastStreamRecvError>) {
        let Some(kind) = self.kinds.get(&key).copied() else {
            return;
        };
        match (kind, item) {
            (Kind::Ticker, Ok(p)) => {
                if self.pending_ticker.contains_key(&key) || !self.try_send(p.text.clone()) {
                    self.pending_ticker.insert(key, p.text);
                }
            }
            (Kind::Ticker, Err(_)) => {}
            (Kind::Book(_), _) if self.resync.contains(&key) => {}
            (Kind::Book(_), Ok(p)) => {
                if self.snap_seq.get(&key).is_some_and(|s| p.seq <= *s) {
                    return;
                }
                if !self.try_send(p.text) {
                    self.mark_resync(key);
                }
            }
            (Kind::Book(_), Err(_)) => self.mark_resync(key),
            (Kind::Lossless, Ok(p)) => {
                if !self.try_send(p.text) {
                    self.shut(POLICY, "slow consumer");
                }
            }
            (Kind::Lossless, Err(_)) => self.shut(POLICY, "slow consumer"),
        }
    }

    /// Sends one resync snapshot or conflated ticker into a reserved slot.
    fn flush_one(&mut self, permit: mpsc::OwnedPermit<Message>) {
        self.full_since = None;
        if let Some(key) = self.resync.iter().next().cloned() {
            self.resync.remove(&key);
            let Some(Kind::Book(pair)) = self.kinds.get(&key).copied() else {
                return;
            };
            let snap = self.feed.inner.state.read().book_subscribe(pair);
            if let Some((snap, rx)) = snap {
                self.subs.insert(key.clone(), BroadcastStream::new(rx));
                self.snap_seq.insert(key, snap.seq);
                permit.send(Message::Text(snap.text));
            }
            return;
        }
        if let Some(key) = self.pending_ticker.keys().next().cloned()
            && let Some(text) = self.pending_ticker.remove(&key)
        {
            permit.send(Message::Text(text));
        }
    }

    fn on_text(&mut self, text: &str) {
        let now = Instant::now();
        if now.duration_since(self.rate_window) >= Duration::from_secs(1) {
            self.rate_window = now;
            self.rate_count = 0;
        }
        self.rate_count += 1;
        if self.rate_count > self.cfg.max_inbound_per_sec.saturating_mul(10) {
            self.shut(POLICY, "too many messages");
            return;
        }
        if self.rate_count > self.cfg.max_inbound_per_sec {
            self.error(Value::Null, "RATE_LIMITED", "too many messages per second");
            return;
        }
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
            self.error(Value::Null, "BAD_REQUEST", "messages must be JSON objects");
            return;
        };
        let id = obj.get("id").cloned().unwrap_or(Value::Null);
        let channels = || -> Option<Vec<String>> {
            obj.get("channels")?
                .as_array()?
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect()
        };
        match obj.get("op").and_then(Value::as_str) {
            Some("subscribe") => match channels() {
                Some(list) if !list.is_empty() => self.subscribe(id, list),
                _ => self.error(
                    id,
                    "BAD_REQUEST",
                    "channels must be a non-empty list of names",
                ),
            },
            Some("unsubscribe") => match channels() {
                Some(list) => self.unsubscribe(id, list),
                None => self.error(id, "BAD_REQUEST", "channels must be a list of names"),
            },
            Some("auth") => match obj.get("token").and_then(Value::as_str) {
                Some(token) => self.auth(id, token),
                None => self.error(id, "BAD_REQUEST", "auth needs a token"),
            },
            Some("ping") => self.reply(json!({"op": "pong", "id": id})),
            Some(_) => self.error(id, "UNKNOWN_OP", "unknown op"),
            None => self.error(id, "BAD_REQUEST", "missing op"),
        }
    }

    fn parse_channel(&self, name: &str) -> Option<Target> {
        if let Some(pc) = PrivateChannel::parse(name) {
            return Some(Target::Private(pc));
        }
        let parts: Vec<&str> = name.split(':').collect();
        let (sel, symbol) = match parts.as_slice() {
            ["ticker", p] => (Sel::Ticker, *p),
            ["trades", p] => (Sel::Trades, *p),
            ["book", p] => (Sel::Book, *p),
            ["candles", iv, p] => (Sel::Candles(Interval::parse(iv)?), *p),
            _ => return None,
        };
        let st = self.feed.inner.state.read();
        let id = st.markets.pair_by_symbol(symbol)?.id;
        Some(Target::Public(id, sel))
    }

    fn subscribe(&mut self, id: Value, names: Vec<String>) {
        let mut targets = Vec::with_capacity(names.len());
        for name in &names {
            match self.parse_channel(name) {
                Some(Target::Private(_)) if self.account.is_none() => {
                    let msg = format!("channel {name} needs auth first");
                    return self.error(id, "UNAUTHORIZED", &msg);
                }
                Some(t) => targets.push((name.clone(), t)),
                None => {
                    let msg = format!("unknown channel {name}");
                    return self.error(id, "UNKNOWN_CHANNEL", &msg);
                }
            }
        }
        let new: HashSet<&String> = names
            .iter()
            .filter(|n| !self.kinds.contains_key(*n))
            .collect();
        if self.kinds.len() + new.len() > self.cfg.max_subscriptions {
            let msg = format!(
                "at most {} subscriptions per connection",
                self.cfg.max_subscriptions
            );
            return self.error(id, "LIMIT_EXCEEDED", &msg);
        }
        self.reply(json!({"op": "subscribed", "id": id, "channels": names}));
        for (name, target) in targets {
            self.add(name, target);
        }
    }

    fn add(&mut self, name: String, target: Target) {
        self.pending_ticker.remove(&name);
        self.resync.remove(&name);
        match target {
            Target::Private(pc) => {
                let Some(account) = self.account else {
                    return;
                };
                let rx = self.feed.private_subscribe(account, pc);
                self.subs.insert(name.clone(), BroadcastStream::new(rx));
                self.kinds.insert(name, Kind::Lossless);
            }
            Target::Public(pair, Sel::Book) => {
                let snap = self.feed.inner.state.read().book_subscribe(pair);
                let Some((snap, rx)) = snap else {
                    return;
                };
                self.subs.insert(name.clone(), BroadcastStream::new(rx));
                self.kinds.insert(name.clone(), Kind::Book(pair));
                self.snap_seq.insert(name.clone(), snap.seq);
                if !self.try_send(snap.text) {
                    self.mark_resync(name);
                }
            }
            Target::Public(pair, sel) => {
                let (rx, last) = {
                    let st = self.feed.inner.state.read();
                    let Some(ch) = st
                        .pairs
                        .get(pair.0 as usize)
                        .and_then(|p| p.channels.as_ref())
                    else {
                        return;
                    };
                    let c = match sel {
                        Sel::Ticker => &ch.ticker,
                        Sel::Trades => &ch.trades,
                        Sel::Candles(iv) => &ch.candles[iv.index()],
                        Sel::Book => &ch.book,
                    };
                    (c.tx.subscribe(), c.last.clone())
                };
                self.subs.insert(name.clone(), BroadcastStream::new(rx));
                let kind = if matches!(sel, Sel::Ticker) {
                    Kind::Ticker
                } else {
                    Kind::Lossless
                };
                self.kinds.insert(name.clone(), kind);
                if let Some(last) = last
                    && !self.try_send(last.text.clone())
                {
                    self.pending_ticker.insert(name, last.text);
                }
            }
        }
    }

    fn remove(&mut self, name: &str) {
        self.subs.remove(name);
        self.kinds.remove(name);
        self.snap_seq.remove(name);
        self.pending_ticker.remove(name);
        self.resync.remove(name);
    }

    fn unsubscribe(&mut self, id: Value, names: Vec<String>) {
        for name in &names {
            if !self.kinds.contains_key(name) && self.parse_channel(name).is_none() {
                let msg = format!("unknown channel {name}");
                return self.error(id, "UNKNOWN_CHANNEL", &msg);
            }
        }
        for name in &names {
            self.remove(name);
        }
        self.reply(json!({"op": "unsubscribed", "id": id, "channels": names}));
    }

    fn auth(&mut self, id: Value, token: &str) {
        let auth = self.feed.inner.authenticator.read().clone();
        let Some(auth) = auth else {
            return self.error(id, "UNAUTHORIZED", "authentication is not available");
        };
        match auth(token) {
            Some(account) => {
                if self.account.is_some_and(|a| a != account) {
                    for pc in ["orders", "fills", "wallet"] {
                        self.remove(pc);
                    }
                }
                self.account = Some(account);
                self.reply(json!({"op": "authenticated", "id": id}));
            }
            None => self.error(id, "UNAUTHORIZED", "invalid or expired token"),
        }
    }
}
