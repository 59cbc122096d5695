//! The history listener: turns every processed batch into rows of the history store, keeps
//! the in-memory read models (balances, markets, id counters, open orders, pending requests,
//! the client-id index) and publishes the private feed messages.
//!
//! SQLite is written behind, on its own thread ([`store_thread`]): the pipeline's output
//! thread only derives the rows (in memory, cheap) and queues them, so the journal's fsync
//! and the replies never wait for SQLite. The store thread commits whatever has queued up in
//! one transaction, `applied_seq` included, so after a crash the store is at a batch boundary
//! and the journal replays the rest. "A read right after a 201 sees the write" holds through
//! [`crate::store::Store::read`], which first waits until the store has committed every
//! sequence delivered so far ([`ReadModel::last_seq`]); the hot paths (order create and
//! cancel) need no SQLite read at all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, Sender};
use engine::markets::Markets;
use engine::pipeline::{OutputListener, Processed};
use engine::{AccountId, AccountRegistration, Command, Engine, Event, RejectReason, RequestStatus};
use rusqlite::Connection;

use crate::model::{self, FillRec, OrderRec, RequestRec, TxRec, TxType};
use crate::open_orders::OpenOrders;
use crate::state::{AuditFig, PrivatePublisher, ReadModel};
use crate::{store, store_damage};

/// A row for the store thread.
enum Op {
    Order(OrderRec),
    Fill(FillRec),
    Tx(TxRec),
    Request(RequestRec),
    MarketLog {
        seq: u64,
        command: String,
        event: String,
    },
    Account {
        account: u32,
        name: String,
        client_id: String,
        secret_hash: String,
        scopes: u8,
        ts_ns: i64,
    },
}

/// The rows of one batch, up to `last_seq`.
struct StoreMsg {
    last_seq: u64,
    /// Commands in the batch.
    commands: usize,
    ops: Vec<Op>,
}

/// Batches queued for the store thread before the engine thread waits (back-pressure).
const STORE_QUEUE: usize = 4096;
/// Most queued batches committed in one SQLite transaction.
const STORE_GROUP: usize = 1024;
/// The store thread lingers after the first queued batch until this many commands have
/// queued, [`STORE_LINGER`] has passed, or a reader waits for the store
/// ([`ReadModel::wait_stored`]), whichever comes first. A SQLite commit costs about the same
/// whether it carries ten rows or a thousand (the WAL gets every dirty page once per commit,
/// and the index pages of a busy account are dirtied by every row: with 64 busy accounts
/// about 140 pages, 560 KB, per commit whatever its size), so under load longer groups cut
/// the history thread's CPU and the disk writes several times over (with a 20 ms linger the
/// store wrote 2.0-3.3 KB per order placed under `bourse bench http --no-cancel`, more at
/// lower rates; with 100 ms, 0.8 KB at 29k orders/s). A read right after a write
/// never waits for the linger, it ends it; a crash loses nothing either way (the journal
/// replays what the store has not committed).
const STORE_LINGER_COMMANDS: usize = 16_384;
const STORE_LINGER: std::time::Duration = std::time::Duration::from_millis(100);

/// Writes the history store; see the module doc.
pub struct HistoryListener {
    conn: Connection,
    /// The store's file (a damaged one is reported by it: [`store_damage::report`]).
    path: PathBuf,
    model: Arc<ReadModel>,
    markets: Markets,
    open: OpenOrders,
    /// Pending deposit and withdrawal requests (approve and reject need them).
    pending: HashMap<u64, RequestRec>,
    totals: HashMap<(u32, u16), i64>,
    applied: u64,
    publisher: Option<PrivatePublisher>,
    live: bool,
    ops: Vec<Op>,
    to_store: Option<Sender<StoreMsg>>,
    store_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HistoryListener {
    /// Lets the store thread commit what is queued, then joins it.
    fn drop(&mut self) {
        self.to_store = None;
        if let Some(h) = self.store_thread.take() {
            let _ = h.join();
        }
    }
}

/// Hands a batch to the store thread (false: the thread is gone). With a full commit's
/// worth ([`STORE_GROUP`]) now queued, a lingering store thread is told to commit: its
/// linger waits only for the deadline or a reader, so the queue ([`STORE_QUEUE`]) could
/// otherwise fill while it lingers and block the engine thread, every reply with it, for
/// up to [`STORE_LINGER`].
fn send_to_store(tx: &Sender<StoreMsg>, model: &ReadModel, msg: StoreMsg) -> bool {
    if tx.send(msg).is_err() {
        return false;
    }
    if tx.len() >= STORE_GROUP {
        model.want_store();
    }
    true
}

/// Fills an index of used idempotency keys ([`crate::state::client_key`] of `(account, key)`)
/// from a query that yields `(account, key)` rows.
fn load_used_keys(
    conn: &Connection,
    sql: &str,
    ids: &crate::used_keys::UsedKeys,
) -> rusqlite::Result<()> {
    let mut st = conn.prepare(sql)?;
    let rows = st.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (account, key) = row?;
        ids.insert(crate::state::client_key(account, &key));
    }
    Ok(())
}

/// The store thread: commits queued batches, several per transaction, `applied_seq` in the
/// same transaction. A failure stops the writes (the store stays at its last good batch, the
/// journal replays the rest at the next start) and fails the reads that wait for it. A
/// failure that says the file at `path` is damaged is reported as such
/// ([`crate::store_damage`]: the next start rebuilds the store), and damage a read found
/// stops the writes too (the file is to be replaced). A stopped thread still takes every
/// batch off the queue, so the engine thread never waits for it.
fn store_thread(conn: Connection, path: PathBuf, rx: Receiver<StoreMsg>, model: Arc<ReadModel>) {
    let mut failed = false;
    let mut latest: HashMap<u64, (usize, usize)> = HashMap::new();
    while let Ok(first) = rx.recv() {
        let mut commands = first.commands;
        let mut group = vec![first];
        let deadline = std::time::Instant::now() + STORE_LINGER;
        loop {
            while group.len() < STORE_GROUP {
                match rx.try_recv() {
                    Ok(m) => {
                        commands += m.commands;
                        group.push(m);
                    }
                    Err(_) => break,
                }
            }
            if group.len() >= STORE_GROUP
                || commands >= STORE_LINGER_COMMANDS
                || std::time::Instant::now() >= deadline
                || model.linger(deadline)
            {
                // Whatever queued while lingering goes into this commit too.
                while group.len() < STORE_GROUP {
                    match rx.try_recv() {
                        Ok(m) => group.push(m),
                        Err(_) => break,
                    }
                }
                break;
            }
        }
        if failed || model.store_damaged() {
            failed = true;
            continue;
        }
        let last = group.last().map_or(0, |m| m.last_seq);
        // An order written several times in the group (placed, then filled or cancelled)
        // is written once, as it ends up.
        latest.clear();
        for (i, m) in group.iter().enumerate() {
            for (j, op) in m.ops.iter().enumerate() {
                if let Op::Order(o) = op {
                    latest.insert(o.id, (i, j));
                }
            }
        }
        let result = (|| -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN")?;
            for (i, m) in group.iter().enumerate() {
                for (j, op) in m.ops.iter().enumerate() {
                    if let Op::Order(o) = op
                        && latest.get(&o.id) != Some(&(i, j))
                    {
                        continue;
                    }
                    write_op(&conn, op)?;
                }
            }
            store::meta_set(&conn, "applied_seq", last)?;
            conn.execute_batch("COMMIT")
        })();
        match result {
            Ok(()) => model.set_stored(last),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                // The journal still has the batches: the next start replays them (into a new
                // store when this one is damaged).
                if !store_damage::report(&model, &path, &e, store_damage::FoundBy::Writer) {
                    tracing::error!(error = %e, seq = last, "history store write failed; the store stops here");
                    model.fail_store();
                }
                failed = true;
            }
        }
    }
}

fn write_op(conn: &Connection, op: &Op) -> rusqlite::Result<()> {
    match op {
        Op::Order(o) => store::write_order(conn, o),
        Op::Fill(f) => store::write_fill(conn, f),
        Op::Tx(t) => store::write_tx(conn, t).map(|_| ()),
        Op::Request(r) => store::write_request(conn, r),
        Op::MarketLog {
            seq,
            command,
            event,
        } => conn
            .prepare_cached("INSERT INTO market_log (seq, command, event) VALUES (?1, ?2, ?3)")?
            .execute(rusqlite::params![*seq as i64, command, event])
            .map(|_| ()),
        Op::Account {
            account,
            name,
            client_id,
            secret_hash,
            scopes,
            ts_ns,
        } => store::write_account(
            conn,
            *account,
            name,
            client_id,
            secret_hash,
            *scopes,
            *ts_ns,
        ),
    }
}

impl std::fmt::Debug for HistoryListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryListener")
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

/// A pending private message.
struct Outbox {
    /// Collect at all (nobody listening: nothing is collected or built).
    on: bool,
    orders: Vec<OrderRec>,
    fills: Vec<FillRec>,
    /// Each balance event's account and currency, with the balance it replaced.
    wallets: Vec<(u32, u16, engine::Balance)>,
}

impl Outbox {
    fn order(&mut self, o: &OrderRec) {
        if self.on {
            self.orders.push(o.clone());
        }
    }
}

impl HistoryListener {
    /// Opens (or creates) the store and loads what the listener needs to continue.
    pub fn open(
        path: &Path,
        model: Arc<ReadModel>,
        publisher: Option<PrivatePublisher>,
    ) -> rusqlite::Result<HistoryListener> {
        let conn = store::open(path)?;
        let applied = store::meta_get(&conn, "applied_seq")?;
        let mut markets = Markets::default();
        {
            let mut st =
                conn.prepare("SELECT seq, command, event FROM market_log ORDER BY rowid")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for row in rows {
                let (seq, c, e) = row?;
                if let (Ok(command), Ok(event)) = (
                    serde_json::from_str::<Command>(&c),
                    serde_json::from_str::<Event>(&e),
                ) {
                    markets.apply(&Processed {
                        seq: seq as u64,
                        timestamp_ns: 0,
                        command: &command,
                        events: &[event],
                    });
                }
            }
        }
        let mut totals = HashMap::new();
        {
            let mut st = conn.prepare(
                "SELECT account, currency, balance_after FROM transactions WHERE id IN
                 (SELECT MAX(id) FROM transactions GROUP BY account, currency)",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            for row in rows {
                let (a, c, v): (u32, u16, i64) = row?;
                totals.insert((a, c), v);
            }
        }
        let mut open = OpenOrders::default();
        {
            let mut st = conn.prepare(&format!(
                "SELECT {} FROM orders WHERE status IN (0, 1)",
                store::ORDER_COLS
            ))?;
            let rows = st.query_map([], store::order_from_row)?;
            for row in rows {
                let mut o = row?;
                o.fills = store::fills_of(&conn, o.id)?;
                model.open_counts.opened(o.account);
                open.insert(o.id, o);
            }
        }
        let mut pending = HashMap::new();
        {
            let mut st = conn.prepare(&format!(
                "SELECT {} FROM requests WHERE status = 0",
                store::REQ_COLS
            ))?;
            for row in st.query_map([], store::request_from_row)? {
                let r = row?;
                pending.insert(r.id, r);
            }
        }
        load_used_keys(
            &conn,
            "SELECT account, client_id FROM orders",
            &model.client_ids,
        )?;
        load_used_keys(
            &conn,
            "SELECT account, external_id FROM requests",
            &model.external_ids,
        )?;
        *model.markets.write() = markets.clone();
        model.set_stored(applied);
        let writer = store::open(path)?;
        // The writer's page cache holds the hot index pages of every busy account between
        // commits (SQLite's default, 2 MB, is outgrown after a few hundred thousand orders
        // and every commit then reads its pages back through the OS).
        writer.pragma_update(None, "cache_size", -65_536)?;
        let (tx, rx) = crossbeam_channel::bounded(STORE_QUEUE);
        let thread_model = model.clone();
        let thread_path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("bourse-history".into())
            .spawn(move || store_thread(writer, thread_path, rx, thread_model))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(HistoryListener {
            conn,
            path: path.to_path_buf(),
            model,
            markets,
            open,
            pending,
            totals,
            applied,
            publisher,
            live: false,
            ops: Vec::new(),
            to_store: Some(tx),
            store_thread: Some(thread),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn book(
        &mut self,
        account: AccountId,
        currency: engine::CurrencyId,
        kind: TxType,
        delta: i64,
        ts_ns: i64,
        refs: Vec<(String, &'static str)>,
    ) -> rusqlite::Result<()> {
        if account == AccountId::FEES || delta == 0 {
            return Ok(());
        }
        let total = self.totals.entry((account.0, currency.0)).or_insert(0);
        *total += delta;
        let rec = TxRec {
            id: 0,
            account: account.0,
            currency: currency.0,
            kind,
            delta,
            balance_after: *total,
            ts_ns,
            refs,
        };
        self.ops.push(Op::Tx(rec));
        Ok(())
    }

    fn apply_one(&mut self, p: &Processed<'_>, out: &mut Outbox) -> rusqlite::Result<()> {
        let ts = p.timestamp_ns;
        let mut touched: Vec<u64> = Vec::new();
        let mut finals: Vec<OrderRec> = Vec::new();
        for event in p.events {
            match *event {
                Event::Accepted { order, .. } => {
                    if let Command::Place(po) = p.command
                        && po.id == order
                    {
                        self.open.insert(order.0, OrderRec::new(po, ts));
                        self.model.open_counts.opened(po.account.0);
                        self.model.client_ids.insert(crate::state::client_key(
                            po.account.0,
                            po.client_id.as_str(),
                        ));
                        touched.push(order.0);
                        // `/metrics` counts since the start: orders replayed into a store
                        // rebuilt from the journal are not new (they made the counter jump
                        // by the whole history, a spike in any rate of it).
                        if self.live {
                            self.model.orders_total.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Event::Rejected { order, reason, .. } => {
                    if reason == RejectReason::PostOnlyWouldTake
                        && let Command::Place(po) = p.command
                        && po.id == order
                    {
                        let mut rec = OrderRec::new(po, ts);
                        rec.apply(event, ts);
                        self.model.client_ids.insert(crate::state::client_key(
                            po.account.0,
                            po.client_id.as_str(),
                        ));
                        self.ops.push(Op::Order(rec.clone()));
                        finals.push(rec);
                    }
                }
                Event::Trade(t) => {
                    if self.live {
                        self.model.trades_total.fetch_add(1, Ordering::Relaxed);
                    }
                    for id in [t.buy_order().0, t.sell_order().0] {
                        if let Some(o) = self.open.get_mut(&id)
                            && let Some(fill) = o.apply(event, ts)
                        {
                            if out.on {
                                out.fills.push(fill.clone());
                            }
                            self.ops.push(Op::Fill(fill));
                            touched.push(id);
                        }
                    }
                    let Some(pair) = self.markets.pair(t.pair) else {
                        continue;
                    };
                    let (base, quote) = (pair.spec.base, pair.spec.quote);
                    let trade_ref = || (t.id.0.to_string(), "ORDER_EXECUTION");
                    let buy_refs = || vec![(t.buy_order().0.to_string(), "ORDER"), trade_ref()];
                    let sell_refs = || vec![(t.sell_order().0.to_string(), "ORDER"), trade_ref()];
                    let (buyer, seller) = (t.buyer(), t.seller());
                    let ex = TxType::OrderExecution;
                    let fee = TxType::FeeCollection;
                    self.book(buyer, quote, ex, -(t.buyer_paid as i64), ts, buy_refs())?;
                    self.book(buyer, base, ex, t.base_received as i64, ts, buy_refs())?;
                    self.book(buyer, base, fee, -(t.buyer_fee as i64), ts, buy_refs())?;
                    self.book(seller, base, ex, -(t.base_received as i64), ts, sell_refs())?;
                    self.book(seller, quote, ex, t.seller_received as i64, ts, sell_refs())?;
                    self.book(seller, quote, fee, -(t.seller_fee as i64), ts, sell_refs())?;
                    let mut audit = self.model.audit.lock();
                    audit.entry(quote.0).or_default().fees +=
                        t.buyer_paid - t.seller_received + t.seller_fee;
                    audit.entry(base.0).or_default().fees += t.buyer_fee;
                }
                Event::Done { order, .. } => {
                    if let Some(mut o) = self.open.remove(&order.0) {
                        self.model.open_counts.closed(o.account);
                        o.apply(event, ts);
                        self.ops.push(Op::Order(o.clone()));
                        if let Command::Cancel { order: asked, .. } = p.command
                            && *asked == order
                        {
                            self.model.stash_cancelled(p.seq, o.clone());
                        }
                        touched.retain(|id| *id != order.0);
                        finals.push(o);
                    }
                }
                Event::Balance {
                    account,
                    currency,
                    available,
                    held,
                } => {
                    let before = self
                        .model
                        .balances
                        .write()
                        .insert((account.0, currency.0), engine::Balance { available, held })
                        .unwrap_or_default();
                    if out.on {
                        out.wallets.push((account.0, currency.0, before));
                    }
                }
                Event::RequestUpdated {
                    request, status, ..
                } => self.request_updated(p, request.0, status, ts)?,
                Event::AccountRegistered { account } => {
                    if let Command::RegisterAccount(r) = p.command {
                        let AccountRegistration {
                            name,
                            client_id,
                            secret_hash,
                            scopes,
                            ..
                        } = &**r;
                        self.ops.push(Op::Account {
                            account: account.0,
                            name: name.clone(),
                            client_id: client_id.clone(),
                            secret_hash: secret_hash.clone(),
                            scopes: *scopes,
                            ts_ns: ts,
                        });
                    }
                }
                Event::CurrencyAdded { .. }
                | Event::PairAdded { .. }
                | Event::PairStatusChanged { .. } => {
                    self.ops.push(Op::MarketLog {
                        seq: p.seq,
                        command: serde_json::to_string(p.command).unwrap_or_default(),
                        event: serde_json::to_string(event).unwrap_or_default(),
                    });
                    self.markets.apply(&Processed {
                        seq: p.seq,
                        timestamp_ns: ts,
                        command: p.command,
                        events: std::slice::from_ref(event),
                    });
                    *self.model.markets.write() = self.markets.clone();
                }
                _ => {}
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            if let Some(o) = self.open.get(&id) {
                out.order(o);
                self.ops.push(Op::Order(o.clone()));
            }
        }
        if out.on {
            out.orders.extend(finals);
        }
        Ok(())
    }

    fn request_updated(
        &mut self,
        p: &Processed<'_>,
        id: u64,
        status: RequestStatus,
        ts: i64,
    ) -> rusqlite::Result<()> {
        let new = |spec: &engine::RequestSpec, withdrawal: bool| {
            RequestRec::created(spec, withdrawal, status, ts)
        };
        let rec = match p.command {
            Command::DepositRequested(spec) => new(spec, false),
            Command::WithdrawalRequested(spec) => new(spec, true),
            Command::DepositCredited(spec) => new(spec, false),
            Command::ApproveRequest { .. } | Command::RejectRequest { .. } => {
                let Some(mut rec) = self.pending.remove(&id) else {
                    tracing::warn!(request = id, "decided request missing from the store");
                    return Ok(());
                };
                rec.status = status;
                rec.updated_ns = ts;
                if let Command::RejectRequest { reason, .. } = p.command {
                    rec.reason = Some(reason.clone());
                }
                rec
            }
            _ => return Ok(()),
        };
        if rec.status == RequestStatus::Completed {
            let c = engine::CurrencyId(rec.currency);
            let a = AccountId(rec.account);
            let mut audit_fig = AuditFig::default();
            if rec.withdrawal {
                self.book(
                    a,
                    c,
                    TxType::Withdrawal,
                    -(rec.amount as i64),
                    ts,
                    vec![(rec.id.to_string(), "WITHDRAWAL")],
                )?;
                audit_fig.withdrawals = rec.amount;
            } else {
                self.book(
                    a,
                    c,
                    TxType::Topup,
                    rec.amount as i64,
                    ts,
                    vec![(rec.id.to_string(), "TOPUP")],
                )?;
                audit_fig.deposits = rec.amount;
            }
            let mut audit = self.model.audit.lock();
            let e = audit.entry(rec.currency).or_default();
            e.deposits += audit_fig.deposits;
            e.withdrawals += audit_fig.withdrawals;
        }
        if rec.status == RequestStatus::Pending {
            self.pending.insert(rec.id, rec.clone());
        }
        // Before the completion callback releases the reservation (it runs after every
        // listener): the key is always either reserved or known to be used.
        self.model
            .external_ids
            .insert(crate::state::client_key(rec.account, &rec.external_id));
        self.ops.push(Op::Request(rec));
        Ok(())
    }

    /// Whether this batch's private messages are wanted (live, and a WebSocket is open).
    fn publishing(&self) -> bool {
        self.live && self.publisher.as_ref().is_some_and(|p| (p.listening)())
    }

    fn publish(&self, out: Outbox) {
        let Some(publisher) = &self.publisher else {
            return;
        };
        let publish = &publisher.publish;
        let m = self.model.markets.read();
        for o in &out.orders {
            if let Ok(v) = serde_json::to_value(model::order_json(&m, o)) {
                publish(AccountId(o.account), "orders", v);
            }
        }
        for f in &out.fills {
            if let Ok(v) = serde_json::to_value(model::fill_json(&m, f)) {
                publish(AccountId(f.account), "fills", v);
            }
        }
        // One message per balance the batch changed: a stable sort keeps each balance's
        // first event first, so its `before` is the balance ahead of the batch; a balance
        // the batch put back where it was (a hold released by the same order, as an IOC
        // with nothing to match does) is not a change and sends nothing.
        let balances = self.model.balances.read();
        let mut seen = out.wallets;
        seen.sort_by_key(|&(a, c, _)| (a, c));
        seen.dedup_by_key(|&mut (a, c, _)| (a, c));
        for (a, c, before) in seen {
            let b = balances.get(&(a, c)).copied().unwrap_or_default();
            if b == before {
                continue;
            }
            if let Ok(v) = serde_json::to_value(model::balance_json(&m, c, b)) {
                publish(AccountId(a), "wallet", v);
            }
        }
        (publisher.announce)();
    }
}

impl OutputListener for HistoryListener {
    fn applied_seq(&self) -> u64 {
        self.applied
    }

    fn on_recovered(&mut self, engine: &Engine, last_seq: u64) {
        self.markets = Markets::from_engine(engine);
        *self.model.markets.write() = self.markets.clone();
        {
            let mut b = self.model.balances.write();
            b.clear();
            for (account, currency, balance) in engine.ledger().non_zero() {
                if account != AccountId::FEES {
                    b.insert((account.0, currency.0), balance);
                }
            }
        }
        {
            let mut audit = self.model.audit.lock();
            audit.clear();
            for a in engine.audit() {
                audit.insert(
                    a.currency.0,
                    AuditFig {
                        deposits: a.deposits,
                        withdrawals: a.withdrawals,
                        fees: a.fees_total,
                    },
                );
            }
        }
        // The store thread may still be committing the replayed batches (a rebuild replays
        // the whole journal into it). The id floors below read the store, and an account
        // id floor read before it caught up could hand a new registration the id of an
        // account whose row was still queued (the engine keeps no list of accounts): wait
        // for it however long that takes, unless it fails.
        while !self.model.wait_stored(self.applied) && !self.model.store_failed() {
            tracing::info!(
                seq = self.applied,
                "waiting for the history store to catch up with the journal's replay"
            );
        }
        let maxima = self.conn.query_row(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM orders), (SELECT COALESCE(MAX(id), 0) FROM requests),
             (SELECT COALESCE(MAX(id), 0) FROM users)",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            },
        );
        let (max_order, max_request, max_user) = match maxima {
            Ok(m) => m,
            Err(e) => {
                // The floors are unknown: the store stops (registrations wait for the
                // restart that rebuilds it, `routes::users::create_user`), and damage is
                // reported as such, so the start's next read fails and a start rebuilds.
                if !store_damage::report(&self.model, &self.path, &e, store_damage::FoundBy::Read) {
                    tracing::error!(error = %e, "history store: reading the id floors failed; the store stops here");
                    self.model.fail_store();
                }
                (0, 0, 0)
            }
        };
        let max_account = engine
            .ledger()
            .non_zero()
            .map(|(a, _, _)| u64::from(a.0))
            .max()
            .unwrap_or(0)
            .max(max_user);
        self.model
            .next_account_id
            .store(max_account + 1, Ordering::SeqCst);
        self.model
            .next_order_id
            .store(engine.max_order_id().0.max(max_order) + 1, Ordering::SeqCst);
        self.model.next_request_id.store(
            engine.max_request_id().0.max(max_request) + 1,
            Ordering::SeqCst,
        );
        self.model.last_seq.store(last_seq, Ordering::SeqCst);
        self.model.recovered.store(true, Ordering::SeqCst);
        self.live = true;
    }

    fn on_batch(&mut self, batch: &[Processed<'_>]) {
        let Some(last) = batch.last() else {
            return;
        };
        if last.seq <= self.applied {
            return;
        }
        let mut out = Outbox {
            on: self.publishing(),
            orders: Vec::new(),
            fills: Vec::new(),
            wallets: Vec::new(),
        };
        let applied = self.applied;
        for p in batch.iter().filter(|p| p.seq > applied) {
            if let Err(e) = self.apply_one(p, &mut out) {
                tracing::error!(error = %e, seq = p.seq, "history listener failed");
            }
        }
        let ops = std::mem::take(&mut self.ops);
        if let Some(tx) = &self.to_store
            && !send_to_store(
                tx,
                &self.model,
                StoreMsg {
                    last_seq: last.seq,
                    commands: batch.len(),
                    ops,
                },
            )
        {
            tracing::error!(seq = last.seq, "the history store thread is gone");
        }
        self.applied = last.seq;
        self.model.last_seq.store(last.seq, Ordering::Release);
        if out.on {
            self.publish(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn send(tx: &Sender<StoreMsg>, model: &ReadModel, msg: StoreMsg) {
        assert!(send_to_store(tx, model, msg));
    }

    fn msg(last_seq: u64) -> StoreMsg {
        StoreMsg {
            last_seq,
            commands: 1,
            ops: Vec::new(),
        }
    }

    /// A store thread on a fresh store, as the listener starts it: the directory (kept
    /// alive), the read model, the sending side of its queue and the thread.
    fn start_store_thread() -> (
        tempfile::TempDir,
        Arc<ReadModel>,
        Sender<StoreMsg>,
        std::thread::JoinHandle<()>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let conn = store::open(&store::db_path(dir.path())).unwrap();
        let model = Arc::new(ReadModel::default());
        let (tx, rx) = crossbeam_channel::bounded(STORE_QUEUE);
        let thread_model = model.clone();
        let path = store::db_path(dir.path());
        let thread = std::thread::spawn(move || store_thread(conn, path, rx, thread_model));
        (dir, model, tx, thread)
    }

    /// The engine thread is never held up by a lingering store thread: batches queued
    /// beyond one commit's worth ([`STORE_GROUP`]) end the linger, so the queue
    /// ([`STORE_QUEUE`]) does not fill and block the sender until [`STORE_LINGER`] passes.
    #[test]
    fn a_full_commit_queued_ends_the_linger() {
        let (_dir, model, tx, thread) = start_store_thread();
        // The store thread takes the first batch and lingers on it ...
        send(&tx, &model, msg(1));
        std::thread::sleep(Duration::from_millis(2));
        // ... while the engine thread hands over more than the queue holds.
        let t = Instant::now();
        let last = 1 + STORE_QUEUE as u64 + 100;
        for seq in 2..=last {
            send(&tx, &model, msg(seq));
        }
        let waited = t.elapsed();
        drop(tx);
        thread.join().unwrap();
        // Held by the linger, the sender would wait its rest: at least STORE_LINGER less the
        // 2 ms above. The commits themselves take a few ms, tens on a loaded 2-core machine.
        assert!(
            waited < STORE_LINGER * 3 / 4,
            "the sender was held {waited:?} by a linger"
        );
    }

    /// A reader that waits for the store while more batches are queued than one commit takes
    /// ([`STORE_GROUP`]) ends the next linger too: the commit its request cut short stops
    /// below its sequence, and the next one must not linger [`STORE_LINGER`] for it.
    #[test]
    fn a_waiting_reader_ends_the_linger_after_a_full_commit_too() {
        let (_dir, model, tx, thread) = start_store_thread();
        // The store thread takes the first batch and lingers on it ...
        tx.send(msg(1)).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        // ... while more than one commit's worth of batches queues behind it.
        let last = 1 + STORE_GROUP as u64 + 500;
        for seq in 2..=last {
            tx.send(msg(seq)).unwrap();
        }
        let t = Instant::now();
        assert!(model.wait_stored(last));
        let waited = t.elapsed();
        drop(tx);
        thread.join().unwrap();
        // A linger the reader did not end would make it wait all of STORE_LINGER after the
        // first commit; the commits themselves take a few ms, tens on a loaded 2-core machine
        // (half the linger was missed by 0.4 ms at load average 3.7).
        assert!(
            waited < STORE_LINGER,
            "a waiting reader waited {waited:?} for a linger"
        );
    }
}
