//! `GET /v1/ws`: subscriptions to the public channels and the account's private channels.
//!
//! One task per connection. Each subscription is a cursor in its channel's ring
//! ([`crate::bus`]): the output thread appends encoded messages and wakes the waiting
//! connections once per batch; a woken connection drains everything its cursors have not
//! seen, hands the frames to the socket one after the other and flushes once (one write
//! for many messages). Control messages (replies, snapshots, pings) go first.
//!
//! The connection's queue is its backlog in the rings, bounded by `queue_bound`. When the
//! client reads too slowly (the socket does not take our frames) the backlog grows: a
//! ticker is conflated (only the latest is sent when there is room), a book channel past
//! the bound is resent as a fresh snapshot when there is room, and a channel that cannot
//! lose messages (trades, candles, private) past the bound closes the connection with
//! 1008. A cursor overtaken by its ring (`channel_capacity`) is treated the same way. A
//! socket that takes nothing for `stall_timeout`, or more than `max_resyncs_per_min` book
//! resyncs, also closes with 1008. The output thread never waits for a connection.

use std::collections::{HashSet, VecDeque};
use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use engine::{AccountId, PairId};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};

use crate::bus::Cursor;
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
    // Client messages are small: a small read buffer (tungstenite zeroes the free part of
    // it before every read attempt, 128 KiB by default).
    ws.max_message_size(cfg.max_message_bytes)
        .max_frame_size(cfg.max_message_bytes)
        .read_buffer_size(4096)
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

/// One subscription: a cursor in its channel's ring.
struct Sub {
    id: u32,
    name: String,
    kind: Kind,
    cursor: Cursor,
    /// Book: updates at or below the snapshot's seq are skipped.
    snap_seq: u64,
    /// Book: to be resent as a fresh snapshot when the socket has room.
    resync: bool,
}

/// Messages drained from the rings per subscription and round.
const PULL: usize = 256;
/// Messages written per poll before the task yields to the others.
const BUDGET: usize = 1024;

struct Conn {
    feed: Feed,
    cfg: FeedConfig,
    subs: Vec<Sub>,
    next_id: u32,
    rr: usize,
    /// Replies, snapshots, first tickers and pings: sent before data.
    control: VecDeque<Message>,
    /// Data drained from the rings, not yet written (sub id, text).
    batch: VecDeque<(u32, Published)>,
    scratch: Vec<Published>,
    /// Frames handed to the socket and not flushed yet.
    unflushed: bool,
    /// Since when the socket has not taken our frames.
    blocked_since: Option<Instant>,
    account: Option<AccountId>,
    close: Option<(u16, &'static str)>,
    ended: bool,
    last_seen: Instant,
    last_ping: Instant,
    rate_window: Instant,
    rate_count: u32,
    resync_window: Instant,
    resyncs: u32,
}

enum Ev {
    Tick,
    In(Message),
    Gone,
    Yield,
    Stop,
}

async fn run(feed: Feed, mut socket: WebSocket) {
    let cfg = feed.inner.config.clone();
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
        subs: Vec::new(),
        next_id: 0,
        rr: 0,
        control: VecDeque::new(),
        batch: VecDeque::new(),
        scratch: Vec::new(),
        unflushed: false,
        blocked_since: None,
        account: None,
        close: None,
        ended: false,
        last_seen: now,
        last_ping: now,
        rate_window: now,
        rate_count: 0,
        resync_window: now,
        resyncs: 0,
    };
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while conn.close.is_none() && !conn.ended {
        let ev = poll_fn(|cx| conn.poll(cx, &mut socket, &mut tick)).await;
        match ev {
            Ev::Tick => conn.housekeeping(),
            Ev::In(msg) => {
                conn.last_seen = Instant::now();
                match msg {
                    Message::Text(t) => conn.on_text(t.as_str()),
                    Message::Binary(_) => conn.error(
                        Value::Null,
                        "BAD_REQUEST",
                        "binary frames are not supported",
                    ),
                    Message::Close(_) => conn.ended = true,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            Ev::Gone => conn.ended = true,
            Ev::Yield => tokio::task::yield_now().await,
            Ev::Stop => {}
        }
    }
    let ended_by_peer = conn.ended;
    let close = conn.close.take();
    let grace = conn.cfg.close_grace;
    drop(conn);
    match close {
        Some((code, reason)) if !ended_by_peer => {
            // The close frame goes behind what the socket already holds; then keep reading
            // (and discarding) until the peer answers it, so that closing the socket with
            // unread data does not reset it before the peer read everything.
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let _ = tokio::time::timeout(grace, async {
                if socket.send(Message::Close(Some(frame))).await.is_err() {
                    return;
                }
                while let Some(Ok(m)) = socket.next().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        _ => {
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.close()).await;
        }
    }
}

impl Conn {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut WebSocket,
        tick: &mut tokio::time::Interval,
    ) -> Poll<Ev> {
        if self.close.is_some() || self.ended {
            return Poll::Ready(Ev::Stop);
        }
        if tick.poll_tick(cx).is_ready() {
            return Poll::Ready(Ev::Tick);
        }
        match socket.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(m))) => return Poll::Ready(Ev::In(m)),
            Poll::Ready(_) => return Poll::Ready(Ev::Gone),
            Poll::Pending => {}
        }
        match self.pump(cx, socket) {
            Err(()) => Poll::Ready(Ev::Gone),
            Ok(true) => Poll::Ready(Ev::Yield),
            Ok(false) if self.close.is_some() => Poll::Ready(Ev::Stop),
            Ok(false) => Poll::Pending,
        }
    }

    /// Writes what is queued and what the rings hold, then flushes once. Ok(true): the
    /// budget ran out (yield and come back).
    fn pump(&mut self, cx: &mut Context<'_>, socket: &mut WebSocket) -> Result<bool, ()> {
        let mut sent = 0;
        loop {
            match socket.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => {
                    self.blocked_since.get_or_insert_with(Instant::now);
                    return Ok(false);
                }
            }
            let msg = if let Some(m) = self.control.pop_front() {
                m
            } else if let Some((_, p)) = self.batch.pop_front() {
                Message::Text(p.text)
            } else if sent < BUDGET && self.pull(cx) {
                continue;
            } else {
                break;
            };
            if socket.start_send_unpin(msg).is_err() {
                return Err(());
            }
            self.unflushed = true;
            sent += 1;
        }
        if self.unflushed {
            match socket.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => {
                    self.blocked_since.get_or_insert_with(Instant::now);
                    return Ok(false);
                }
            }
        }
        self.blocked_since = None;
        Ok(sent >= BUDGET)
    }

    /// Drains the rings into `batch` (snapshots of resyncing books into `control`); when
    /// nothing is waiting, registers for the next batch. True when something was queued.
    fn pull(&mut self, cx: &mut Context<'_>) -> bool {
        for _attempt in 0..2 {
            let n = self.subs.len();
            let bound = self.cfg.queue_bound as u64;
            for k in 0..n {
                let i = (self.rr + k) % n;
                if self.subs[i].resync {
                    self.resnapshot(i);
                    continue;
                }
                let sub = &mut self.subs[i];
                match sub.kind {
                    Kind::Ticker => {
                        if let Some(p) = sub.cursor.latest() {
                            self.batch.push_back((sub.id, p));
                        }
                    }
                    Kind::Book(_) => {
                        if sub.cursor.backlog() > bound {
                            self.mark_resync(i);
                            continue;
                        }
                        self.scratch.clear();
                        if sub.cursor.recv_into(&mut self.scratch, PULL).is_err() {
                            self.mark_resync(i);
                            continue;
                        }
                        let (id, snap) = (sub.id, sub.snap_seq);
                        self.batch.extend(
                            self.scratch
                                .drain(..)
                                .filter(|p| p.seq > snap)
                                .map(|p| (id, p)),
                        );
                    }
                    Kind::Lossless => {
                        if sub.cursor.backlog() > bound {
                            self.shut(POLICY, "slow consumer");
                            return false;
                        }
                        self.scratch.clear();
                        if sub.cursor.recv_into(&mut self.scratch, PULL).is_err() {
                            self.shut(POLICY, "slow consumer");
                            return false;
                        }
                        let id = sub.id;
                        self.batch.extend(self.scratch.drain(..).map(|p| (id, p)));
                    }
                }
            }
            self.rr = self.rr.wrapping_add(1);
            if self.close.is_some() {
                return false;
            }
            if !self.batch.is_empty() || !self.control.is_empty() {
                return true;
            }
            let mut waiting = false;
            for sub in &mut self.subs {
                waiting |= sub.cursor.register(cx);
            }
            if !waiting {
                return false;
            }
        }
        !self.batch.is_empty() || !self.control.is_empty()
    }

    fn shut(&mut self, code: u16, reason: &'static str) {
        if self.close.is_none() {
            self.close = Some((code, reason));
        }
    }

    /// Queues a control message (reply, snapshot, ping); a client too slow to take even
    /// those is closed.
    fn push_control(&mut self, msg: Message) {
        if self.control.len() >= self.cfg.queue_bound.max(64) {
            self.shut(POLICY, "slow consumer");
            return;
        }
        self.control.push_back(msg);
    }

    fn reply(&mut self, v: Value) {
        self.push_control(Message::Text(Utf8Bytes::from(v.to_string())));
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
            self.push_control(Message::Ping(Bytes::new()));
        }
        if let Some(since) = self.blocked_since {
            if now.duration_since(since) > self.cfg.stall_timeout {
                self.shut(POLICY, "slow consumer");
                return;
            }
            // The socket is full: the backlogs in the rings are this connection's queue.
            let bound = self.cfg.queue_bound as u64;
            for i in 0..self.subs.len() {
                let sub = &self.subs[i];
                if sub.resync || sub.cursor.backlog() <= bound {
                    continue;
                }
                match sub.kind {
                    Kind::Ticker => {}
                    Kind::Book(_) => self.mark_resync(i),
                    Kind::Lossless => self.shut(POLICY, "slow consumer"),
                }
            }
        }
        if now.duration_since(self.resync_window) >= Duration::from_secs(60) {
            self.resync_window = now;
            self.resyncs = 0;
        }
    }

    fn mark_resync(&mut self, i: usize) {
        self.resyncs += 1;
        if self.resyncs > self.cfg.max_resyncs_per_min {
            self.shut(POLICY, "slow consumer");
            return;
        }
        let id = self.subs[i].id;
        self.subs[i].resync = true;
        self.batch.retain(|(s, _)| *s != id);
    }

    /// Replaces a resyncing book's cursor and queues its fresh snapshot.
    fn resnapshot(&mut self, i: usize) {
        let Kind::Book(pair) = self.subs[i].kind else {
            return;
        };
        let snap = self.feed.inner.state.read().book_subscribe(pair);
        let Some((snap, cursor)) = snap else {
            return;
        };
        let sub = &mut self.subs[i];
        sub.cursor = cursor;
        sub.snap_seq = snap.seq;
        sub.resync = false;
        self.push_control(Message::Text(snap.text));
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
        let new: HashSet<&String> = names.iter().filter(|n| !self.has(n)).collect();
        if self.subs.len() + new.len() > self.cfg.max_subscriptions {
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

    fn has(&self, name: &str) -> bool {
        self.subs.iter().any(|s| s.name == name)
    }

    fn add(&mut self, name: String, target: Target) {
        self.remove(&name);
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        match target {
            Target::Private(pc) => {
                let Some(account) = self.account else {
                    return;
                };
                let cursor = self.feed.private_subscribe(account, pc);
                self.subs.push(Sub {
                    id,
                    name,
                    kind: Kind::Lossless,
                    cursor,
                    snap_seq: 0,
                    resync: false,
                });
            }
            Target::Public(pair, Sel::Book) => {
                let snap = self.feed.inner.state.read().book_subscribe(pair);
                let Some((snap, cursor)) = snap else {
                    return;
                };
                self.subs.push(Sub {
                    id,
                    name,
                    kind: Kind::Book(pair),
                    cursor,
                    snap_seq: snap.seq,
                    resync: false,
                });
                self.push_control(Message::Text(snap.text));
            }
            Target::Public(pair, sel) => {
                let (cursor, last) = {
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
                    (c.bus.subscribe(), c.last.clone())
                };
                let kind = if matches!(sel, Sel::Ticker) {
                    Kind::Ticker
                } else {
                    Kind::Lossless
                };
                self.subs.push(Sub {
                    id,
                    name,
                    kind,
                    cursor,
                    snap_seq: 0,
                    resync: false,
                });
                if let Some(last) = last {
                    self.push_control(Message::Text(last.text));
                }
            }
        }
    }

    fn remove(&mut self, name: &str) {
        let Some(i) = self.subs.iter().position(|s| s.name == name) else {
            return;
        };
        let sub = self.subs.remove(i);
        self.batch.retain(|(s, _)| *s != sub.id);
    }

    fn unsubscribe(&mut self, id: Value, names: Vec<String>) {
        for name in &names {
            if !self.has(name) && self.parse_channel(name).is_none() {
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
