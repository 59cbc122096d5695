//! The history store: embedded SQLite (WAL) in `data_dir/history.sqlite`.
//!
//! One writer (the history listener's store thread, one transaction per group of batches,
//! `applied_seq` in the same transaction) and a small pool of reader connections for the
//! handlers. The store is a read model: the journal is the truth, and the pipeline replays
//! whatever the store has not applied yet. The store is written behind the replies:
//! [`Store::read`] waits until it has caught up with every reply sent so far.
//!
//! A paginated list costs time in proportion to the account's history (its `totalCount`
//! counts every matching row), which the network can ask for at will: an account with 1.8
//! million orders made `GET /v1/orders?status=open` take 0.44-0.45 s of SQLite before its
//! index (`benches/scripts/history_index_timing.py`). Such reads go
//! through [`Store::read_list`]: off the async workers (so orders, market data and other
//! reads go on meanwhile) and bounded by a time limit, past which SQLite interrupts the
//! query and the client gets a 503 that says so. Each list's page is read in its sort
//! order straight from an index (transactions by `(account, ts_ns, id)`, the booking-date
//! order; fills by `(account, trade_id, order_id)`; open orders by a partial index of
//! their own, so `status=open` visits only the open ones), so a page costs its own rows,
//! not a sort of the account's history (1.0-1.7 s for a page of an account with 1.8 M
//! transactions when they were sorted by time at each call).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use engine::Side;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::model::{
    FillRec, OrderRec, RequestRec, TxRec, TxType, request_status_from, status_from_code,
};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY, name TEXT NOT NULL, created_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS clients(client_id TEXT PRIMARY KEY, user_id INTEGER NOT NULL,
  secret_hash TEXT NOT NULL, scopes INTEGER NOT NULL, created_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens(hash BLOB PRIMARY KEY, user_id INTEGER NOT NULL,
  scopes INTEGER NOT NULL, expires_ns INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens(expires_ns);
CREATE TABLE IF NOT EXISTS orders(id INTEGER PRIMARY KEY, account INTEGER NOT NULL,
  client_id TEXT NOT NULL, pair INTEGER NOT NULL, side INTEGER NOT NULL, market INTEGER NOT NULL,
  tif INTEGER NOT NULL, post_only INTEGER NOT NULL, price INTEGER, amount INTEGER,
  quote_amount INTEGER, filled INTEGER NOT NULL, filled_quote INTEGER NOT NULL,
  value_sum TEXT NOT NULL, fee INTEGER NOT NULL, status INTEGER NOT NULL, reject_reason TEXT,
  created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS orders_client ON orders(account, client_id);
CREATE INDEX IF NOT EXISTS orders_account ON orders(account, id);
CREATE INDEX IF NOT EXISTS orders_open ON orders(account, id) WHERE status IN (0, 1);
CREATE TABLE IF NOT EXISTS fills(trade_id INTEGER NOT NULL, order_id INTEGER NOT NULL,
  account INTEGER NOT NULL, pair INTEGER NOT NULL, side INTEGER NOT NULL, price INTEGER NOT NULL,
  amount INTEGER NOT NULL, quote INTEGER NOT NULL, fee INTEGER NOT NULL, maker INTEGER NOT NULL,
  ts_ns INTEGER NOT NULL, PRIMARY KEY(trade_id, order_id));
CREATE INDEX IF NOT EXISTS fills_order ON fills(order_id);
DROP INDEX IF EXISTS fills_account;
CREATE INDEX IF NOT EXISTS fills_account_trade ON fills(account, trade_id, order_id);
CREATE TABLE IF NOT EXISTS transactions(id INTEGER PRIMARY KEY, account INTEGER NOT NULL,
  currency INTEGER NOT NULL, type INTEGER NOT NULL, amount INTEGER NOT NULL,
  balance_after INTEGER NOT NULL, ts_ns INTEGER NOT NULL, ref_id TEXT, ref_type TEXT,
  ref2_id TEXT, ref2_type TEXT);
DROP INDEX IF EXISTS tx_account;
CREATE INDEX IF NOT EXISTS tx_account_time ON transactions(account, ts_ns, id);
CREATE TABLE IF NOT EXISTS requests(id INTEGER PRIMARY KEY, account INTEGER NOT NULL,
  external_id TEXT NOT NULL, kind INTEGER NOT NULL, currency INTEGER NOT NULL,
  amount INTEGER NOT NULL, status INTEGER NOT NULL, destination TEXT, reason TEXT,
  created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS requests_ext ON requests(account, external_id);
CREATE INDEX IF NOT EXISTS requests_account ON requests(account, id);
";

pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("history.sqlite")
}

// The generic handling of a damaged store (shared with the market data store, so it lives
// in the feed crate, the lower one): see `feed::damaged_store`.
pub use feed::damaged_store::is_damaged;
pub(crate) use feed::damaged_store::unix_secs;

/// Logs an unexpected history store error (one that is neither the store stopped nor
/// damaged, which are logged once where they are found) at most once a second, with how
/// many were left out since the last line. Every request that meets such an error would
/// otherwise write a line, and anyone can send requests: made-up bearer tokens reach the
/// store, so an I/O error under it let unauthenticated clients fill the log.
pub fn log_store_error(what: &'static str, e: &rusqlite::Error) {
    static LIMIT: LogLimit = LogLimit::new();
    LIMIT.error(what, e);
}

/// At most one log line a second ([`log_store_error`]).
#[derive(Debug)]
struct LogLimit {
    /// The unix second of the last line.
    last_sec: AtomicU64,
    /// Calls left out since it.
    left_out: AtomicU64,
}

impl LogLimit {
    const fn new() -> LogLimit {
        LogLimit {
            last_sec: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
        }
    }

    fn error(&self, what: &'static str, e: &rusqlite::Error) {
        let sec = unix_secs();
        let last = self.last_sec.load(Ordering::Relaxed);
        if sec != last
            && self
                .last_sec
                .compare_exchange(last, sec, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let left_out = self.left_out.swap(0, Ordering::Relaxed);
            tracing::error!(error = %e, left_out, "{what}");
        } else {
            self.left_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Opens a connection with the store's pragmas (and creates the schema).
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(MARKET_LOG)?;
    Ok(conn)
}

/// SQLite virtual-machine steps between two looks at a reader's deadline (tens of
/// microseconds of work: the clock is read rarely, the limit still holds to the millisecond).
const PROGRESS_STEPS: i32 = 10_000;

/// Nanoseconds since the first call (the deadlines' clock).
fn clock_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A reader connection and the deadline its progress handler enforces (0: none).
#[derive(Debug)]
struct Reader {
    conn: Connection,
    deadline: Arc<AtomicU64>,
}

impl Reader {
    fn open(path: &Path) -> rusqlite::Result<Reader> {
        let conn = open(path)?;
        let deadline = Arc::new(AtomicU64::new(0));
        let d = deadline.clone();
        conn.progress_handler(
            PROGRESS_STEPS,
            Some(move || {
                let at = d.load(Ordering::Relaxed);
                at != 0 && clock_ns() > at
            }),
        );
        Ok(Reader { conn, deadline })
    }

    /// Runs `f` with SQLite interrupting it once `limit` has passed
    /// (`ErrorCode::OperationInterrupted`, see [`is_interrupted`]).
    fn bounded<T>(
        &self,
        limit: Duration,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        /// Lifts the deadline however `f` ends (a panic included: the mutex around the
        /// reader does not poison, so a deadline left behind would interrupt every later
        /// read on this connection).
        struct Lift<'a>(&'a AtomicU64);
        impl Drop for Lift<'_> {
            fn drop(&mut self) {
                self.0.store(0, Ordering::Relaxed);
            }
        }
        let limit_ns = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        self.deadline.store(
            clock_ns().saturating_add(limit_ns).max(1),
            Ordering::Relaxed,
        );
        let _lift = Lift(&self.deadline);
        f(&self.conn)
    }
}

/// Why a read was refused before it ran: the store thread stopped on a write error (the
/// store stays at its last good commit until a restart rebuilds it from the journal).
pub const STORE_FAILED: &str = "the history store has stopped";
/// Why a read was refused: SQLite said the store's file is damaged, on this read or
/// earlier ([`crate::store_damage`]); the next start rebuilds it from the journal.
pub const STORE_DAMAGED: &str = "the history store is damaged";
/// Why a read was refused before it ran: the store did not catch up with the last
/// acknowledged command in time.
pub const STORE_BEHIND: &str = "the history store is behind";

fn unavailable(why: &'static str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
        Some(why.into()),
    )
}

/// The reason [`Store::read`] refused to run a read, or gave up on one ([`STORE_FAILED`],
/// [`STORE_DAMAGED`], [`STORE_BEHIND`]), if that is what `e` is: the client gets a 503, not
/// an internal error.
pub fn unavailable_reason(e: &rusqlite::Error) -> Option<&'static str> {
    match e {
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            [STORE_FAILED, STORE_DAMAGED, STORE_BEHIND]
                .into_iter()
                .find(|w| msg == w)
        }
        _ => None,
    }
}

/// Whether a store error is a query stopped by [`Store::read_list`]'s time limit.
pub fn is_interrupted(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted)
}

/// Reader connections for the handlers.
#[derive(Debug)]
pub struct Store {
    /// The store's file (for [`crate::store_damage::report`]).
    path: PathBuf,
    readers: Vec<Mutex<Reader>>,
    next: AtomicUsize,
    model: Arc<crate::state::ReadModel>,
    /// Longest a [`Store::read_list`] query may run.
    list_limit: Duration,
}

impl Store {
    pub fn open(
        path: &Path,
        readers: usize,
        list_limit: Duration,
        model: Arc<crate::state::ReadModel>,
    ) -> rusqlite::Result<Store> {
        let mut v = Vec::new();
        for _ in 0..readers.max(1) {
            v.push(Mutex::new(Reader::open(path)?));
        }
        Ok(Store {
            path: path.to_path_buf(),
            readers: v,
            next: AtomicUsize::new(0),
            model,
            list_limit,
        })
    }

    /// [`Store::read`] for a query whose cost grows with the account's history (a
    /// paginated list and its `totalCount`): run off the async workers, and interrupted
    /// after the configured limit (`history_query_timeout_ms`), which the caller reports
    /// as a 503 ([`is_interrupted`]).
    pub fn read_list<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        off_the_runtime(|| self.read_with(Some(self.list_limit), f))
    }

    /// Runs `f` on a free reader connection once the store holds every outcome delivered so
    /// far (so a read after a 201 sees it).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.read_with(None, f)
    }

    fn read_with<T>(
        &self,
        limit: Option<Duration>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        // A failed store commits nothing more: every read is refused, not just those that
        // would wait for a sequence it will never hold, so history does not look complete
        // to one client and broken to the next. A damaged one likewise: the reads that miss
        // its bad pages would answer as if all was well.
        if let Some(why) = self.stopped() {
            return Err(unavailable(why));
        }
        let seq = self.model.last_seq.load(Ordering::Acquire);
        if !self.model.is_stored(seq) && !off_the_runtime(|| self.model.wait_stored(seq)) {
            return Err(unavailable(self.stopped().unwrap_or(STORE_BEHIND)));
        }
        let read = self.on_reader(|r| match limit {
            Some(limit) => r.bounded(limit, f),
            None => f(&r.conn),
        });
        self.damage_checked(read)
    }

    /// Why every read is refused, if it is: the store is damaged or has stopped.
    fn stopped(&self) -> Option<&'static str> {
        if self.model.store_damaged() {
            Some(STORE_DAMAGED)
        } else if self.model.store_failed() {
            Some(STORE_FAILED)
        } else {
            None
        }
    }

    /// A read's result, with damage SQLite found on the way reported
    /// ([`crate::store_damage::report`]: the store stops, the next start rebuilds it) and
    /// turned into [`STORE_DAMAGED`], which the client gets as a 503.
    fn damage_checked<T>(&self, read: rusqlite::Result<T>) -> rusqlite::Result<T> {
        match read {
            Err(e)
                if crate::store_damage::report(
                    &self.model,
                    &self.path,
                    &e,
                    crate::store_damage::FoundBy::Read,
                ) =>
            {
                Err(unavailable(STORE_DAMAGED))
            }
            other => other,
        }
    }

    /// Runs `f` without waiting for the history store (for what only handlers write:
    /// tokens). It runs on a stopped or damaged store too: the tokens table may well be
    /// readable. A token it cannot read is a 503 (`auth::TokenError::Unchecked`), not a 401:
    /// the client keeps it.
    pub fn read_now<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let read = self.on_reader(|r| f(&r.conn));
        self.damage_checked(read)
    }

    /// Runs `f` on a free reader, or waits for one.
    fn on_reader<T>(&self, f: impl FnOnce(&Reader) -> T) -> T {
        for c in &self.readers {
            if let Some(r) = c.try_lock() {
                return f(&r);
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        let r = self.readers[i].lock();
        f(&r)
    }
}

/// Runs `wait` (which may block for as long as the history store takes to commit, tens of
/// milliseconds under load) so that it holds up no other request: on a multi-thread tokio
/// runtime the worker hands its other tasks to another thread first
/// (`block_in_place`); elsewhere (a plain thread, a current-thread runtime) it just runs.
fn off_the_runtime<T>(wait: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

pub fn side_code(s: Side) -> i64 {
    match s {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}

pub fn side_from(c: i64) -> Side {
    if c == 0 { Side::Buy } else { Side::Sell }
}

fn tif_code(t: engine::TimeInForce) -> i64 {
    match t {
        engine::TimeInForce::Gtc => 0,
        engine::TimeInForce::Ioc => 1,
        engine::TimeInForce::Fok => 2,
    }
}

fn tif_from(c: i64) -> engine::TimeInForce {
    match c {
        0 => engine::TimeInForce::Gtc,
        1 => engine::TimeInForce::Ioc,
        _ => engine::TimeInForce::Fok,
    }
}

pub const ORDER_COLS: &str = "id, account, client_id, pair, side, market, tif, post_only, price, amount, quote_amount, filled, filled_quote, value_sum, fee, status, reject_reason, created_ns, updated_ns";

pub fn order_from_row(r: &Row<'_>) -> rusqlite::Result<OrderRec> {
    let vs: String = r.get(13)?;
    Ok(OrderRec {
        id: r.get::<_, i64>(0)? as u64,
        account: r.get(1)?,
        client_id: r.get(2)?,
        pair: r.get(3)?,
        side: side_from(r.get(4)?),
        market: r.get(5)?,
        tif: tif_from(r.get(6)?),
        post_only: r.get(7)?,
        price: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        amount: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
        quote_amount: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        filled: r.get::<_, i64>(11)? as u64,
        filled_quote: r.get::<_, i64>(12)? as u64,
        value_sum: vs.parse().unwrap_or(0),
        fee: r.get::<_, i64>(14)? as u64,
        status: status_from_code(r.get(15)?),
        reject_reason: r.get(16)?,
        created_ns: r.get(17)?,
        updated_ns: r.get(18)?,
        fills: Vec::new(),
    })
}

pub fn write_order(conn: &Connection, o: &OrderRec) -> rusqlite::Result<()> {
    let mut st = conn.prepare_cached(
        // An update touches only what changes (no delete and re-insert of every index entry).
        "INSERT INTO orders VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)
         ON CONFLICT(id) DO UPDATE SET filled = excluded.filled, filled_quote = excluded.filled_quote,
         value_sum = excluded.value_sum, fee = excluded.fee, status = excluded.status,
         reject_reason = excluded.reject_reason, updated_ns = excluded.updated_ns",
    )?;
    st.execute(params![
        o.id as i64,
        o.account,
        o.client_id,
        o.pair,
        side_code(o.side),
        o.market,
        tif_code(o.tif),
        o.post_only,
        o.price.map(|v| v as i64),
        o.amount.map(|v| v as i64),
        o.quote_amount.map(|v| v as i64),
        o.filled as i64,
        o.filled_quote as i64,
        o.value_sum.to_string(),
        o.fee as i64,
        crate::model::status_code(o.status),
        o.reject_reason,
        o.created_ns,
        o.updated_ns,
    ])?;
    Ok(())
}

pub const FILL_COLS: &str =
    "trade_id, order_id, account, pair, side, price, amount, quote, fee, maker, ts_ns";

pub fn fill_from_row(r: &Row<'_>) -> rusqlite::Result<FillRec> {
    Ok(FillRec {
        trade_id: r.get::<_, i64>(0)? as u64,
        order_id: r.get::<_, i64>(1)? as u64,
        account: r.get(2)?,
        pair: r.get(3)?,
        side: side_from(r.get(4)?),
        price: r.get::<_, i64>(5)? as u64,
        amount: r.get::<_, i64>(6)? as u64,
        quote: r.get::<_, i64>(7)? as u64,
        fee: r.get::<_, i64>(8)? as u64,
        maker: r.get(9)?,
        ts_ns: r.get(10)?,
    })
}

pub fn write_fill(conn: &Connection, f: &FillRec) -> rusqlite::Result<()> {
    let mut st = conn.prepare_cached(
        "INSERT OR REPLACE INTO fills VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
    )?;
    st.execute(params![
        f.trade_id as i64,
        f.order_id as i64,
        f.account,
        f.pair,
        side_code(f.side),
        f.price as i64,
        f.amount as i64,
        f.quote as i64,
        f.fee as i64,
        f.maker,
        f.ts_ns
    ])?;
    Ok(())
}

/// The order's fills, oldest first.
pub fn fills_of(conn: &Connection, order: u64) -> rusqlite::Result<Vec<FillRec>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {FILL_COLS} FROM fills WHERE order_id = ?1 ORDER BY trade_id"
    ))?;
    let rows = st.query_map([order as i64], fill_from_row)?;
    rows.collect()
}

/// One order of one account, with its fills.
pub fn order_get(conn: &Connection, account: u32, id: u64) -> rusqlite::Result<Option<OrderRec>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {ORDER_COLS} FROM orders WHERE id = ?1 AND account = ?2"
    ))?;
    let Some(mut o) = st
        .query_row(params![id as i64, account], order_from_row)
        .optional()?
    else {
        return Ok(None);
    };
    o.fills = fills_of(conn, o.id)?;
    Ok(Some(o))
}

pub fn order_by_client(
    conn: &Connection,
    account: u32,
    client_id: &str,
) -> rusqlite::Result<Option<OrderRec>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {ORDER_COLS} FROM orders WHERE account = ?1 AND client_id = ?2"
    ))?;
    let Some(mut o) = st
        .query_row(params![account, client_id], order_from_row)
        .optional()?
    else {
        return Ok(None);
    };
    o.fills = fills_of(conn, o.id)?;
    Ok(Some(o))
}

/// The id of the account's order with this client id, if any.
pub fn order_id_by_client(
    conn: &Connection,
    account: u32,
    client_id: &str,
) -> rusqlite::Result<Option<u64>> {
    let mut st =
        conn.prepare_cached("SELECT id FROM orders WHERE account = ?1 AND client_id = ?2")?;
    st.query_row(params![account, client_id], |r| r.get::<_, i64>(0))
        .optional()
        .map(|v| v.map(|v| v as u64))
}

/// A registered account and its client, as [`engine::Command::RegisterAccount`] carries
/// them (a repeat replaces the credentials: the admin bootstrap re-registers on a new secret).
pub fn write_account(
    conn: &Connection,
    account: u32,
    name: &str,
    client_id: &str,
    secret_hash: &str,
    scopes: u8,
    ts_ns: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO users (id, name, created_ns) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name",
    )?
    .execute(params![account, name, ts_ns])?;
    conn.prepare_cached(
        "INSERT INTO clients VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(client_id) DO UPDATE SET
         user_id = excluded.user_id, secret_hash = excluded.secret_hash, scopes = excluded.scopes",
    )?
    .execute(params![client_id, account, secret_hash, scopes, ts_ns])?;
    Ok(())
}

pub const REQ_COLS: &str = "id, external_id, account, kind, currency, amount, status, destination, reason, created_ns, updated_ns";

pub fn request_from_row(r: &Row<'_>) -> rusqlite::Result<RequestRec> {
    Ok(RequestRec {
        id: r.get::<_, i64>(0)? as u64,
        external_id: r.get(1)?,
        account: r.get(2)?,
        withdrawal: r.get::<_, i64>(3)? == 1,
        currency: r.get(4)?,
        amount: r.get::<_, i64>(5)? as u64,
        status: request_status_from(r.get(6)?),
        destination: r.get(7)?,
        reason: r.get(8)?,
        created_ns: r.get(9)?,
        updated_ns: r.get(10)?,
    })
}

/// Inserts a new request, or updates a known one (same id) with what a decision changes:
/// status, reason, updated time. An update rewrites the row in place, so the indexes are
/// left alone, and a row is never replaced: a new id whose `(account, external_id)` is
/// already stored is an error (`INSERT OR REPLACE` deleted the other request), and the
/// columns a request is created with (its external id, account, amount...) never change.
pub fn write_request(conn: &Connection, q: &RequestRec) -> rusqlite::Result<()> {
    let mut st = conn.prepare_cached(
        "INSERT INTO requests (id, external_id, account, kind, currency, amount, status, destination, reason, created_ns, updated_ns) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)
         ON CONFLICT(id) DO UPDATE SET status = excluded.status, reason = excluded.reason, updated_ns = excluded.updated_ns",
    )?;
    st.execute(params![
        q.id as i64,
        q.external_id,
        q.account,
        i64::from(q.withdrawal),
        q.currency,
        q.amount as i64,
        crate::model::request_status_code(q.status),
        q.destination,
        q.reason,
        q.created_ns,
        q.updated_ns
    ])?;
    Ok(())
}

pub fn request_get(conn: &Connection, id: u64) -> rusqlite::Result<Option<RequestRec>> {
    let mut st = conn.prepare_cached(&format!("SELECT {REQ_COLS} FROM requests WHERE id = ?1"))?;
    st.query_row([id as i64], request_from_row).optional()
}

pub fn request_id_by_external(
    conn: &Connection,
    account: u32,
    external_id: &str,
) -> rusqlite::Result<Option<u64>> {
    let mut st =
        conn.prepare_cached("SELECT id FROM requests WHERE account = ?1 AND external_id = ?2")?;
    st.query_row(params![account, external_id], |r| r.get::<_, i64>(0))
        .optional()
        .map(|v| v.map(|v| v as u64))
}

pub const TX_COLS: &str = "id, account, currency, type, amount, balance_after, ts_ns, ref_id, ref_type, ref2_id, ref2_type";

fn ref_type(s: &str) -> &'static str {
    match s {
        "ORDER" => "ORDER",
        "ORDER_EXECUTION" => "ORDER_EXECUTION",
        "TOPUP" => "TOPUP",
        _ => "WITHDRAWAL",
    }
}

pub fn tx_from_row(r: &Row<'_>) -> rusqlite::Result<TxRec> {
    let mut refs = Vec::new();
    for (i, t) in [(7, 8), (9, 10)] {
        let id: Option<String> = r.get(i)?;
        let ty: Option<String> = r.get(t)?;
        if let (Some(id), Some(ty)) = (id, ty) {
            refs.push((id, ref_type(&ty)));
        }
    }
    Ok(TxRec {
        id: r.get(0)?,
        account: r.get(1)?,
        currency: r.get(2)?,
        kind: TxType::from_code(r.get(3)?),
        delta: r.get(4)?,
        balance_after: r.get(5)?,
        ts_ns: r.get(6)?,
        refs,
    })
}

pub fn write_tx(conn: &Connection, t: &TxRec) -> rusqlite::Result<i64> {
    let mut st = conn.prepare_cached(
        "INSERT INTO transactions (account, currency, type, amount, balance_after, ts_ns, ref_id, ref_type, ref2_id, ref2_type) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
    )?;
    let r0 = t.refs.first();
    let r1 = t.refs.get(1);
    st.execute(params![
        t.account,
        t.currency,
        t.kind.code(),
        t.delta,
        t.balance_after,
        t.ts_ns,
        r0.map(|r| r.0.clone()),
        r0.map(|r| r.1),
        r1.map(|r| r.0.clone()),
        r1.map(|r| r.1),
    ])?;
    Ok(conn.last_insert_rowid())
}

pub fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<u64> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
        r.get::<_, i64>(0)
    })
    .optional()
    .map(|v| v.unwrap_or(0) as u64)
}

pub fn meta_set(conn: &Connection, key: &str, value: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta VALUES (?1, ?2)")?
        .execute(params![key, value as i64])?;
    Ok(())
}

pub const MARKET_LOG: &str = "CREATE TABLE IF NOT EXISTS market_log(seq INTEGER NOT NULL, command TEXT NOT NULL, event TEXT NOT NULL);";

/// The `WHERE` of a paginated list: clauses joined by `AND`, each with at most one integer
/// argument, numbered in order. Column names and operators come from the code, values are
/// always bound.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    clauses: Vec<String>,
    args: Vec<i64>,
}

impl Filter {
    pub fn new() -> Filter {
        Filter::default()
    }

    /// `column op ?N` with `value` bound (`op` one of `=`, `<`, `>=`, ...).
    pub fn cmp(&mut self, column: &'static str, op: &'static str, value: i64) -> &mut Filter {
        self.args.push(value);
        self.clauses
            .push(format!("{column} {op} ?{}", self.args.len()));
        self
    }

    /// `column = ?N`.
    pub fn eq(&mut self, column: &'static str, value: i64) -> &mut Filter {
        self.cmp(column, "=", value)
    }

    /// A clause without arguments (`status IN (0, 1)`).
    pub fn raw(&mut self, clause: &'static str) -> &mut Filter {
        self.clauses.push(clause.to_string());
        self
    }

    fn where_sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// One page of a list: the rows of `table` matching `filter` in `order_by` order, `limit`
/// of them from `offset`, and how many match in all (the pagination meta's `totalCount`).
/// Every account list (orders, fills, requests, transactions) goes through here.
#[allow(clippy::too_many_arguments)]
pub fn paged<T>(
    conn: &Connection,
    table: &'static str,
    cols: &'static str,
    filter: &Filter,
    order_by: &str,
    limit: u64,
    offset: u64,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<(u64, Vec<T>)> {
    let filter_sql = filter.where_sql();
    let total: i64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM {table}{filter_sql}"))?
        .query_row(rusqlite::params_from_iter(filter.args.iter()), |r| r.get(0))?;
    let n = filter.args.len();
    let mut st = conn.prepare_cached(&format!(
        "SELECT {cols} FROM {table}{filter_sql} ORDER BY {order_by} LIMIT ?{} OFFSET ?{}",
        n + 1,
        n + 2
    ))?;
    let page = [
        i64::try_from(limit).unwrap_or(i64::MAX),
        i64::try_from(offset).unwrap_or(i64::MAX),
    ];
    let rows = st
        .query_map(
            rusqlite::params_from_iter(filter.args.iter().chain(page.iter())),
            row,
        )?
        .collect::<Result<Vec<T>, _>>()?;
    Ok((u64::try_from(total).unwrap_or(0), rows))
}

#[cfg(test)]
mod tests {
    use super::{Store, is_interrupted, off_the_runtime};
    use crate::state::ReadModel;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// A flood of unexpected store errors (one per request: anyone can send made-up
    /// tokens) logs at most a line a second, and the next line says how many it left out.
    /// Each used to log its own line.
    #[test]
    fn unexpected_store_errors_log_at_most_a_line_a_second() {
        let limit = super::LogLimit::new();
        let io = || {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                None,
            )
        };
        let log = engine::log_capture::log_of(|| {
            for _ in 0..1000 {
                limit.error("history store error", &io());
            }
        });
        let lines = log
            .lines()
            .filter(|l| l.contains("history store error"))
            .count();
        // 1000 calls take well under a second; at a second's edge, two lines.
        assert!((1..=2).contains(&lines), "{lines} lines:\n{log}");
        std::thread::sleep(Duration::from_millis(1100));
        let log = engine::log_capture::log_of(|| limit.error("history store error", &io()));
        let left_out: u64 = log
            .split("left_out=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no left_out in {log}"));
        assert!(left_out >= 998, "{log}");
    }

    /// SQLite work that takes seconds and needs no data: counting a recursive sequence.
    const SLOW: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                        LIMIT 50000000) SELECT COUNT(*) FROM c";
    const QUICK: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                         LIMIT 300000) SELECT COUNT(*) FROM c";

    fn store(dir: &tempfile::TempDir, readers: usize, limit: Duration) -> Store {
        let model = Arc::new(ReadModel::default());
        Store::open(&dir.path().join("h.sqlite"), readers, limit, model).expect("store")
    }

    fn count(c: &rusqlite::Connection, sql: &str) -> rusqlite::Result<i64> {
        c.query_row(sql, [], |r| r.get(0))
    }

    /// A list query that panics leaves no deadline behind on its reader: the next, plain
    /// read on the same (only) connection runs to its end.
    #[test]
    fn a_panicking_list_query_leaves_no_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir, 1, Duration::from_millis(1));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: rusqlite::Result<()> = s.read_list(|_| panic!("a bug in a query"));
        }));
        assert!(panicked.is_err());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            s.read(|c| count(c, QUICK)).expect("not interrupted"),
            300_000
        );
    }

    /// Every account list reads its page in order from an index: SQLite's plan sorts
    /// nothing (a sort would cost the account's whole history at every page).
    #[test]
    fn account_lists_read_their_pages_in_index_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = super::open(&dir.path().join("h.sqlite")).expect("open");
        // (table, filter past the account, order, the index the page must come from)
        for (table, filter, order_by, index) in [
            ("transactions", "", "ts_ns DESC, id DESC", "tx_account_time"),
            ("transactions", "", "ts_ns ASC, id ASC", "tx_account_time"),
            ("orders", "", "id DESC", "orders_account"),
            // What `status=open` asks (`routes::orders`), the list trading clients poll:
            // only the open orders are visited, not the account's closed ones.
            ("orders", " AND status IN (0, 1)", "id DESC", "orders_open"),
            (
                "fills",
                "",
                "trade_id DESC, order_id DESC",
                "fills_account_trade",
            ),
            ("requests", "", "id DESC", "requests_account"),
        ] {
            let sql = format!(
                "EXPLAIN QUERY PLAN SELECT * FROM {table} WHERE account = 1{filter} \
                 ORDER BY {order_by} LIMIT 100"
            );
            let mut st = conn.prepare(&sql).expect("plan");
            let plan: Vec<String> = st
                .query_map([], |r| r.get::<_, String>(3))
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("plan rows");
            assert!(
                plan.iter().all(|step| !step.contains("TEMP B-TREE"))
                    && plan.iter().any(|step| step.contains(index)),
                "{table}{filter} ORDER BY {order_by}: {plan:?}"
            );
        }
    }

    /// A list query past the limit is stopped by SQLite (and reported as such), the reader
    /// it ran on is fine afterwards, and plain reads have no limit.
    #[test]
    fn a_list_query_past_its_limit_is_interrupted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir, 1, Duration::from_millis(50));
        let t = Instant::now();
        let e = s.read_list(|c| count(c, SLOW)).expect_err("interrupted");
        assert!(is_interrupted(&e), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let api = crate::error::ApiError::from(e);
        assert_eq!(api.0.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        // The same (only) reader: the deadline is gone for an unbounded read...
        let t = Instant::now();
        assert_eq!(s.read(|c| count(c, QUICK)).expect("plain read"), 300_000);
        let quick_took = t.elapsed();
        // ...and a bounded one within its limit succeeds.
        let s = store(&dir, 1, quick_took * 20 + Duration::from_millis(200));
        assert_eq!(s.read_list(|c| count(c, QUICK)).expect("in time"), 300_000);
    }

    /// Runs `work` in a task of a one-worker runtime and checks that another task, spawned
    /// while it runs, is not held up behind it; returns what `work` returned.
    fn runs_beside_other_tasks<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let started = Instant::now();
            let working = tokio::spawn(async move { work() });
            // Let the working task start on the only worker.
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(20));
            let other = tokio::spawn(async move { started.elapsed() });
            let ran_after = other.await.expect("other task");
            assert!(
                ran_after < Duration::from_millis(300),
                "the other task waited {ran_after:?}"
            );
            working.await.expect("working task")
        })
    }

    /// A long list query runs off the async workers: with one worker, another task still
    /// runs while it queries.
    #[test]
    fn a_long_list_query_holds_up_no_other_task() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir, 1, Duration::from_millis(400));
        let r = runs_beside_other_tasks(move || s.read_list(|c| count(c, SLOW)));
        assert!(r.as_ref().is_err_and(is_interrupted), "{r:?}");
    }

    /// With one worker, a handler waiting for the store would stall every other request on
    /// it; off the runtime, another task still runs while it waits.
    #[test]
    fn a_waiting_read_holds_up_no_other_task() {
        runs_beside_other_tasks(|| {
            off_the_runtime(|| std::thread::sleep(Duration::from_millis(400)));
        });
        // Outside a runtime it simply runs.
        assert_eq!(off_the_runtime(|| 7), 7);
    }
}
