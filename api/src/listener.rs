//! The history listener: turns every processed batch into rows of the history store (one
//! SQLite transaction per batch, `applied_seq` included), keeps the in-memory read models
//! (balances, markets, id counters) and publishes the private feed messages.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use engine::markets::Markets;
use engine::pipeline::{OutputListener, Processed};
use engine::{AccountId, Command, Engine, Event, RejectReason, RequestStatus};
use rusqlite::Connection;

use crate::model::{self, FillRec, OrderRec, RequestRec, TxRec, TxType};
use crate::state::{AuditFig, PrivatePublisher, ReadModel};
use crate::store;

/// Writes the history store; see the module doc.
pub struct HistoryListener {
    conn: Connection,
    model: Arc<ReadModel>,
    markets: Markets,
    open: HashMap<u64, OrderRec>,
    totals: HashMap<(u32, u16), i64>,
    applied: u64,
    publisher: Option<PrivatePublisher>,
    live: bool,
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
    orders: Vec<OrderRec>,
    fills: Vec<FillRec>,
    wallets: Vec<(u32, u16)>,
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
        let mut open = HashMap::new();
        {
            let mut st = conn.prepare(&format!(
                "SELECT {} FROM orders WHERE status IN (0, 1)",
                store::ORDER_COLS
            ))?;
            let rows = st.query_map([], store::order_from_row)?;
            for row in rows {
                let mut o = row?;
                o.fills = store::fills_of(&conn, o.id)?;
                open.insert(o.id, o);
            }
        }
        *model.markets.write() = markets.clone();
        Ok(HistoryListener {
            conn,
            model,
            markets,
            open,
            totals,
            applied,
            publisher,
            live: false,
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
        store::write_tx(&self.conn, &rec)?;
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
                        touched.push(order.0);
                        self.model.orders_total.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Event::Rejected { order, reason, .. } => {
                    if reason == RejectReason::PostOnlyWouldTake
                        && let Command::Place(po) = p.command
                        && po.id == order
                    {
                        let mut rec = OrderRec::new(po, ts);
                        rec.apply(event, ts);
                        store::write_order(&self.conn, &rec)?;
                        finals.push(rec);
                    }
                }
                Event::Trade(t) => {
                    self.model.trades_total.fetch_add(1, Ordering::Relaxed);
                    for id in [t.buy_order().0, t.sell_order().0] {
                        if let Some(o) = self.open.get_mut(&id)
                            && let Some(fill) = o.apply(event, ts)
                        {
                            store::write_fill(&self.conn, &fill)?;
                            out.fills.push(fill);
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
                        o.apply(event, ts);
                        store::write_order(&self.conn, &o)?;
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
                    self.model
                        .balances
                        .write()
                        .insert((account.0, currency.0), engine::Balance { available, held });
                    out.wallets.push((account.0, currency.0));
                }
                Event::RequestUpdated {
                    request, status, ..
                } => self.request_updated(p, request.0, status, ts)?,
                Event::AccountRegistered { account } => {
                    if let Command::RegisterAccount {
                        name,
                        client_id,
                        secret_hash,
                        scopes,
                        ..
                    } = p.command
                    {
                        store::write_account(
                            &self.conn,
                            account.0,
                            name,
                            client_id,
                            secret_hash,
                            *scopes,
                            ts,
                        )?;
                    }
                }
                Event::CurrencyAdded { .. }
                | Event::PairAdded { .. }
                | Event::PairStatusChanged { .. } => {
                    self.conn
                        .prepare_cached(
                            "INSERT INTO market_log (seq, command, event) VALUES (?1, ?2, ?3)",
                        )?
                        .execute(rusqlite::params![
                            p.seq as i64,
                            serde_json::to_string(p.command).unwrap_or_default(),
                            serde_json::to_string(event).unwrap_or_default()
                        ])?;
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
                store::write_order(&self.conn, o)?;
                out.orders.push(o.clone());
            }
        }
        out.orders.extend(finals);
        Ok(())
    }

    fn request_updated(
        &mut self,
        p: &Processed<'_>,
        id: u64,
        status: RequestStatus,
        ts: i64,
    ) -> rusqlite::Result<()> {
        let new = |spec: &engine::RequestSpec, withdrawal: bool| RequestRec {
            id: spec.request.0,
            external_id: spec.external_id.clone(),
            account: spec.account.0,
            withdrawal,
            currency: spec.currency.0,
            amount: spec.amount,
            status,
            destination: withdrawal.then(|| spec.destination.clone()),
            reason: None,
            created_ns: ts,
            updated_ns: ts,
        };
        let rec = match p.command {
            Command::DepositRequested(spec) => new(spec, false),
            Command::WithdrawalRequested(spec) => new(spec, true),
            Command::DepositCredited(spec) => new(spec, false),
            Command::ApproveRequest { .. } | Command::RejectRequest { .. } => {
                let Some(mut rec) = store::request_get(&self.conn, id)? else {
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
        store::write_request(&self.conn, &rec)
    }

    fn publish(&self, out: Outbox) {
        let Some(publish) = &self.publisher else {
            return;
        };
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
        let balances = self.model.balances.read();
        let mut seen = out.wallets;
        seen.sort_unstable();
        seen.dedup();
        for (a, c) in seen {
            let b = balances.get(&(a, c)).copied().unwrap_or_default();
            if let Ok(v) = serde_json::to_value(model::balance_json(&m, c, b)) {
                publish(AccountId(a), "wallet", v);
            }
        }
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
        let (max_order, max_request, max_user) = self
            .conn
            .query_row(
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
            )
            .unwrap_or((0, 0, 0));
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
            orders: Vec::new(),
            fills: Vec::new(),
            wallets: Vec::new(),
        };
        let result = (|| -> rusqlite::Result<()> {
            self.conn.execute_batch("BEGIN")?;
            let applied = self.applied;
            for p in batch.iter().filter(|p| p.seq > applied) {
                self.apply_one(p, &mut out)?;
            }
            store::meta_set(&self.conn, "applied_seq", last.seq)?;
            self.conn.execute_batch("COMMIT")
        })();
        if result.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if let Err(e) = result {
            // The journal still has the batch: the next start replays it into the store.
            tracing::error!(error = %e, seq = last.seq, "history store write failed");
            return;
        }
        self.applied = last.seq;
        self.model.last_seq.store(last.seq, Ordering::Release);
        if self.live {
            self.publish(out);
        }
    }
}
