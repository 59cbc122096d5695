//! Market data derivation and the WebSocket price streams.
//!
//! - [`Feed`]: the handle the API holds. [`Feed::listener`] is the pipeline consumer that
//!   derives tickers (rolling 24 h), trades, the L2 book with its sequence, and candles;
//!   [`Feed::router`] serves the public market data routes and `GET /v1/ws`.
//! - State lives behind one `RwLock`: the engine thread writes once per batch; REST handlers
//!   and WebSocket subscriptions read. Trades and candles are kept in `marketdata.sqlite`
//!   so that a restart keeps the 24 h figures, recent trades and candles.

pub mod bench;
pub mod bus;
pub mod candles;
pub mod damaged_store;
mod grant;
pub mod l2;
pub mod path;
pub mod problem;
mod read_gate;
mod rest;
mod shutdown;
pub mod state;
pub mod store;
pub mod views;
pub mod window;
mod ws;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use engine::AccountId;
use engine::pipeline::{OutputListener, Processed};
use parking_lot::{Mutex, RwLock};

pub use grant::{AuthRefusal, Grant, ReadScopes};
pub use l2::checksum_of;
pub use rest::openapi;
pub use state::Published;

use state::{DeriveConfig, State};
use store::Store;

/// Limits and timings of the feed.
#[derive(Clone, Debug)]
pub struct FeedConfig {
    /// Most concurrent WebSocket connections (more get 503).
    pub max_connections: usize,
    /// Most subscriptions per connection.
    pub max_subscriptions: usize,
    /// Inbound client messages per second per connection (a burst of as many is allowed).
    pub max_inbound_per_sec: u32,
    /// Largest inbound message, bytes.
    pub max_message_bytes: usize,
    /// Outbound messages queued per connection before it counts as slow.
    pub queue_bound: usize,
    /// Bytes of control frames (replies, book snapshots, first tickers, pings) a connection
    /// may hold queued before it counts as slow and is closed with 1008. The control queue
    /// is also bounded by count (`queue_bound`, at least 64), but one book snapshot can be
    /// hundreds of KiB, so a count alone let a client that does not read hold gigabytes
    /// until the stall timeout. A push is refused only once the queue already holds this
    /// many bytes: the queue never holds more than this plus one frame, and one frame of
    /// any size (a full-depth snapshot of the deepest book) is always accepted.
    pub control_queue_bytes: usize,
    /// Messages buffered per channel for subscribers that fall behind; the rings hold at
    /// least `queue_bound` whatever this says ([`FeedConfig::ring_capacity`]).
    pub channel_capacity: usize,
    /// A connection that wrote less than this ago gathers what arrives until then and writes
    /// it at once (at most one write per interval on a busy stream; a quiet connection writes
    /// at once). Zero: write on every wake-up.
    pub min_write_interval: Duration,
    /// Writes per second that all connections together aim to stay under: a busy
    /// connection's write interval is at least `connections / max_writes_per_sec` (so with
    /// 1000 connections and 80,000/s, 12.5 ms), since on a busy server the cost is per write
    /// (system call, TCP segment, the reader's wake-up) more than per byte. Zero: no such
    /// floor. 80,000 rather than 125,000 (8 ms at 1000 connections): with 1000 subscribers
    /// to book, trades and ticker at 10,000 trades/s on 2 vCPUs, it had the lower trade
    /// p99 in 11 of 12 interleaved pairs of `bourse bench ws` runs (feed/README.md).
    pub max_writes_per_sec: u32,
    /// Server ping period.
    pub ping_interval: Duration,
    /// A connection silent (no frame, no pong) this long is closed.
    pub idle_timeout: Duration,
    /// A connection whose queue stays full this long is closed with 1008.
    pub stall_timeout: Duration,
    /// How long a closing connection may take to flush its close frame.
    pub close_grace: Duration,
    /// Book resyncs (fresh snapshots) allowed per connection per minute before 1008.
    pub max_resyncs_per_min: u32,
    /// Candles kept in memory per pair and interval (all stay in SQLite).
    pub candles_retained: usize,
    /// Advance the 24 h horizon with the wall clock when no batch arrives (quiet markets).
    pub wall_clock_expiry: bool,
    /// A pair's book changes are merged into one `book` update (one book seq, the absolute
    /// amount of each changed level) at most this often; a REST book read or a new book
    /// subscription publishes what is pending first. Zero: one update per pipeline batch.
    pub book_interval: Duration,
}

impl FeedConfig {
    /// Messages each channel ring holds: `channel_capacity`, but never fewer than
    /// `queue_bound`, since a cursor overtaken by its ring counts as slow whatever its
    /// bound (so a bound above the ring would have no effect).
    pub fn ring_capacity(&self) -> usize {
        self.channel_capacity.max(self.queue_bound)
    }

    /// How long a busy connection gathers between writes with `connections` open:
    /// `min_write_interval`, or more when that many connections would write more often than
    /// `max_writes_per_sec`.
    pub fn write_interval(&self, connections: usize) -> Duration {
        let min = self.min_write_interval;
        if self.max_writes_per_sec == 0 {
            return min;
        }
        let floor_us = connections as u64 * 1_000_000 / u64::from(self.max_writes_per_sec);
        min.max(Duration::from_micros(floor_us))
    }
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            max_connections: 20_000,
            max_subscriptions: 50,
            max_inbound_per_sec: 20,
            max_message_bytes: 16 * 1024,
            queue_bound: 4096,
            control_queue_bytes: 8 * 1024 * 1024,
            channel_capacity: 4096,
            min_write_interval: Duration::from_millis(2),
            max_writes_per_sec: 80_000,
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(10),
            close_grace: Duration::from_secs(10),
            max_resyncs_per_min: 10,
            candles_retained: 10_000,
            wall_clock_expiry: true,
            book_interval: Duration::from_millis(5),
        }
    }
}

/// Raises this process's soft limit of open files to the hard limit (each WebSocket
/// connection holds one) and returns the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(_) => rlimit::Resource::NOFILE.get().map_or(0, |(soft, _)| soft),
    }
}

/// Why the feed could not open.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("market data store: {0}")]
    Store(#[from] rusqlite::Error),
}

/// An account's private channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrivateChannel {
    Orders,
    Fills,
    Wallet,
}

impl PrivateChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            PrivateChannel::Orders => "orders",
            PrivateChannel::Fills => "fills",
            PrivateChannel::Wallet => "wallet",
        }
    }

    pub fn parse(s: &str) -> Option<PrivateChannel> {
        match s {
            "orders" => Some(PrivateChannel::Orders),
            "fills" => Some(PrivateChannel::Fills),
            "wallet" => Some(PrivateChannel::Wallet),
            _ => None,
        }
    }
}

/// Verifies a token: its account and what it may read ([`Grant`]), or why not: unknown or
/// expired, or not checkable now ([`AuthRefusal`]).
pub type Authenticator = Arc<dyn Fn(&str) -> Result<Grant, AuthRefusal> + Send + Sync>;

/// Admits an `auth` op from a client address (`None`: unknown), or says in how many seconds
/// to retry: the server's per-address rate limit, which the token endpoint spends too.
pub type AuthGate = Arc<dyn Fn(Option<std::net::IpAddr>) -> Result<(), u64> + Send + Sync>;

struct PrivateEntry {
    bus: Arc<bus::Bus>,
    /// The seq of the ring's last message.
    seq: u64,
    /// Pushed to since the last [`Feed::wake_private`] (listed in `unannounced`).
    unannounced: bool,
}

/// The accounts' private channel rings, created on first subscribe. A ring nobody reads any
/// more goes at its account's next publish, or at the next sweep: when a new ring would
/// make the map reach `sweep_at`, the unread ones are dropped first and `sweep_at` becomes
/// twice what is left (at least [`PRIVATE_SWEEP_MIN`]), so sweeping costs O(1) per ring
/// created and an account that subscribed once and never trades holds nothing for long.
///
/// A channel's `seq` never goes back during the server's run, though its ring may go and
/// come back: a new ring counts on from `issued`, the highest seq any private ring has sent,
/// so it starts past every number its channel sent before (a client that drops messages at
/// or below the last seq it saw loses nothing after it subscribes again), and no
/// per-account counter outlives the ring. Within a ring's life seq counts one by one, so a
/// gap still means a lost message.
struct PrivateRings {
    map: HashMap<(AccountId, PrivateChannel), PrivateEntry>,
    sweep_at: usize,
    /// The highest seq sent on any private channel.
    issued: u64,
    /// Rings pushed to since the last [`Feed::wake_private`]: their subscribers are woken
    /// once per batch, not once per message.
    unannounced: Vec<(AccountId, PrivateChannel)>,
}

const PRIVATE_SWEEP_MIN: usize = 64;

impl PrivateRings {
    fn new() -> Self {
        PrivateRings {
            map: HashMap::new(),
            sweep_at: PRIVATE_SWEEP_MIN,
            issued: 0,
            unannounced: Vec::new(),
        }
    }

    /// A cursor on `key`'s ring, creating the ring (of `cap` messages) if needed.
    fn subscribe(&mut self, key: (AccountId, PrivateChannel), cap: usize) -> bus::Cursor {
        if !self.map.contains_key(&key) && self.map.len() + 1 >= self.sweep_at {
            self.map.retain(|_, e| e.bus.receiver_count() > 0);
            self.sweep_at = (2 * self.map.len()).max(PRIVATE_SWEEP_MIN);
        }
        let issued = self.issued;
        self.map
            .entry(key)
            .or_insert_with(|| PrivateEntry {
                bus: bus::Bus::new(cap),
                seq: issued,
                unannounced: false,
            })
            .bus
            .subscribe()
    }
}

pub(crate) struct Inner {
    pub(crate) config: FeedConfig,
    pub(crate) state: RwLock<State>,
    store: Arc<Mutex<Store>>,
    /// Where the store is (the writer leaves the rebuild marker beside it).
    store_path: PathBuf,
    /// Whether the store's writer has stopped, and why ([`Feed::store_health`]).
    store_health: Arc<StoreHealth>,
    stored_seq: u64,
    private: Mutex<PrivateRings>,
    pub(crate) authenticator: RwLock<Option<Authenticator>>,
    pub(crate) auth_gate: RwLock<Option<AuthGate>>,
    pub(crate) connections: AtomicUsize,
    /// The open connections, told to close with 1001 when the server shuts down.
    pub(crate) shutdown: Arc<shutdown::Shutdown>,
    /// WebSocket writes (system calls) and the bytes they took, since the start.
    pub(crate) ws_writes: WriteCounters,
    /// The thread that publishes book changes left pending after a batch once
    /// `book_interval` has passed (none when the interval is zero).
    book_flusher: std::sync::OnceLock<std::thread::Thread>,
}

/// Counts of the WebSocket writes (see [`Feed::ws_write_totals`]).
#[derive(Debug, Default)]
pub(crate) struct WriteCounters {
    pub(crate) writes: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

impl WriteCounters {
    pub(crate) fn add(&self, bytes: usize) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// WebSocket writes and bytes written since the feed opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteTotals {
    pub writes: u64,
    pub bytes: u64,
}

/// The market data feed. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Opens the market data store at `path` and loads it, or, when it is damaged, sets its
/// files aside (`marketdata.sqlite.damaged-<unix seconds>`, with its `-wal` and `-shm`;
/// [`damaged_store::set_aside`] keeps only the newest [`damaged_store::SET_ASIDE_KEPT`]
/// copies) and starts a new, empty one, which recovery then fills by replaying the whole
/// journal (its applied seq is 0). Damaged means: the writer of the server that ran last
/// found it so and left the rebuild marker `marketdata.sqlite.rebuild` (or an operator made
/// one; [`damaged_store::take_marker`]), or SQLite finds it so on opening or loading it (not
/// a database, or corrupt). Such a store used to fail every start ("market data store: file
/// is not a database") until its file was removed by hand. Other errors still fail.
fn open_store(path: &Path, candles_retained: usize) -> Result<(Store, store::Loaded), FeedError> {
    damaged_store::take_marker_logged(path, "market data store")?;
    let open = || {
        let store = Store::open(path)?;
        let loaded = store.load(candles_retained)?;
        Ok((store, loaded))
    };
    match open() {
        Err(e) if damaged_store::is_damaged(&e) => {
            damaged_store::set_aside_logged(path, "market data store", &e)?;
            Ok(open()?)
        }
        other => Ok(other?),
    }
}

impl Feed {
    /// Opens (or creates) `data_dir/marketdata.sqlite` and loads trades and candles; a
    /// damaged store is set aside and a new one started ([`open_store`]).
    pub fn open(config: FeedConfig, data_dir: &Path) -> Result<Feed, FeedError> {
        std::fs::create_dir_all(data_dir)?;
        let nofile = raise_nofile_limit();
        if nofile < config.max_connections as u64 + 256 {
            tracing::warn!(
                nofile,
                max_connections = config.max_connections,
                "open-file limit below the WebSocket connection limit"
            );
        }
        let path = data_dir.join("marketdata.sqlite");
        let (store, loaded) = open_store(&path, config.candles_retained)?;
        let mut state = State::new(DeriveConfig {
            channel_capacity: config.ring_capacity(),
            candles_retained: config.candles_retained,
            book_interval: config.book_interval,
        });
        state.load(&loaded);
        let feed = Feed {
            inner: Arc::new(Inner {
                config,
                state: RwLock::new(state),
                store: Arc::new(Mutex::new(store)),
                store_path: path,
                store_health: Arc::default(),
                stored_seq: loaded.applied_seq,
                private: Mutex::new(PrivateRings::new()),
                authenticator: RwLock::new(None),
                auth_gate: RwLock::new(None),
                connections: AtomicUsize::new(0),
                shutdown: Arc::default(),
                ws_writes: WriteCounters::default(),
                book_flusher: std::sync::OnceLock::new(),
            }),
        };
        if feed.inner.config.wall_clock_expiry {
            feed.start_clock();
        }
        if !feed.inner.config.book_interval.is_zero() {
            feed.start_book_flusher();
        }
        Ok(feed)
    }

    /// Once a second, on a quiet market, moves the 24 h horizon with the wall clock so that
    /// trades leave the window (and the WebSocket tickers show it) without new batches. The
    /// thread ends when the feed is dropped.
    fn start_clock(&self) {
        let weak = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("bourse-feed-clock".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    Feed { inner }.touch_clock();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "feed clock thread not started");
        }
    }

    /// Publishes book changes that a batch left pending (`book_interval` not yet passed) once
    /// it has passed, so that the last changes before a pause go out too. Parked while
    /// nothing is pending; the engine thread unparks it. Ends when the feed is dropped.
    fn start_book_flusher(&self) {
        let weak = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("bourse-feed-book".into())
            .spawn(move || {
                loop {
                    std::thread::park_timeout(Duration::from_secs(1));
                    loop {
                        let Some(inner) = weak.upgrade() else {
                            return;
                        };
                        let due = {
                            let st = inner.state.read();
                            if !st.book_pending() {
                                break;
                            }
                            st.book_flush_due()
                        };
                        let wait = due.map_or(Duration::ZERO, |d| {
                            d.saturating_duration_since(std::time::Instant::now())
                        });
                        if !wait.is_zero() {
                            drop(inner);
                            std::thread::sleep(wait);
                            continue;
                        }
                        let mut st = inner.state.write();
                        if st.book_pending() {
                            st.flush_book();
                            st.wake_subscribers();
                        }
                    }
                }
            });
        match spawned {
            Ok(handle) => {
                let _ = self.inner.book_flusher.set(handle.thread().clone());
            }
            Err(e) => tracing::warn!(error = %e, "feed book thread not started"),
        }
    }

    /// Runs `f` on the state with no book change pending (publishing them first), so that a
    /// book read or snapshot is exactly the state its seq names.
    pub(crate) fn with_book<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        {
            let st = self.inner.state.read();
            if !st.book_pending() {
                return f(&st);
            }
        }
        let mut st = self.inner.state.write();
        if st.book_pending() {
            st.flush_book();
            st.wake_subscribers();
        }
        f(&parking_lot::RwLockWriteGuard::downgrade(st))
    }

    pub fn config(&self) -> &FeedConfig {
        &self.inner.config
    }

    /// The market data consumer to add to the pipeline.
    pub fn listener(&self) -> Box<dyn OutputListener> {
        Box::new(FeedListener {
            feed: self.clone(),
            store: StoreWriter::start(
                self.inner.store.clone(),
                self.inner.store_path.clone(),
                self.inner.store_health.clone(),
            ),
        })
    }

    /// The market data routes and `GET /v1/ws`.
    pub fn router(&self) -> axum::Router {
        rest::router(self.clone())
    }

    /// Sets the token check of the WebSocket `auth` op.
    pub fn set_authenticator(&self, f: Authenticator) {
        *self.inner.authenticator.write() = Some(f);
    }

    /// Sets the gate every `auth` op passes before its token is looked at (without one,
    /// every op is admitted).
    pub fn set_auth_gate(&self, gate: AuthGate) {
        *self.inner.auth_gate.write() = Some(gate);
    }

    /// Starts closing every WebSocket connection with 1001 (Going Away), once it has written
    /// the control frames it queued and what its rings hold now (within half its
    /// `close_grace`); an upgrade from now on gets a 503 problem. Returns at once:
    /// [`Feed::connections_closed`] waits for the connections to finish. For the server's
    /// graceful shutdown (its HTTP drain does not wait for upgraded connections).
    pub fn close_connections(&self) {
        self.inner.shutdown.start();
    }

    /// Waits, at most `limit`, until every WebSocket connection has ended (its close
    /// handshake done, or its `close_grace` over); whether they all have.
    pub async fn connections_closed(&self, limit: Duration) -> bool {
        self.inner.shutdown.closed(limit).await
    }

    /// Sends `data` (a REST object) to `account`'s connections subscribed to `channel`.
    /// Never blocks; encoded once however many connections listen. The subscribers are woken
    /// by the next [`Feed::wake_private`] (the publisher calls it once per batch), so a
    /// command that makes thousands of messages for one account reaches a subscriber that
    /// keeps up whole: its ring holds every message not yet announced ([`bus::Bus`]).
    pub fn publish_private(
        &self,
        account: AccountId,
        channel: PrivateChannel,
        data: serde_json::Value,
    ) {
        let mut guard = self.inner.private.lock();
        let rings = &mut *guard;
        let key = (account, channel);
        let Some(entry) = rings.map.get_mut(&key) else {
            return;
        };
        if entry.bus.receiver_count() == 0 {
            rings.map.remove(&key);
            return;
        }
        entry.seq += 1;
        rings.issued = rings.issued.max(entry.seq);
        let msg = views::DataMsg {
            channel: channel.as_str(),
            seq: entry.seq,
            data: &data,
        };
        if let Ok(text) = serde_json::to_string(&msg) {
            entry.bus.push_text(entry.seq, &text);
            if !entry.unannounced {
                entry.unannounced = true;
                rings.unannounced.push(key);
            }
        }
    }

    /// Wakes the subscribers of every private ring pushed to since the last call.
    pub fn wake_private(&self) {
        let buses = {
            let mut guard = self.inner.private.lock();
            let rings = &mut *guard;
            let keys = std::mem::take(&mut rings.unannounced);
            let mut buses = Vec::with_capacity(keys.len());
            for key in &keys {
                if let Some(entry) = rings.map.get_mut(key) {
                    entry.unannounced = false;
                    buses.push(entry.bus.clone());
                }
            }
            buses
        };
        for bus in buses {
            bus.wake();
        }
    }

    pub(crate) fn private_subscribe(
        &self,
        account: AccountId,
        channel: PrivateChannel,
    ) -> bus::Cursor {
        let cap = self.inner.config.ring_capacity();
        self.inner.private.lock().subscribe((account, channel), cap)
    }

    /// The market data store's writer: stopped, and stopped because the file is damaged
    /// ([`StoreHealth`]).
    pub fn store_health(&self) -> (bool, bool) {
        let h = &self.inner.store_health;
        (
            h.stopped.load(Ordering::Acquire),
            h.damaged.load(Ordering::Acquire),
        )
    }

    /// The feed's applied sequence (what it has derived).
    pub fn applied_seq(&self) -> u64 {
        self.inner.state.read().applied_seq
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.inner
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// WebSocket writes (system calls that took bytes) and bytes written since the feed
    /// opened. Their rate against `max_writes_per_sec` shows whether busy connections get
    /// their write interval or fall behind it (a server short of CPU writes less often,
    /// more per write, and every message waits longer).
    pub fn ws_write_totals(&self) -> WriteTotals {
        WriteTotals {
            writes: self.inner.ws_writes.writes.load(Ordering::Relaxed),
            bytes: self.inner.ws_writes.bytes.load(Ordering::Relaxed),
        }
    }

    /// Advances the rolling window's horizon to the wall clock when no batch came for a
    /// second (called by REST readers and once a second by the clock thread). Derivation
    /// stays driven by batch times; the wall clock only moves the horizon forward.
    pub(crate) fn touch_clock(&self) {
        if !self.inner.config.wall_clock_expiry {
            return;
        }
        let now = engine::pipeline::unix_now_ns();
        let due = {
            let st = self.inner.state.read();
            st.recovered && st.clock_ns + 1_000_000_000 < now
        };
        if due {
            self.inner.state.write().advance_clock(now);
        }
    }
}

/// The pipeline consumer: derives on the engine thread and hands what is to be kept
/// (trades, candles, book seqs, applied seq) to the store's writer thread.
struct FeedListener {
    feed: Feed,
    store: StoreWriter,
}

impl std::fmt::Debug for FeedListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FeedListener")
    }
}

impl OutputListener for FeedListener {
    fn applied_seq(&self) -> u64 {
        self.feed.inner.stored_seq
    }

    fn on_recovered(&mut self, engine: &engine::Engine, last_seq: u64) {
        self.feed.inner.state.write().recover(engine, last_seq);
        // The 24 h windows as of now, not as of the last batch before the stop: after a
        // server was down, the tickers the channels start with (and hand to subscribers at
        // once) held trades that had left the window until the clock thread's first tick.
        self.feed.touch_clock();
    }

    fn on_batch(&mut self, batch: &[Processed<'_>]) {
        let out = self.feed.inner.state.write().apply(batch);
        if out.book_pending
            && let Some(t) = self.feed.inner.book_flusher.get()
        {
            t.unpark();
        }
        if out.last_seq == 0 {
            return;
        }
        self.store.send(out);
    }
}

/// Batches queued for the store's writer before the engine thread waits for it.
const STORE_QUEUE: usize = 4096;
/// Most batches written in one SQLite transaction.
const STORE_GROUP: usize = 1024;
/// How long the store's writer gathers batches after the first before it commits them
/// (unless [`STORE_GROUP`] of them are waiting first), and the step it sleeps in while it
/// does.
const STORE_LINGER: Duration = Duration::from_millis(100);
const STORE_LINGER_STEP: Duration = Duration::from_millis(10);

/// Whether the market data store's writer has stopped (a failed write, or its thread could
/// not start) and whether SQLite reported the file damaged. The market data in memory stays
/// live either way (clients see no difference), so this is not a readiness failure, but the
/// store no longer follows and the next start replays everything since its last good write:
/// the operator learns it from `/metrics` (`bourse_marketdata_store_stopped`,
/// `bourse_marketdata_store_damaged`) as well as the log line.
#[derive(Debug, Default)]
pub struct StoreHealth {
    pub stopped: AtomicBool,
    pub damaged: AtomicBool,
}

/// Writes the feed's store behind the engine thread, on `bourse-feed-store`: one SQLite
/// transaction per group of the batches waiting (with the applied seq of the last), so a
/// commit, and a WAL checkpoint's fsyncs, never hold up publishing, and a busy stream costs
/// one transaction per group instead of one per batch. After the first batch of a group the
/// writer lingers ([`STORE_LINGER`]) and sleeps in steps rather than waiting on the
/// channel: a thread blocked on the channel is woken by every send, and under a stream of
/// small batches those wake-ups (and a transaction per batch) cost more CPU than the store
/// itself (about 2 us per created order over HTTP, measured with `bourse bench http
/// --server-pid`). A step of [`STORE_LINGER_STEP`] drains the queue far faster than the
/// engine thread can fill it. Nothing is lost by writing late: the
/// journal holds every batch before the feed sees it, and recovery replays to the feed every
/// batch after its stored applied seq, so a crash before a group is written only means that
/// the group is derived again. The queue is bounded: past it the engine thread waits.
/// Dropping the writer writes what is queued and joins the thread.
///
/// A failed write stops the writer for good (it drains its queue and writes nothing more,
/// logging once): the store stays at its last good group, and the next start replays the
/// journal from there. Going on wrote the next group's applied seq over the failed one's
/// trades, so a full disk that cleared (or a transient I/O error) left a gap in the stored
/// trades that no restart would fill, and logged an error per group, ten a second. When
/// SQLite says the file is damaged (`SQLITE_CORRUPT`, `SQLITE_NOTADB`: a bad page the write
/// reached), replaying into the same file at the next start would meet the same page again,
/// so the writer also leaves the rebuild marker beside the store ([`store_damaged`]): the
/// next start sets the file aside and rebuilds it from the journal ([`open_store`]).
struct StoreWriter {
    tx: Option<std::sync::mpsc::SyncSender<state::BatchOutput>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StoreWriter {
    fn start(store: Arc<Mutex<Store>>, path: PathBuf, health: Arc<StoreHealth>) -> StoreWriter {
        let thread_health = health.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel::<state::BatchOutput>(STORE_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("bourse-feed-store".into())
            .spawn(move || {
                let mut failed = false;
                while let Ok(mut group) = rx.recv() {
                    if failed {
                        continue;
                    }
                    let deadline = std::time::Instant::now() + STORE_LINGER;
                    let mut batches = 1;
                    loop {
                        let mut open = true;
                        while batches < STORE_GROUP {
                            match rx.try_recv() {
                                Ok(next) => {
                                    group.trades.extend(next.trades);
                                    group.candles.extend(next.candles);
                                    group.books.extend(next.books);
                                    group.last_seq = next.last_seq;
                                    group.last_ts_ns = group.last_ts_ns.max(next.last_ts_ns);
                                    batches += 1;
                                }
                                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                                    open = false;
                                    break;
                                }
                            }
                        }
                        let now = std::time::Instant::now();
                        if !open || batches >= STORE_GROUP || now >= deadline {
                            break;
                        }
                        std::thread::sleep(STORE_LINGER_STEP.min(deadline - now));
                    }
                    // The latest state of each candle and book is enough.
                    let mut seen = std::collections::HashSet::new();
                    group.candles.reverse();
                    group
                        .candles
                        .retain(|(pair, iv, c)| seen.insert((*pair, iv.index(), c.open_ms)));
                    let mut seen = std::collections::HashSet::new();
                    group.books.reverse();
                    group.books.retain(|b| seen.insert(b.pair));
                    let res = store.lock().commit(
                        &group.trades,
                        &group.candles,
                        &group.books,
                        (group.last_seq, group.last_ts_ns),
                    );
                    if let Err(e) = res {
                        failed = true;
                        let damaged = damaged_store::is_damaged(&e);
                        thread_health.damaged.store(damaged, Ordering::Release);
                        thread_health.stopped.store(true, Ordering::Release);
                        if damaged {
                            store_damaged(&path, &e);
                        } else {
                            tracing::error!(
                                error = %e,
                                "market data store write failed: it stops here, and the next \
                                 start replays the journal into it from its last good write"
                            );
                        }
                    }
                }
            });
        match spawned {
            Ok(thread) => StoreWriter {
                tx: Some(tx),
                thread: Some(thread),
            },
            Err(e) => {
                health.stopped.store(true, Ordering::Release);
                tracing::error!(error = %e, "market data store thread not started");
                StoreWriter {
                    tx: None,
                    thread: None,
                }
            }
        }
    }

    fn send(&self, out: state::BatchOutput) {
        if let Some(tx) = &self.tx
            && tx.send(out).is_err()
        {
            tracing::error!("market data store thread gone");
        }
    }
}

/// The writer found the store at `path` damaged (`e`): logs it and leaves the rebuild
/// marker, synced ([`damaged_store::write_marker`]), so the next start sets the file aside and
/// rebuilds the store from the journal.
fn store_damaged(path: &Path, e: &rusqlite::Error) {
    tracing::error!(
        file = %path.display(),
        error = %e,
        marker = %damaged_store::marker_path(path).display(),
        "the market data store is damaged: its writer stops here (the market data in memory \
         stays live); restart the server, which sets the file aside and rebuilds the store \
         from the journal"
    );
    damaged_store::leave_marker(path, "market data store", "writer", e);
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FeedConfig;

    /// A write that fails leaves the store at its last good group: a later group that
    /// succeeds must not record an applied seq past the failed one's trades (the restart
    /// would then never replay them).
    #[test]
    fn a_failed_store_write_stops_the_writer_rather_than_leave_a_gap() {
        use super::{StoreWriter, state::BatchOutput, store::Store};
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("marketdata.sqlite");
        let store = std::sync::Arc::new(parking_lot::Mutex::new(Store::open(&path).unwrap()));
        let batch = |seq: u64| BatchOutput {
            trades: vec![stored_trade(seq)],
            last_seq: seq,
            last_ts_ns: seq as i64,
            ..BatchOutput::default()
        };
        let health = std::sync::Arc::new(super::StoreHealth::default());
        let writer = StoreWriter::start(store.clone(), path.clone(), health.clone());
        writer.send(batch(1));
        drop(writer); // writes what is queued
        let flags = |h: &super::StoreHealth| {
            use std::sync::atomic::Ordering::Acquire;
            (h.stopped.load(Acquire), h.damaged.load(Acquire))
        };
        assert_eq!(flags(&health), (false, false));
        let set_query_only = |on: bool| {
            store
                .lock()
                .conn()
                .pragma_update(None, "query_only", on)
                .unwrap();
        };
        set_query_only(true);
        let writer = StoreWriter::start(store.clone(), path.clone(), health.clone());
        writer.send(batch(2)); // fails
        std::thread::sleep(std::time::Duration::from_millis(400));
        // Stopped, for a reason other than damage (a read-only store).
        assert_eq!(flags(&health), (true, false));
        set_query_only(false);
        writer.send(batch(3)); // the disk is fine again
        drop(writer);
        let loaded = store.lock().load(10).unwrap();
        let ids: Vec<u64> = loaded.trades.iter().map(|t| t.id).collect();
        assert_eq!(loaded.applied_seq, 1, "stored trades {ids:?}");
        assert_eq!(ids, vec![1]);
    }

    /// Trade `id` of pair 0 as stored, at `id` ns.
    fn stored_trade(id: u64) -> super::store::StoredTrade {
        super::store::StoredTrade {
            id,
            pair: 0,
            ts_ns: id as i64,
            price: 100,
            lots: 1,
            quote: 100,
            taker_buy: true,
        }
    }

    /// A store of `n` trades at `path` whose pages after the first (the schema) are then
    /// overwritten with garbage: it opens (SQLite reads only the header and the schema), and
    /// any read or write of a table is `SQLITE_CORRUPT`.
    fn store_damaged_past_its_header(path: &std::path::Path, n: u64) {
        use super::store::{Store, StoredTrade};
        use std::io::{Seek, SeekFrom, Write};
        let trades: Vec<StoredTrade> = (1..=n).map(stored_trade).collect();
        let mut store = Store::open(path).unwrap();
        store.commit(&trades, &[], &[], (n, n as i64)).unwrap();
        drop(store); // the last connection checkpoints and removes the -wal
        let len = std::fs::metadata(path).unwrap().len();
        assert!(len > 8 * 4096, "{len} bytes");
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(4096)).unwrap();
        f.write_all(&vec![0xAB; (len - 4096) as usize]).unwrap();
        f.sync_all().unwrap();
    }

    /// A write that reaches a damaged page stops the writer and leaves the rebuild marker
    /// (saying why); the next open sets the file aside with the marker beside it and starts
    /// an empty store (applied seq 0: recovery replays the whole journal). The writer used
    /// to stop without a marker, so every start reopened the damaged file.
    #[test]
    fn a_damaged_store_write_leaves_the_rebuild_marker() {
        use super::{Feed, StoreWriter, damaged_store, state::BatchOutput, store::Store};
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("marketdata.sqlite");
        store_damaged_past_its_header(&path, 5_000);
        let store = std::sync::Arc::new(parking_lot::Mutex::new(Store::open(&path).unwrap()));
        let health = std::sync::Arc::new(super::StoreHealth::default());
        let writer = StoreWriter::start(store.clone(), path.clone(), health.clone());
        writer.send(BatchOutput {
            last_seq: 5_001,
            last_ts_ns: 5_001,
            ..BatchOutput::default()
        });
        drop(writer);
        drop(store);
        use std::sync::atomic::Ordering::Acquire;
        assert!(health.stopped.load(Acquire) && health.damaged.load(Acquire));
        let marker = damaged_store::marker_path(&path);
        let text = std::fs::read_to_string(&marker).expect("the rebuild marker");
        assert!(text.contains("malformed"), "{text}");
        let feed = Feed::open(FeedConfig::default(), tmp.path()).unwrap();
        assert_eq!(feed.applied_seq(), 0);
        assert!(!marker.exists());
        let names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let reason = names
            .iter()
            .find(|n| n.starts_with("marketdata.sqlite.damaged-") && n.ends_with(".reason"))
            .unwrap_or_else(|| panic!("no set-aside copy: {names:?}"));
        let aside = tmp.path().join(reason.trim_end_matches(".reason"));
        assert!(aside.exists(), "{names:?}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join(reason)).unwrap(),
            text
        );
    }

    /// A store whose header is fine but whose tables are damaged fails when it is loaded,
    /// not when it is opened: that too sets the file aside and starts an empty store.
    #[test]
    fn a_store_damaged_past_its_header_is_set_aside_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("marketdata.sqlite");
        store_damaged_past_its_header(&path, 5_000);
        let feed = super::Feed::open(FeedConfig::default(), tmp.path()).unwrap();
        assert_eq!(feed.applied_seq(), 0);
        let aside: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("marketdata.sqlite.damaged-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
    }

    #[test]
    fn the_rings_hold_at_least_the_queue_bound_whoever_builds_the_config() {
        let d = FeedConfig::default();
        assert_eq!(d.ring_capacity(), d.channel_capacity.max(d.queue_bound));
        let big = FeedConfig {
            queue_bound: d.channel_capacity + 1,
            ..FeedConfig::default()
        };
        assert_eq!(big.ring_capacity(), d.channel_capacity + 1);
        let small = FeedConfig {
            queue_bound: 1,
            ..FeedConfig::default()
        };
        assert_eq!(small.ring_capacity(), d.channel_capacity);
    }

    #[test]
    fn rings_nobody_reads_are_swept_as_new_ones_are_made() {
        use super::{PRIVATE_SWEEP_MIN, PrivateChannel, PrivateRings};
        use engine::AccountId;
        let mut rings = PrivateRings::new();
        // 10,000 accounts subscribe once and go away without a publish.
        for a in 0..10_000u32 {
            let cursor = rings.subscribe((AccountId(a), PrivateChannel::Orders), 8);
            drop(cursor);
            assert!(
                rings.map.len() < PRIVATE_SWEEP_MIN,
                "{} rings kept",
                rings.map.len()
            );
        }
        // Rings someone reads are kept, whatever the sweeps.
        let held: Vec<_> = (0..200u32)
            .map(|a| rings.subscribe((AccountId(a), PrivateChannel::Wallet), 8))
            .collect();
        for a in 200..5_000u32 {
            drop(rings.subscribe((AccountId(a), PrivateChannel::Fills), 8));
        }
        let read = rings
            .map
            .keys()
            .filter(|(_, c)| *c == PrivateChannel::Wallet)
            .count();
        assert_eq!(read, 200);
        assert!(
            rings.map.len() <= 2 * 200 + 1,
            "{} rings kept",
            rings.map.len()
        );
        drop(held);
    }
}
