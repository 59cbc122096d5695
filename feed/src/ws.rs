//! `GET /v1/ws`: subscriptions to the public channels and the account's private channels.
//!
//! One task per connection. Each subscription is a cursor in its channel's ring
//! ([`crate::bus`]) of ready-made WebSocket frames (server frames are unmasked, so every
//! connection sends the same bytes): the engine thread appends them and wakes the waiting
//! connections once per batch; a woken connection writes every frame its cursors have not
//! seen straight from the rings with vectored writes (no copy per connection), behind its
//! control frames; the rest of a frame cut short by a short write is kept and written first.
//! Control messages (replies, snapshots, pings) go first. Client frames are read by
//! tungstenite, which only ever writes (pongs, close replies) while our buffer is empty, so
//! frames never interleave.
//!
//! The connection's queue is its backlog in the rings, bounded by `queue_bound`. When the
//! client reads too slowly (the socket does not take our frames) the backlog grows: a
//! ticker is conflated (only the latest is sent when there is room), a book channel past
//! the bound is resent as a fresh snapshot when there is room, and a channel that cannot
//! lose messages (trades, candles, private) past the bound closes the connection with
//! 1008 (checked while the socket is full: a burst, one command's thousands of messages,
//! is a backlog past the bound that a client which keeps up takes at once, and a ring grows
//! to hold what no subscriber has been told of yet, see [`crate::bus`]). A cursor
//! overtaken by its ring (`channel_capacity`) loses messages and closes with 1008 too. A
//! socket that takes nothing for `stall_timeout`, or more than `max_resyncs_per_min` book
//! resyncs, also closes with 1008. The control queue is the connection's own (a snapshot is
//! a copy), so it is bounded by bytes (`control_queue_bytes`) as well as by count: a few
//! dozen queued snapshots of a deep book would otherwise be gigabytes held for a client that
//! does not read. The engine thread never waits for a connection.
//!
//! When the server shuts down ([`crate::Feed::close_connections`]) every connection closes
//! with 1001 (Going Away), and upgrades are refused ([`crate::shutdown`]). It first drains:
//! the control frames queued and the frames its rings hold when it learns of the stop
//! (each cursor's [`Cursor::end`] then) are written as usual, nothing published later, no
//! new snapshot, and client requests are ignored; so a client reading along gets every
//! message published before the stop. The drain takes at most half of `close_grace` (the
//! rest is for the close handshake, so the whole close stays within the grace the server
//! waits for); a book that needs a resync or a client that stops reading ends it sooner.

use std::collections::{HashSet, VecDeque};
use std::future::{Future, poll_fn};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use engine::PairId;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::bus::{Bus, Cursor, Peek, RingRead, frame};
use crate::candles::Interval;
use crate::problem::Problem;
use crate::read_gate::ReadGate;
use crate::shutdown::StopSignal;
use crate::{AuthRefusal, Feed, FeedConfig, Grant, PrivateChannel};

/// Close code for a server going down (and for an idle peer).
const GOING_AWAY: u16 = 1001;
/// Close code for slow consumers and abuse.
const POLICY: u16 = 1008;
/// Close code for a client message too large to read at all.
const TOO_BIG: u16 = 1009;
/// Close code for a frame that breaks the protocol (an unmasked client frame, reserved bits
/// or opcodes, a fragmented control frame).
const PROTOCOL_ERROR: u16 = 1002;
/// Close code for a text message that is not UTF-8.
const INVALID_DATA: u16 = 1007;

/// The largest client message read whole: one over `max_message_bytes` but within this is
/// answered with a `PAYLOAD_TOO_LARGE` error and the connection stays open; a larger one
/// cannot be skipped (the frame parser stops at its header), so it closes with 1009. The
/// cap bounds a connection's read buffer.
fn read_cap(max_message_bytes: usize) -> usize {
    max_message_bytes.saturating_mul(4).max(64 * 1024)
}

type Socket = WebSocketStream<ReadGate<TokioIo<hyper::upgrade::Upgraded>>>;

struct ConnGuard(Feed);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.inner.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

fn header_has(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// The WebSocket handshake (RFC 6455 section 4.2, HTTP/1.1), done here rather than by
/// axum's extractor so that the connection owns the raw stream for its frame writes.
pub(crate) async fn ws_upgrade(State(feed): State<Feed>, mut req: Request) -> Response {
    // API.md's code for a request wrong in itself, which the edge gives any other 4xx too
    // (`BAD_REQUEST` is a code of the WebSocket's own error messages, not of problems).
    let bad = |status: StatusCode, msg: &str| {
        Problem::new(status, "VALIDATION_FAILED", msg).into_response()
    };
    let h = req.headers();
    // HEAD reaches this handler with GET (the router serves both, and its 405 for any other
    // method says `Allow: GET,HEAD`): a HEAD cannot be upgraded, so it is answered as a GET
    // without an upgrade is, not with a 405 lacking `Allow`.
    if req.method() != Method::GET
        || req.version() != Version::HTTP_11
        || !header_has(h, header::CONNECTION, "upgrade")
        || !header_has(h, header::UPGRADE, "websocket")
    {
        // A 426 names the protocol to upgrade to (RFC 9110 15.5.22: it MUST).
        return Problem::new(
            StatusCode::UPGRADE_REQUIRED,
            "VALIDATION_FAILED",
            "a WebSocket upgrade is required",
        )
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .into_response();
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        // The version this server speaks (RFC 6455 4.4: the refusal MUST name it).
        return Problem::validation("Sec-WebSocket-Version must be 13")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .into_response();
    }
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
        return bad(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing");
    };
    let accept = derive_accept_key(key.as_bytes());
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return bad(StatusCode::UPGRADE_REQUIRED, "connection not upgradable");
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
    let Some(registration) = feed.inner.shutdown.register() else {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "the server is shutting down",
        )
        .into_response();
    };
    // The client's address, when the server knows it (its accept loop puts it on each
    // request): `auth` ops are charged to its budget (`Feed::set_auth_gate`).
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    tokio::spawn(async move {
        let _guard = guard;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        // Client messages are small: a small read buffer (tungstenite zeroes the free part
        // of it before every read attempt, 128 KiB by default).
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .max_message_size(Some(read_cap(cfg.max_message_bytes)))
            .max_frame_size(Some(read_cap(cfg.max_message_bytes)));
        let socket = WebSocketStream::from_raw_socket(
            ReadGate::new(TokioIo::new(upgraded)),
            Role::Server,
            Some(config),
        )
        .await;
        run(feed, socket, registration.signal(), peer).await;
        // Dropped only now, after the close handshake: the server's shutdown waits for it.
        drop(registration);
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
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
    name: String,
    kind: Kind,
    cursor: Cursor,
    /// Book: updates at or below the snapshot's seq are skipped.
    snap_seq: u64,
    /// Book: to be resent as a fresh snapshot when the socket has room.
    resync: bool,
    /// The cursor's end when the shutdown drain started (u64::MAX until then): frames
    /// from there on are not written.
    until: u64,
}

/// A shutdown drain under way: since when, and its deadline.
struct Drain {
    since: Instant,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

/// A queued control frame. `book` is the pair whose snapshot it is: a newer snapshot of the
/// same book replaces it rather than queueing behind it.
struct Control {
    frame: Bytes,
    book: Option<PairId>,
}

/// Bytes gathered into the write buffer before writing.
const WBUF: usize = 256 * 1024;
/// Bytes written per poll before the task yields to the others.
const BUDGET: usize = 1024 * 1024;

struct Conn {
    feed: Feed,
    cfg: FeedConfig,
    subs: Vec<Sub>,
    rr: usize,
    /// Replies, snapshots, first tickers and pings (frames): sent before data.
    control: VecDeque<Control>,
    /// The bytes of the frames in `control` (bounded by `control_queue_bytes`).
    control_bytes: usize,
    /// Frames to write; `wpos` is how much of it the socket took.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Subscriptions (indexes) whose pending frames go out straight from their rings with the
    /// next write, behind `wbuf` (vectored: no copy into `wbuf`).
    direct: Vec<usize>,
    /// Since when the socket has not taken our frames.
    blocked_since: Option<Instant>,
    /// When the last batch of frames went out, and the timer that holds the next one back
    /// until `min_write_interval` after it.
    last_write: Option<Instant>,
    hold: Pin<Box<tokio::time::Sleep>>,
    holding: bool,
    /// The account and read scopes of the last token the `auth` op accepted.
    grant: Option<Grant>,
    /// The client's address, when known: what its `auth` ops are charged to.
    peer: Option<std::net::IpAddr>,
    close: Option<(u16, &'static str)>,
    ended: bool,
    last_seen: Instant,
    last_ping: Instant,
    rate_window: Instant,
    rate_count: u32,
    resync_window: Instant,
    resyncs: u32,
    /// Set when the server shuts down: the connection drains, then closes with 1001.
    stop: StopSignal,
    drain: Option<Drain>,
}

/// The close code and reason for a read error that the connection answers with a close
/// frame; `None` for one that ends it without (the peer reset or closed the TCP stream).
fn fails_with(e: &tokio_tungstenite::tungstenite::Error) -> Option<(u16, &'static str)> {
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match e {
        Error::Capacity(_) => Some((TOO_BIG, "message too big")),
        Error::Utf8(_) => Some((INVALID_DATA, "text is not UTF-8")),
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        Error::Protocol(_) => Some((PROTOCOL_ERROR, "protocol error")),
        _ => None,
    }
}

enum Ev {
    Tick,
    In(Message),
    /// The client's frames cannot be read on (a message over the read cap, a protocol
    /// error, text that is not UTF-8): close with this code (RFC 6455 7.4.1).
    Fail(u16, &'static str),
    Gone,
    Yield,
    Stop,
}

async fn run(feed: Feed, mut socket: Socket, stop: StopSignal, peer: Option<std::net::IpAddr>) {
    let mut conn = Conn::new(feed, stop);
    conn.peer = peer;
    let cfg = &conn.cfg;
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
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while conn.close.is_none() && !conn.ended {
        let ev = poll_fn(|cx| conn.poll(cx, &mut socket, &mut tick)).await;
        match ev {
            Ev::Tick => conn.housekeeping(),
            // Draining: requests are not answered (a new subscription would not drain).
            Ev::In(Message::Text(_) | Message::Binary(_)) if conn.drain.is_some() => {}
            Ev::In(msg) => {
                conn.last_seen = Instant::now();
                match msg {
                    Message::Text(t) => conn.on_text(t.as_str()),
                    // Binary and ping frames count against the inbound rate too (a flood of
                    // them is closed like one of text messages).
                    Message::Binary(_) => match conn.count_inbound() {
                        Some(false) => conn.error(
                            Value::Null,
                            "BAD_REQUEST",
                            "binary frames are not supported",
                        ),
                        Some(true) => conn.rate_limited(Value::Null),
                        None => {}
                    },
                    // So do pongs: one answers each of our pings (every 15 s), so only a
                    // client sending them unasked comes near the limit.
                    Message::Ping(_) | Message::Pong(_) => {
                        conn.count_inbound();
                    }
                    Message::Close(_) => conn.ended = true,
                    Message::Frame(_) => {}
                }
            }
            Ev::Fail(code, reason) => conn.shut(code, reason),
            Ev::Gone => conn.ended = true,
            Ev::Yield => tokio::task::yield_now().await,
            Ev::Stop => {}
        }
    }
    let ended_by_peer = conn.ended;
    let close = conn.close.take();
    // A shutdown's close grace counts from the stop: the drain took some of it.
    let grace = conn.cfg.close_grace.saturating_sub(
        conn.drain
            .as_ref()
            .map_or(Duration::ZERO, |d| d.since.elapsed()),
    );
    let pending = conn.wbuf.split_off(conn.wpos);
    drop(conn);
    match close {
        Some((code, reason)) if !ended_by_peer => {
            // The close frame goes behind what the socket already holds; then keep reading
            // (and discarding) until the peer answers it, so that closing the socket with
            // unread data does not reset it before the peer read everything.
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: Utf8Bytes::from_static(reason),
            };
            let _ = tokio::time::timeout(grace, async {
                if socket.get_mut().write_all(&pending).await.is_err()
                    || socket.send(Message::Close(Some(frame))).await.is_err()
                {
                    return;
                }
                loop {
                    match socket.next().await {
                        Some(Ok(Message::Close(_))) | None => return,
                        Some(Ok(_)) => {}
                        Some(Err(_)) => break,
                    }
                }
                // Frames that cannot be parsed (the rest of a message over the read cap):
                // discard raw bytes until the peer goes quiet (it has our close frame), so
                // that dropping the socket with unread data does not reset it first.
                let mut buf = [0u8; 16 * 1024];
                let quiet = Duration::from_millis(200);
                while let Ok(Ok(n)) =
                    tokio::time::timeout(quiet, socket.get_mut().read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }
        _ => {
            // The sink's close, not `WebSocketStream::close`: after the peer's close frame
            // that one is a send, refused (`SendAfterClosing`) before it flushes the close
            // reply tungstenite has queued (RFC 6455 5.5.1), so the peer saw no close frame.
            let close = SinkExt::close(&mut socket);
            let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
        }
    }
}

impl Conn {
    /// A connection with no subscription (within a tokio runtime: it holds a timer).
    fn new(feed: Feed, stop: StopSignal) -> Conn {
        let cfg = feed.inner.config.clone();
        let now = Instant::now();
        Conn {
            feed,
            cfg,
            subs: Vec::new(),
            rr: 0,
            control: VecDeque::new(),
            control_bytes: 0,
            wbuf: Vec::with_capacity(16 * 1024),
            wpos: 0,
            direct: Vec::new(),
            blocked_since: None,
            last_write: None,
            hold: Box::pin(tokio::time::sleep(Duration::ZERO)),
            holding: false,
            grant: None,
            peer: None,
            close: None,
            ended: false,
            last_seen: now,
            last_ping: now,
            rate_window: now,
            rate_count: 0,
            resync_window: now,
            resyncs: 0,
            stop,
            drain: None,
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut Socket,
        tick: &mut tokio::time::Interval,
    ) -> Poll<Ev> {
        if self.close.is_some() || self.ended {
            return Poll::Ready(Ev::Stop);
        }
        if self.drain.is_none() && self.stop.requested(cx) {
            self.start_drain();
        }
        if let Some(d) = &mut self.drain
            && d.deadline.as_mut().poll(cx).is_ready()
        {
            self.shut(GOING_AWAY, "server shutting down");
            return Poll::Ready(Ev::Stop);
        }
        if tick.poll_tick(cx).is_ready() {
            return Poll::Ready(Ev::Tick);
        }
        // Read only between our frames: tungstenite may write a pong while reading. And
        // only when the socket may have something (crate::read_gate).
        let read_skipped = self.wpos != self.wbuf.len();
        if !read_skipped && socket.get_ref().take_may_read() {
            let reads = socket.get_ref().reads();
            let polled = socket.poll_next_unpin(cx);
            socket.get_ref().after_poll(reads, polled.is_ready());
            match polled {
                Poll::Ready(Some(Ok(m))) => return Poll::Ready(Ev::In(m)),
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(match fails_with(&e) {
                        Some((code, reason)) => Ev::Fail(code, reason),
                        None => Ev::Gone,
                    });
                }
                Poll::Ready(None) => return Poll::Ready(Ev::Gone),
                Poll::Pending => {}
            }
        }
        match self.pump(cx, socket) {
            Err(()) => Poll::Ready(Ev::Gone),
            Ok(true) => Poll::Ready(Ev::Yield),
            Ok(false) if self.close.is_some() => Poll::Ready(Ev::Stop),
            Ok(false) if self.drained() => {
                self.shut(GOING_AWAY, "server shutting down");
                Poll::Ready(Ev::Stop)
            }
            Ok(false) => {
                // A client frame that came while our frames were half-written was not read
                // above; now that they are out, come back for it (once: the next poll reads).
                if read_skipped && self.wpos == self.wbuf.len() && socket.get_ref().may_read() {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }

    /// The server is shutting down: from now on the cursors stop at what their rings hold
    /// now, and the drain has half the close grace (module docs).
    fn start_drain(&mut self) {
        for sub in &mut self.subs {
            sub.until = sub.cursor.end();
        }
        self.drain = Some(Drain {
            since: Instant::now(),
            deadline: Box::pin(tokio::time::sleep(self.cfg.close_grace / 2)),
        });
    }

    /// Whether a subscription has nothing left to drain (a resyncing book gets no new
    /// snapshot during a drain).
    fn sub_drained(sub: &Sub) -> bool {
        sub.resync || sub.cursor.pos() >= sub.until
    }

    /// Whether a drain has written everything it was to: the control frames, the write
    /// buffer and every cursor up to its end at the start.
    fn drained(&self) -> bool {
        self.drain.is_some()
            && self.wpos == self.wbuf.len()
            && self.direct.is_empty()
            && self.control.is_empty()
            && self.subs.iter().all(Self::sub_drained)
    }

    /// Writes the write buffer, refilling it from the control queue and the rings, until
    /// the socket is full or nothing is left. Ok(true): the budget ran out (yield).
    fn pump(&mut self, cx: &mut Context<'_>, socket: &mut Socket) -> Result<bool, ()> {
        // What tungstenite itself queued (pong, close reply) goes before our frames.
        if self.wpos == self.wbuf.len() {
            match socket.poll_flush_unpin(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => {
                    self.blocked_since.get_or_insert_with(Instant::now);
                    return Ok(false);
                }
            }
        }
        let mut written = 0;
        loop {
            if self.wpos == self.wbuf.len() && self.direct.is_empty() {
                self.wbuf.clear();
                self.wpos = 0;
                self.blocked_since = None;
                if written >= BUDGET {
                    return Ok(true);
                }
                let interval = self.write_interval();
                if !interval.is_zero()
                    && let Some(last) = self.last_write
                {
                    let due = last + interval;
                    if !self.holding && Instant::now() < due {
                        self.hold
                            .as_mut()
                            .reset(tokio::time::Instant::from_std(due));
                        self.holding = true;
                    }
                    // Replies, snapshots and pings do not wait for the interval (with many
                    // connections it can be tens of milliseconds).
                    if self.holding {
                        if self.control.is_empty() && self.hold.as_mut().poll(cx).is_pending() {
                            return Ok(false);
                        }
                        self.holding = false;
                    }
                }
                self.fill(cx);
                let any = !self.wbuf.is_empty() || !self.direct.is_empty();
                if any && written == 0 {
                    self.last_write = Some(Instant::now());
                }
                if !any {
                    return Ok(false);
                }
            }
            if !self.direct.is_empty() {
                match self.write_direct(cx, socket) {
                    // Nothing to send after all (skipped, or lagged: the next fill sees it).
                    Poll::Ready(Ok(None)) => {}
                    Poll::Ready(Ok(Some(0))) | Poll::Ready(Err(_)) => return Err(()),
                    Poll::Ready(Ok(Some(n))) => {
                        self.feed.inner.ws_writes.add(n);
                        written += n;
                    }
                    Poll::Pending => {
                        self.blocked_since.get_or_insert_with(Instant::now);
                        return Ok(false);
                    }
                }
                continue;
            }
            match Pin::new(socket.get_mut()).poll_write(cx, &self.wbuf[self.wpos..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(()),
                Poll::Ready(Ok(n)) => {
                    self.feed.inner.ws_writes.add(n);
                    self.wpos += n;
                    written += n;
                }
                Poll::Pending => {
                    self.blocked_since.get_or_insert_with(Instant::now);
                    return Ok(false);
                }
            }
        }
    }

    /// One vectored write of what is left of `wbuf` and then the pending frames of the
    /// `direct` subscriptions, straight from their rings (read-locked for the duration of
    /// the system call, which does not block). What the socket took is taken from the
    /// cursors; a frame cut short has its rest moved to `wbuf`, which is written before
    /// anything else. `direct` is emptied unless the socket took nothing.
    fn write_direct(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut Socket,
    ) -> Poll<std::io::Result<Option<usize>>> {
        let direct = std::mem::take(&mut self.direct);
        let buses: Vec<Arc<Bus>> = direct
            .iter()
            .map(|&i| self.subs[i].cursor.bus().clone())
            .collect();
        // Read locks in one global order (by address): a writer waiting on one ring blocks
        // new readers of it, so two connections taking two rings in opposite orders while
        // two publishers (the engine thread, an account's private channel) wait could
        // deadlock.
        let mut order: Vec<usize> = (0..buses.len()).collect();
        order.sort_by_key(|&k| Arc::as_ptr(&buses[k]) as usize);
        let mut locked: Vec<(usize, RingRead<'_>)> =
            order.into_iter().map(|k| (k, buses[k].read())).collect();
        locked.sort_by_key(|(k, _)| *k);
        let rings: Vec<RingRead<'_>> = locked.into_iter().map(|(_, r)| r).collect();
        let mut peeks: Vec<Option<Peek>> = Vec::with_capacity(direct.len());
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(1 + 2 * direct.len());
        let head = &self.wbuf[self.wpos..];
        if !head.is_empty() {
            slices.push(IoSlice::new(head));
        }
        let mut room = WBUF.saturating_sub(head.len()).max(1);
        for (k, &i) in direct.iter().enumerate() {
            let sub = &mut self.subs[i];
            let min_seq = match sub.kind {
                Kind::Book(_) => sub.snap_seq,
                _ => 0,
            };
            let peek = sub
                .cursor
                .peek_until(&rings[k], room, min_seq, sub.until)
                .ok()
                .flatten()
                .filter(|_| room > 0);
            if let Some(p) = &peek {
                room = room.saturating_sub(p.len);
                for part in Cursor::slices(&rings[k], p) {
                    if !part.is_empty() {
                        slices.push(IoSlice::new(part));
                    }
                }
            }
            peeks.push(peek);
        }
        if slices.is_empty() {
            return Poll::Ready(Ok(None));
        }
        let n = match Pin::new(socket.get_mut()).poll_write_vectored(cx, &slices) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                drop(slices);
                drop(rings);
                self.direct = direct;
                return Poll::Pending;
            }
        };
        drop(slices);
        let from_wbuf = n.min(self.wbuf.len() - self.wpos);
        self.wpos += from_wbuf;
        let mut left = n - from_wbuf;
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        let mut rest = Vec::new();
        for (k, &i) in direct.iter().enumerate() {
            let Some(p) = &peeks[k] else { continue };
            let took = left.min(p.len);
            left -= took;
            if took > 0 {
                self.subs[i].cursor.consume(&rings[k], p, took, &mut rest);
            }
        }
        drop(rings);
        if !rest.is_empty() {
            // The rest of a frame cut short: written next, before anything else (a partial
            // `wbuf` means the socket took nothing from the rings).
            debug_assert!(self.wbuf.is_empty());
            self.wbuf.extend_from_slice(&rest);
        }
        Poll::Ready(Ok(Some(n)))
    }

    /// How long a busy connection gathers between writes ([`crate::FeedConfig::write_interval`]
    /// with the connections open now).
    fn write_interval(&self) -> Duration {
        let conns = self.feed.inner.connections.load(Ordering::Relaxed);
        self.cfg.write_interval(conns)
    }

    fn take_control(&mut self) {
        while self.wbuf.len() < WBUF
            && let Some(c) = self.control.pop_front()
        {
            self.control_bytes -= c.frame.len();
            self.wbuf.extend_from_slice(&c.frame);
        }
    }

    /// Fills the write buffer: control frames, then what the rings hold (snapshots of
    /// resyncing books are taken here, when there is room). When nothing is waiting,
    /// registers for the next batch. A token that has expired ends the private
    /// subscriptions first, so none of their messages is written after the expiry (the
    /// housekeeping tick alone let them through for up to a second, while REST said 401).
    fn fill(&mut self, cx: &mut Context<'_>) {
        self.end_expired_grant();
        for _attempt in 0..2 {
            self.take_control();
            let n = self.subs.len();
            let bound = self.cfg.queue_bound as u64;
            for k in 0..n {
                if self.wbuf.len() >= WBUF {
                    break;
                }
                let i = (self.rr + k) % n;
                if self.drain.is_some() && Self::sub_drained(&self.subs[i]) {
                    continue;
                }
                if self.subs[i].resync {
                    self.resnapshot(i);
                    self.take_control();
                    continue;
                }
                let sub = &mut self.subs[i];
                match sub.kind {
                    Kind::Ticker => {
                        sub.cursor.latest_into(&mut self.wbuf);
                    }
                    Kind::Book(_) => {
                        if sub.cursor.backlog() > bound || sub.cursor.lagged() {
                            self.mark_resync(i);
                        } else if sub.cursor.backlog() > 0 {
                            self.direct.push(i);
                        }
                    }
                    Kind::Lossless => {
                        // Lost messages close it here. A backlog past the bound alone does
                        // not: a burst (one command's thousands of messages) is a backlog
                        // that a client which keeps up takes at once; a client that does
                        // not, and whose socket is full, is closed by `housekeeping`.
                        if sub.cursor.lagged() {
                            self.shut(POLICY, "slow consumer");
                            return;
                        } else if sub.cursor.backlog() > 0 {
                            self.direct.push(i);
                        }
                    }
                }
            }
            self.rr = self.rr.wrapping_add(1);
            if !self.wbuf.is_empty() || !self.direct.is_empty() || self.close.is_some() {
                return;
            }
            let mut waiting = false;
            for sub in &mut self.subs {
                waiting |= sub.cursor.register(cx);
            }
            if !waiting {
                return;
            }
        }
    }

    fn shut(&mut self, code: u16, reason: &'static str) {
        if self.close.is_none() {
            self.close = Some((code, reason));
        }
    }

    /// Queues a control frame (reply, ping, first ticker); a client too slow to take even
    /// those is closed.
    fn push_control(&mut self, f: Bytes) {
        self.queue_control(f, None);
    }

    /// Queues the snapshot of `pair`'s book, in place of one of the same book still queued:
    /// that one was never sent, and nothing of its cursor was either (the rings are read
    /// only once the control queue is empty), so the client loses nothing by not seeing it.
    /// A client re-subscribing to a book it does not read then holds one snapshot, not one
    /// per request.
    fn push_snapshot(&mut self, pair: PairId, f: Bytes) {
        if let Some(k) = self.control.iter().position(|c| c.book == Some(pair))
            && let Some(old) = self.control.remove(k)
        {
            self.control_bytes -= old.frame.len();
        }
        self.queue_control(f, Some(pair));
    }

    /// Queues a control frame within both bounds of the control queue: `queue_bound`
    /// frames (at least 64), and `control_queue_bytes` already queued (so one frame of any
    /// size fits: the queue holds at most the bound plus one frame). Past either, the
    /// client is too slow to take even these and is closed with 1008.
    fn queue_control(&mut self, frame: Bytes, book: Option<PairId>) {
        if self.control.len() >= self.cfg.queue_bound.max(64)
            || self.control_bytes >= self.cfg.control_queue_bytes
        {
            self.shut(POLICY, "slow consumer");
            return;
        }
        self.control_bytes += frame.len();
        self.control.push_back(Control { frame, book });
    }

    fn reply(&mut self, v: Value) {
        self.push_control(Bytes::from(frame(0x1, v.to_string().as_bytes())));
    }

    fn error(&mut self, id: Value, code: &str, message: &str) {
        self.reply(json!({"op": "error", "id": id, "code": code, "message": message}));
    }

    /// A token's grant lasts as long as the token (REST refuses it from then on too): once
    /// it has expired, the private subscriptions end, the connection is told with an
    /// `UNAUTHORIZED` error (id null), and it stays open for public channels or a new `auth`.
    /// Checked before every write ([`Conn::fill`]) and once a tick (a connection with
    /// nothing to write is told too).
    fn end_expired_grant(&mut self) {
        let Some(grant) = self.grant else { return };
        if !grant.expired(engine::pipeline::unix_now_ns()) {
            return;
        }
        self.grant = None;
        self.retain_subs(|s| PrivateChannel::parse(&s.name).is_none());
        self.error(
            Value::Null,
            "UNAUTHORIZED",
            "the token has expired: private channels ended; auth again with a new token",
        );
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        // Idle: give back what a burst made the write buffer grow to. Here (once a tick)
        // rather than whenever the buffer runs empty: on a busy stream that freed and
        // regrew it between writes (large buffers are mapped and unmapped, and each unmap
        // interrupts the other core to flush its TLB).
        if self.wbuf.is_empty() && self.wbuf.capacity() > 64 * 1024 {
            self.wbuf = Vec::with_capacity(16 * 1024);
            self.wpos = 0;
        }
        if now.duration_since(self.last_seen) > self.cfg.idle_timeout {
            self.shut(GOING_AWAY, "idle timeout");
            return;
        }
        self.end_expired_grant();
        if now.duration_since(self.last_ping) >= self.cfg.ping_interval {
            // The next ping is due an interval after this one was due, not after this tick:
            // a tick comes a little late, so counting from it put every other ping a whole
            // tick late (every 16 s instead of 15). A connection that fell a whole interval
            // behind (a stalled task) starts over from now rather than catching up.
            self.last_ping += self.cfg.ping_interval;
            if now.duration_since(self.last_ping) >= self.cfg.ping_interval {
                self.last_ping = now;
            }
            self.push_control(Bytes::from(frame(0x9, &[])));
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
        self.subs[i].resync = true;
    }

    /// Replaces a resyncing book's cursor and queues its fresh snapshot.
    fn resnapshot(&mut self, i: usize) {
        let Kind::Book(pair) = self.subs[i].kind else {
            return;
        };
        let snap = self.feed.with_book(|st| st.book_subscribe(pair));
        let Some((snap, cursor)) = snap else {
            return;
        };
        let sub = &mut self.subs[i];
        sub.cursor = cursor;
        sub.snap_seq = snap.seq;
        sub.resync = false;
        self.push_snapshot(pair, snap.frame_shared());
    }

    /// Counts one inbound message against `max_inbound_per_sec`: Some(true) when over it
    /// (the message gets a RATE_LIMITED error), None when over ten times it (the connection
    /// is closed with 1008).
    fn count_inbound(&mut self) -> Option<bool> {
        let now = Instant::now();
        if now.duration_since(self.rate_window) >= Duration::from_secs(1) {
            self.rate_window = now;
            self.rate_count = 0;
        }
        self.rate_count = self.rate_count.saturating_add(1);
        if self.rate_count > self.cfg.max_inbound_per_sec.saturating_mul(10) {
            self.shut(POLICY, "too many messages");
            return None;
        }
        Some(self.rate_count > self.cfg.max_inbound_per_sec)
    }

    fn rate_limited(&mut self, id: Value) {
        self.error(id, "RATE_LIMITED", "too many messages per second");
    }

    fn on_text(&mut self, text: &str) {
        let Some(limited) = self.count_inbound() else {
            return;
        };
        if text.len() > self.cfg.max_message_bytes {
            let msg = format!("messages are at most {} bytes", self.cfg.max_message_bytes);
            return self.error(Value::Null, "PAYLOAD_TOO_LARGE", &msg);
        }
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
            if limited {
                return self.rate_limited(Value::Null);
            }
            self.error(Value::Null, "BAD_REQUEST", "messages must be JSON objects");
            return;
        };
        let id = obj.get("id").cloned().unwrap_or(Value::Null);
        if limited {
            return self.rate_limited(id);
        }
        // Replies echo `id` exactly, so it is one a reply can carry unchanged: a string, an
        // integer within 64 bits, or null. A fraction or a bigger number would come back
        // rewritten (100000000000000000000000 as 1e+23); an object, array or boolean is no
        // id (README, Decisions) and was echoed whole, up to the message limit.
        let echoable = match &id {
            Value::Null | Value::String(_) => true,
            Value::Number(n) => n.is_i64() || n.is_u64(),
            Value::Bool(_) | Value::Array(_) | Value::Object(_) => false,
        };
        if !echoable {
            return self.error(
                Value::Null,
                "BAD_REQUEST",
                "id must be a string or an integer within 64 bits",
            );
        }
        // A name listed twice counts once (one subscription, one snapshot).
        let channels = || -> Option<Vec<String>> {
            let mut seen: HashSet<&str> = HashSet::new();
            let mut list: Vec<String> = Vec::new();
            for v in obj.get("channels")?.as_array()? {
                let name = v.as_str()?;
                if seen.insert(name) {
                    list.push(name.to_string());
                }
            }
            Some(list)
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
                Some(Target::Private(pc)) => match self.grant {
                    None => {
                        let msg = format!("channel {name} needs auth first");
                        return self.error(id, "UNAUTHORIZED", &msg);
                    }
                    // The REST rules (API.md): an expired token is UNAUTHORIZED, a valid
                    // one without the scope FORBIDDEN.
                    Some(g) if g.expired(engine::pipeline::unix_now_ns()) => {
                        let msg = format!("channel {name}: the token has expired, auth again");
                        return self.error(id, "UNAUTHORIZED", &msg);
                    }
                    Some(g) if !g.may_read(pc) => {
                        let msg = format!("channel {name} needs the scope {}", pc.read_scopes());
                        return self.error(id, "FORBIDDEN", &msg);
                    }
                    Some(_) => targets.push((name.clone(), Target::Private(pc))),
                },
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
        // Subscribed already: a channel that cannot lose a message keeps its cursor (a new
        // one would start at the ring's head, dropping what is published and not yet
        // written); a book gets a fresh snapshot and a ticker the current one, as at first.
        if self
            .subs
            .iter()
            .any(|s| s.name == name && matches!(s.kind, Kind::Lossless))
        {
            return;
        }
        self.remove(&name);
        match target {
            Target::Private(pc) => {
                let Some(grant) = self.grant.filter(|g| g.may_read(pc)) else {
                    return;
                };
                let cursor = self.feed.private_subscribe(grant.account, pc);
                self.subs.push(Sub {
                    name,
                    kind: Kind::Lossless,
                    cursor,
                    snap_seq: 0,
                    resync: false,
                    until: u64::MAX,
                });
            }
            Target::Public(pair, Sel::Book) => {
                let snap = self.feed.with_book(|st| st.book_subscribe(pair));
                let Some((snap, cursor)) = snap else {
                    return;
                };
                self.subs.push(Sub {
                    name,
                    kind: Kind::Book(pair),
                    cursor,
                    snap_seq: snap.seq,
                    resync: false,
                    until: u64::MAX,
                });
                self.push_snapshot(pair, snap.frame_shared());
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
                    name,
                    kind,
                    cursor,
                    snap_seq: 0,
                    resync: false,
                    until: u64::MAX,
                });
                if let Some(last) = last {
                    self.push_control(last.frame_shared());
                }
            }
        }
    }

    fn remove(&mut self, name: &str) {
        let Some(i) = self.subs.iter().position(|s| s.name == name) else {
            return;
        };
        self.subs.remove(i);
        self.forget_direct();
    }

    /// Keeps the subscriptions `keep` accepts (forgetting `direct` if any went).
    fn retain_subs(&mut self, keep: impl FnMut(&Sub) -> bool) {
        let before = self.subs.len();
        self.subs.retain(keep);
        if self.subs.len() != before {
            self.forget_direct();
        }
    }

    /// `direct` holds indexes into `subs`, kept across a write the socket did not take:
    /// after a removal they may name another subscription or none. The next fill finds
    /// what is pending again.
    fn forget_direct(&mut self) {
        self.direct.clear();
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
        // Each try is charged to the address's budget before the token is looked at: a
        // made-up token costs a store lookup, and over WebSockets it was otherwise bounded
        // only per connection (a few hundred thousand tries a second over many of them,
        // against the REST token endpoint's per-address rate).
        let gate = self.feed.inner.auth_gate.read().clone();
        if let Some(gate) = gate
            && let Err(retry_after_secs) = gate(self.peer)
        {
            let msg = format!("too many requests from this address: retry in {retry_after_secs} s");
            return self.error(id, "RATE_LIMITED", &msg);
        }
        let auth = self.feed.inner.authenticator.read().clone();
        let Some(auth) = auth else {
            return self.error(id, "UNAUTHORIZED", "authentication is not available");
        };
        match auth(token) {
            Ok(grant) => {
                // The private subscriptions the new token may not read go: all of another
                // account's, and those outside its scopes. The client is told which, with
                // an `unsubscribed` of id null ahead of the reply (it did not ask for it):
                // ending them silently left a client waiting on channels that had stopped.
                let same_account = self.grant.is_some_and(|g| g.account == grant.account);
                let mut ended = Vec::new();
                self.retain_subs(|s| {
                    let keep = PrivateChannel::parse(&s.name)
                        .is_none_or(|pc| same_account && grant.may_read(pc));
                    if !keep {
                        ended.push(s.name.clone());
                    }
                    keep
                });
                if !ended.is_empty() {
                    self.reply(json!({"op": "unsubscribed", "id": Value::Null, "channels": ended}));
                }
                // When the grant ends: the client re-auths before it without keeping the
                // token endpoint's `expires_in` (an extension of API.md's reply).
                let expires_at = crate::views::rfc3339_ms(grant.expires_ns);
                self.grant = Some(grant);
                self.reply(json!({"op": "authenticated", "id": id, "expiresAt": expires_at}));
            }
            Err(AuthRefusal::Invalid) => self.error(id, "UNAUTHORIZED", "invalid or expired token"),
            // The token may be good: the client keeps it and retries, and whatever this
            // connection was granted before stays.
            Err(AuthRefusal::Unavailable) => self.error(
                id,
                "SERVICE_UNAVAILABLE",
                "the token could not be checked now; retry later",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection of a feed opened on a temp dir with `cfg` (no socket: the tests drive
    /// its queue directly).
    fn conn(cfg: FeedConfig) -> (tempfile::TempDir, Conn) {
        let dir = tempfile::tempdir().expect("tempdir");
        let feed = Feed::open(cfg, dir.path()).expect("feed");
        let registration = feed.inner.shutdown.register().expect("not shutting down");
        let conn = Conn::new(feed, registration.signal());
        (dir, conn)
    }

    fn frame_of(bytes: usize) -> Bytes {
        Bytes::from(frame(0x1, &vec![b'x'; bytes]))
    }

    /// The control queue was bounded by count only: 64 snapshots of 1 MiB were 64 MiB held
    /// for a client that does not read. Past its bytes it now closes with 1008, well under
    /// its count.
    #[tokio::test]
    async fn the_control_queue_is_bounded_by_bytes_too() {
        let (_dir, mut c) = conn(FeedConfig {
            control_queue_bytes: 256 * 1024,
            ..FeedConfig::default()
        });
        assert!(
            c.cfg.queue_bound >= 64,
            "the count bound is not what stops it"
        );
        for _ in 0..4 {
            c.push_control(frame_of(64 * 1024));
            assert_eq!(c.close, None, "within the bound");
        }
        assert_eq!(c.control.len(), 4);
        c.push_control(frame_of(16));
        assert_eq!(c.close, Some((POLICY, "slow consumer")));
        assert_eq!(c.control.len(), 4, "the refused frame is not queued");
    }

    /// One frame of any size fits (a full-depth snapshot of a deep book can be far larger
    /// than the bound), and what the write buffer takes no longer counts.
    #[tokio::test]
    async fn one_frame_over_the_bound_fits_and_taken_frames_stop_counting() {
        let (_dir, mut c) = conn(FeedConfig {
            control_queue_bytes: 64 * 1024,
            ..FeedConfig::default()
        });
        c.push_control(frame_of(100));
        c.push_snapshot(PairId(0), frame_of(1024 * 1024));
        assert_eq!(
            c.close, None,
            "a snapshot larger than the bound is accepted"
        );
        c.take_control();
        assert!(c.control.is_empty());
        assert_eq!(c.control_bytes, 0);
        for _ in 0..3 {
            c.push_control(frame_of(16 * 1024));
        }
        assert_eq!(c.close, None, "the taken bytes were counted still");
    }

    /// A snapshot still queued is replaced by a newer one of the same book, not stacked
    /// behind it (a client re-subscribing without reading); other books' stay.
    #[tokio::test]
    async fn a_queued_snapshot_is_replaced_by_the_next_of_its_book() {
        let (_dir, mut c) = conn(FeedConfig {
            control_queue_bytes: 64 * 1024,
            ..FeedConfig::default()
        });
        c.push_snapshot(PairId(1), frame_of(10));
        for _ in 0..10 {
            c.push_control(frame_of(20));
            c.push_snapshot(PairId(0), frame_of(10 * 1024));
        }
        assert_eq!(c.close, None, "ten snapshots of one book were stacked");
        let books: Vec<Option<PairId>> = c.control.iter().map(|q| q.book).collect();
        let mut want = vec![Some(PairId(1))];
        want.extend([None; 10]);
        want.push(Some(PairId(0)));
        assert_eq!(books, want);
        let queued: usize = c.control.iter().map(|q| q.frame.len()).sum();
        assert_eq!(c.control_bytes, queued);
    }
}
