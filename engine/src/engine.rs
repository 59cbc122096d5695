//! The engine: every pair's book and the one ledger, driven by commands, reporting events.
//!
//! # Contract
//! [`Engine::apply`] is a pure function of the engine state and the command: no clock, no
//! randomness, no I/O, no hash-order-dependent output. Replaying the same commands gives the
//! same events and the same [`Engine::state_hash`].
//!
//! # Matching (a specification)
//! - Price-time priority: the taker meets the best opposite price first, and within a price
//!   the oldest order first. Every trade executes at the maker's price, never outside the
//!   taker's limit.
//! - Limit GTC rests its remainder; IOC and market orders expire theirs; FOK either fills
//!   completely or leaves no trace (a dry walk over the book decides first).
//! - Post-only that would cross is rejected before touching the book.
//! - Self-trade prevention follows the taker's mode: expire the taker's remainder, the maker,
//!   both, or trade.
//! - Checks run in [`RejectReason`] precedence order; a rejected order changes nothing.
//!
//! # Full book
//! A book holding [`EngineLimits::max_orders_per_book`] resting orders (or more, after the
//! bound was lowered) refuses GTC limit orders with `BookFull`. Which ones depends on the
//! engine's matching rules version ([`Engine::rules_version`], "Rules versions" below):
//! - Version 1 (genesis): every GTC order, crossing or not.
//! - Version 2: exactly the GTC orders that do not cross (their limit does not reach the
//!   best opposite price), that is, those that would rest whole. A crossing GTC order is
//!   taken, since it cannot grow the book: its first meeting with the book either ends it
//!   (it fills, meets its own order under expire-taker or expire-both, or cannot pay) or
//!   takes that maker off the book (filled, or expired by self-trade prevention or for
//!   funds); a maker it only partly fills means the taker itself is filled. So a remainder
//!   rests only where matching freed a slot (asserted) and the book never grows past its
//!   bound.
//!
//! Either rule costs one price comparison and one version comparison, no walk. Post-only
//! orders that cross are refused first (`PostOnlyWouldTake`); IOC, FOK and market orders
//! never rest and ignore the bound.
//!
//! # Rules versions
//! A change to a matching rule changes outcomes, so a journal written under the old rule
//! must replay under it. The engine therefore keeps every rule it ever had, selected by its
//! rules version: state, carried by snapshots, that starts at [`RULES_VERSION_GENESIS`] and
//! moves forward only through the journaled [`Command::SetRulesVersion`] (the server sends
//! it at start when the engine is older than [`RULES_VERSION_CURRENT`]). A replay thus meets
//! every command under the rules its live run met, across upgrades. Versions:
//! 1. Genesis: a full book refuses every GTC order.
//! 2. A full book refuses only a GTC order that does not cross.
//! 3. A fully held limit buy never fails a fill for a rounding unit ("Money" below).
//! 4. A market order's budget in value units (a quote amount, or a market buy's hold, times
//!    the pair's value units per quote minor unit) saturates at `u128::MAX` instead of
//!    wrapping: on a pair whose decimals add up to 20 or more over the quote's, a budget near
//!    the 2^62 bound wrapped to a sliver (a market sell reported filled after selling a
//!    fraction of what it was asked for, a market buy stopped for want of funds it had).
//! 5. A market order by quote amount that has spent all of it (a buy's hold, a sell's value
//!    budget) is filled, whatever stopped it: one that took the last order of the book
//!    expired with `NoLiquidity` (and one whose next maker was its own, with
//!    `SelfTradePrevention`), though nothing of it was left to trade.
//!
//! # Money (API.md)
//! - Holds: limit buy `ceil(price x amount)` quote; sell `amount` base; market buy by base:
//!   all available quote, the unused part released at the end; market by quote: that much
//!   quote (buy) or all available whole lots of base (sell).
//! - A trade: buyer pays the value rounded up, seller receives it rounded down, the difference
//!   goes to the fee account. Fees are charged on what each side receives, rounded up, at the
//!   maker or taker rate. A resting buy keeps `ceil(limit x remaining)` held after each fill
//!   and releases the rest. Rounding each fill up can need one minor unit more than that
//!   hold covers (two fills of `5.005` cost `5.01 + 5.01`, the order held `ceil(10.01)`):
//!   the unit is taken from available. When available has none, under rules version 3 the
//!   buyer pays the fill's value rounded down, what the seller receives, and the fee account
//!   forgoes that fill's rounding remainder: the hold API.md defines is enough for the order
//!   to fill, as a client that committed its whole balance expects, and money is still
//!   conserved exactly. Under versions 1 and 2 such an order expired
//!   ([`DoneReason::InsufficientFunds`]) instead of trading, the taker of a FOK included.
//!
//! # Performance
//! Per order: one entry of the order id ring ([`crate::id_window`]: duplicate check, and
//! where a resting order is, one cache line, no hashing), O(1) book operations, a few ledger
//! index operations. No allocation once warm: events go into a caller-owned `Vec` that is
//! reused. `Command` is 48 bytes, so reading a stream of them costs under a line each.
//! A GTC order that does not cross (most orders) goes straight to the book: no taker state,
//! no matching loop. `bourse bench engine` under callgrind (`--toggle-collect='*throughput_pass*'`,
//! `--resting 10 --commands 200000`) counts about 575 instructions per command of the mix.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::book::Book;
use crate::command::{Command, MarketSize, OrderKind, PlaceOrder, RequestSpec};
use crate::event::{DoneReason, Event, RequestStatus, Trade};
use crate::id_window::{IdWindow, OrderLoc};
use crate::ids::{AccountId, CurrencyId, OrderId, PairId, RequestId, TradeId};
use crate::ledger::{Balance, Ledger, MAX_SUPPLY};
use crate::money::{
    buyer_pays, exact_value, fee, lots_affordable, lots_in_value, seller_receives, value_of_minor,
};
use crate::price::{Amount, MAX_ORDER_LOTS, Price};
use crate::reject::RejectReason;
use crate::request_ids::RequestIds;
use crate::side::{SelfTradePrevention, Side, TimeInForce};
use crate::spec::{
    CurrencySpec, MAX_CURRENCIES, MAX_CURRENCY_DECIMALS, MAX_PAIRS, PairInfo, PairScale, PairSpec,
    PairStatus,
};

/// Most resting orders a book may be configured for: with at most [`MAX_ORDER_LOTS`] lots
/// per order, a level's total (a `u64` of lots) cannot overflow.
pub const MAX_ORDERS_PER_BOOK: usize = (1 << 24) - 1;

/// The matching rules an engine starts with, and that any state not saying otherwise runs
/// (module doc, "Rules versions"): a full book refuses every GTC order.
pub const RULES_VERSION_GENESIS: u32 = 1;

/// The newest matching rules this build knows (version 5: a market order by quote amount
/// that spent it all is filled). The server moves an older engine to it at start.
pub const RULES_VERSION_CURRENT: u32 = 5;

/// From this version on a full book takes a crossing GTC order (module doc, "Full book").
/// Named apart from [`RULES_VERSION_CURRENT`], which a later rule change moves on.
const RULES_VERSION_FULL_BOOK_TAKES_CROSSING: u32 = 2;

/// From this version on a buying order whose hold and available funds fall short of a fill's
/// rounded-up payment by no more than the fill's rounding remainder pays that much less
/// instead of expiring (module doc, "Money").
const RULES_VERSION_ROUNDING_WAIVED: u32 = 3;

/// From this version on a market order's budget in value units saturates instead of
/// wrapping (module doc, "Rules versions").
const RULES_VERSION_BUDGETS_SATURATE: u32 = 4;

/// From this version on a market order by quote amount that has spent all of it is filled,
/// whatever stopped it (module doc, "Rules versions").
const RULES_VERSION_SPENT_BUDGET_FILLS: u32 = 5;

/// Bounds the engine enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineLimits {
    /// Most resting orders per book; a GTC order meeting a book this full is rejected with
    /// `BookFull`, under the rules of the engine's version (module doc, "Full book"). At
    /// most [`MAX_ORDERS_PER_BOOK`].
    pub max_orders_per_book: usize,
    /// Orders reserved up front per book (arena and id table), so a warm book does not grow.
    pub reserve_orders_per_book: usize,
    /// Highest account id the ledger accepts.
    pub max_account_id: u32,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            max_orders_per_book: 10_000_000,
            reserve_orders_per_book: 4096,
            max_account_id: 50_000_000,
        }
    }
}

#[derive(Clone, Debug)]
struct PairState {
    spec: PairSpec,
    scale: PairScale,
    book: Book,
    book_seq: u64,
    /// The command count at which `book_seq` was last bumped (one bump per command).
    bumped_at: u64,
}

#[derive(Clone, Debug)]
struct CurrencyState {
    spec: CurrencySpec,
    deposited: u64,
    withdrawn: u64,
}

/// Deposit or withdrawal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestKind {
    Deposit,
    Withdrawal,
}

/// A request waiting for the back office.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRequest {
    pub kind: RequestKind,
    pub account: AccountId,
    pub currency: CurrencyId,
    pub amount: u64,
}

/// Per-currency reconciliation figures (API.md `GET /v1/admin/audit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CurrencyAudit {
    pub currency: CurrencyId,
    pub deposits: u64,
    pub withdrawals: u64,
    /// Every account but the fee account.
    pub accounts_total: u128,
    pub fees_total: u64,
}

impl CurrencyAudit {
    pub fn ok(&self) -> bool {
        u128::from(self.deposits) - u128::from(self.withdrawals)
            == self.accounts_total + u128::from(self.fees_total)
    }
}

/// The matching engine and ledger.
#[derive(Clone, Debug)]
pub struct Engine {
    limits: EngineLimits,
    /// The matching rules in force (module doc, "Rules versions"): only
    /// [`Command::SetRulesVersion`] moves it, forward.
    rules_version: u32,
    currencies: Vec<CurrencyState>,
    pairs: Vec<PairState>,
    ledger: Ledger,
    requests: FxHashMap<RequestId, PendingRequest>,
    next_trade_id: u64,
    /// Order ids used (the highest is `max_order_id`) and where resting orders are: see
    /// [`crate::id_window`].
    order_ids: IdWindow,
    /// Request ids used (the highest is `max_request_id`): see [`crate::request_ids`].
    request_ids: RequestIds,
    commands: u64,
    /// Reused by cancel-all (order id, slot), so it does not allocate once warm.
    scratch: Vec<(OrderId, u32)>,
}

/// The incoming order while it matches.
struct Taker {
    id: OrderId,
    account: AccountId,
    side: Side,
    limit: Option<Price>,
    /// Lots still to trade (`u64::MAX` for a market order sized in quote).
    remaining: u64,
    /// Funds held for it (quote minor for a buy, base minor for a sell).
    held: u64,
    /// Market sell by quote: value still to sell, in value units.
    sell_value_budget: Option<u128>,
    stp: SelfTradePrevention,
    traded: bool,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new(EngineLimits::default())
    }
}

impl Engine {
    /// An empty engine: no currencies, no pairs, only the fee account.
    pub fn new(limits: EngineLimits) -> Self {
        assert!(
            limits.max_orders_per_book <= MAX_ORDERS_PER_BOOK,
            "max_orders_per_book {} above {MAX_ORDERS_PER_BOOK}",
            limits.max_orders_per_book
        );
        let mut order_ids = IdWindow::default();
        order_ids.reserve_old(limits.reserve_orders_per_book.min(1 << 16));
        Engine {
            limits,
            rules_version: RULES_VERSION_GENESIS,
            currencies: Vec::new(),
            pairs: Vec::new(),
            ledger: Ledger::new(),
            requests: FxHashMap::default(),
            next_trade_id: 1,
            order_ids,
            request_ids: RequestIds::default(),
            commands: 0,
            scratch: Vec::new(),
        }
    }

    pub fn limits(&self) -> EngineLimits {
        self.limits
    }

    /// The matching rules version in force (module doc, "Rules versions").
    pub fn rules_version(&self) -> u32 {
        self.rules_version
    }

    // ----- queries -------------------------------------------------------------------

    /// Every currency, by id.
    pub fn currencies(&self) -> impl Iterator<Item = (CurrencyId, &CurrencySpec)> {
        self.currencies
            .iter()
            .enumerate()
            .map(|(i, c)| (CurrencyId(i as u16), &c.spec))
    }

    pub fn currency(&self, id: CurrencyId) -> Option<&CurrencySpec> {
        self.currencies.get(id.0 as usize).map(|c| &c.spec)
    }

    /// Every pair, by id.
    pub fn pairs(&self) -> impl Iterator<Item = PairInfo> + '_ {
        self.pairs.iter().enumerate().map(|(i, p)| PairInfo {
            id: PairId(i as u16),
            spec: p.spec.clone(),
        })
    }

    pub fn pair(&self, id: PairId) -> Option<&PairSpec> {
        self.pairs.get(id.0 as usize).map(|p| &p.spec)
    }

    pub fn pair_scale(&self, id: PairId) -> Option<PairScale> {
        self.pairs.get(id.0 as usize).map(|p| p.scale)
    }

    /// A pair's book (read only).
    pub fn book(&self, id: PairId) -> Option<&Book> {
        self.pairs.get(id.0 as usize).map(|p| &p.book)
    }

    /// A pair's book sequence: bumped once per command that changed a level.
    pub fn book_seq(&self, id: PairId) -> u64 {
        self.pairs.get(id.0 as usize).map_or(0, |p| p.book_seq)
    }

    pub fn balance(&self, account: AccountId, currency: CurrencyId) -> Balance {
        self.ledger.get(account, currency)
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Pending requests, by id.
    pub fn pending_requests(&self) -> Vec<(RequestId, PendingRequest)> {
        let mut v: Vec<_> = self.requests.iter().map(|(k, v)| (*k, *v)).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Where a resting order is: its pair and its book slot.
    pub fn resting_order(&self, id: OrderId) -> Option<(PairId, &crate::book::RestingOrder)> {
        let loc = self.order_ids.get(id)?;
        Some((
            loc.pair,
            self.pairs[loc.pair.0 as usize].book.order(loc.slot),
        ))
    }

    pub fn resting_orders(&self) -> usize {
        self.order_ids.resting()
    }

    pub fn next_trade_id(&self) -> TradeId {
        TradeId(self.next_trade_id)
    }

    pub fn max_order_id(&self) -> OrderId {
        OrderId(self.order_ids.hi())
    }

    pub fn max_request_id(&self) -> RequestId {
        RequestId(self.request_ids.hi())
    }

    /// Reconciliation figures per currency.
    pub fn audit(&self) -> Vec<CurrencyAudit> {
        self.currencies
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let id = CurrencyId(i as u16);
                let fees = self.ledger.get(AccountId::FEES, id).total();
                CurrencyAudit {
                    currency: id,
                    deposits: c.deposited,
                    withdrawals: c.withdrawn,
                    accounts_total: self.ledger.totals(id) - u128::from(fees),
                    fees_total: fees,
                }
            })
            .collect()
    }

    // ----- commands ------------------------------------------------------------------

    /// Applies one command, appending its events to `out`.
    pub fn apply(&mut self, command: &Command, out: &mut Vec<Event>) {
        self.commands += 1;
        match command {
            Command::Place(order) => self.place(order, out),
            Command::Cancel { account, order } => self.cancel(*account, *order, out),
            Command::CancelAll { account, pair } => self.cancel_all(*account, *pair, out),
            Command::DepositRequested(spec) => self.request_new(spec, RequestKind::Deposit, out),
            Command::DepositCredited(spec) => self.deposit_credited(spec, out),
            Command::WithdrawalRequested(spec) => {
                self.request_new(spec, RequestKind::Withdrawal, out)
            }
            Command::ApproveRequest { request } => self.request_decide(*request, true, out),
            Command::RejectRequest { request, .. } => self.request_decide(*request, false, out),
            Command::AddCurrency(spec) => self.add_currency(spec, out),
            Command::AddPair(spec) => self.add_pair(spec, out),
            Command::SetPairStatus { pair, status } => self.set_pair_status(*pair, *status, out),
            Command::RegisterAccount(r) => self.register_account(r.account, out),
            Command::SetMaxOrdersPerBook { max } => self.set_max_orders_per_book(*max, out),
            Command::SetRulesVersion { version } => self.set_rules_version(*version, out),
        }
        #[cfg(feature = "verify")]
        if let Err(e) = self.check_invariants() {
            panic!("invariant broken after {command:?}: {e}");
        }
    }

    fn set_max_orders_per_book(&mut self, max: u32, out: &mut Vec<Event>) {
        if max == 0 || max as usize > MAX_ORDERS_PER_BOOK {
            out.push(Event::ConfigRefused {
                reason: RejectReason::InvalidSpec,
            });
            return;
        }
        self.limits.max_orders_per_book = max as usize;
        out.push(Event::MaxOrdersPerBookSet { max });
    }

    /// Moves to matching rules `version`. An unknown version (0, or newer than this build
    /// knows) or an older one is refused and changes nothing; the version in force again is
    /// confirmed, changing nothing either.
    fn set_rules_version(&mut self, version: u32, out: &mut Vec<Event>) {
        let refused = if !(RULES_VERSION_GENESIS..=RULES_VERSION_CURRENT).contains(&version) {
            Some(RejectReason::UnknownRulesVersion)
        } else if version < self.rules_version {
            Some(RejectReason::RulesVersionDowngrade)
        } else {
            None
        };
        if let Some(reason) = refused {
            out.push(Event::ConfigRefused { reason });
            return;
        }
        self.rules_version = version;
        out.push(Event::RulesVersionSet { version });
    }

    fn place(&mut self, o: &PlaceOrder, out: &mut Vec<Event>) {
        let reject = |out: &mut Vec<Event>, reason| {
            out.push(Event::Rejected {
                order: o.id,
                account: o.account,
                reason,
            })
        };
        let Some(pair) = self.pairs.get(o.pair.0 as usize) else {
            return reject(out, RejectReason::UnknownPair);
        };
        if pair.spec.status == PairStatus::Halted {
            return reject(out, RejectReason::PairHalted);
        }
        let (base, quote, scale, min) = (
            pair.spec.base,
            pair.spec.quote,
            pair.scale,
            pair.spec.min_amount.0,
        );
        match o.kind {
            OrderKind::Limit { price, amount, .. } => {
                if !price.is_valid() {
                    return reject(out, RejectReason::InvalidPrice);
                }
                if amount.0 == 0 || amount.0 > MAX_ORDER_LOTS {
                    return reject(out, RejectReason::InvalidAmount);
                }
                if amount.0 < min {
                    return reject(out, RejectReason::AmountTooSmall);
                }
            }
            OrderKind::Market {
                size: MarketSize::Base(amount),
            } => {
                if amount.0 == 0 || amount.0 > MAX_ORDER_LOTS {
                    return reject(out, RejectReason::InvalidAmount);
                }
                if amount.0 < min {
                    return reject(out, RejectReason::AmountTooSmall);
                }
            }
            OrderKind::Market {
                size: MarketSize::Quote(q),
            } => {
                if q == 0 {
                    return reject(out, RejectReason::InvalidAmount);
                }
            }
        }
        if self.order_ids.is_used(o.id) {
            return reject(out, RejectReason::DuplicateOrderId);
        }

        // What to hold.
        let (hold_currency, available) = match o.side {
            Side::Buy => (quote, self.ledger.get(o.account, quote).available),
            Side::Sell => (base, self.ledger.get(o.account, base).available),
        };
        let m = scale.base_minor_per_lot;
        let hold: u128 = match (o.side, o.kind) {
            (Side::Buy, OrderKind::Limit { price, amount, .. }) => {
                buyer_pays(&scale, exact_value(price.0, amount.0))
            }
            (Side::Sell, OrderKind::Limit { amount, .. }) => u128::from(amount.0) * u128::from(m),
            (
                Side::Buy,
                OrderKind::Market {
                    size: MarketSize::Base(_),
                },
            ) => u128::from(available),
            (
                Side::Buy,
                OrderKind::Market {
                    size: MarketSize::Quote(q),
                },
            ) => u128::from(q),
            (
                Side::Sell,
                OrderKind::Market {
                    size: MarketSize::Base(amount),
                },
            ) => u128::from(amount.0) * u128::from(m),
            (
                Side::Sell,
                OrderKind::Market {
                    size: MarketSize::Quote(_),
                },
            ) => u128::from(available / m * m),
        };
        if hold == 0 || hold > u128::from(available) {
            return reject(out, RejectReason::InsufficientFunds);
        }
        let hold = hold as u64;

        let book = &self.pairs[o.pair.0 as usize].book;
        let book_len = book.len();
        let opposite_best = book.best(o.side.opposite()).map(|(p, _)| p);
        let crosses = |limit: Price| match (o.side, opposite_best) {
            (_, None) => false,
            (Side::Buy, Some(ask)) => ask <= limit,
            (Side::Sell, Some(bid)) => bid >= limit,
        };
        if let OrderKind::Limit {
            price,
            tif,
            post_only,
            ..
        } = o.kind
        {
            if post_only && crosses(price) {
                return reject(out, RejectReason::PostOnlyWouldTake);
            }
            // Version 1: a full book refuses every GTC order. From version 2 only one that
            // would rest whole, one that does not cross: a crossing order's first meeting
            // with the book ends it or takes a resting order off (module doc, "Full book"),
            // so it cannot grow the book.
            if tif == TimeInForce::Gtc
                && book_len >= self.limits.max_orders_per_book
                && (self.rules_version < RULES_VERSION_FULL_BOOK_TAKES_CROSSING || !crosses(price))
            {
                return reject(out, RejectReason::BookFull);
            }
        }
        // A limit order that does not cross cannot trade: `match_taker` would stop at its
        // first look at the book, changing nothing, so it is not called (most orders rest
        // without trading, and the call's setup was ~5 % of the engine bench).
        let may_trade = match o.kind {
            OrderKind::Limit { price, .. } => crosses(price),
            OrderKind::Market { .. } => true,
        };

        // Accepted: hold the funds.
        let held_ok = self.ledger.hold(o.account, hold_currency, hold);
        assert!(held_ok, "hold checked against available above");
        self.order_ids.mark(o.id);
        out.push(Event::Accepted {
            order: o.id,
            account: o.account,
            pair: o.pair,
            side: o.side,
            held: hold,
        });
        self.push_balance(o.account, hold_currency, out);
        if !may_trade
            && let OrderKind::Limit {
                price,
                amount,
                tif: TimeInForce::Gtc,
                ..
            } = o.kind
        {
            // The common case, a GTC order that does not cross: it rests whole, with its
            // whole hold (what the general path below does, without its taker state).
            return self.rest(o, price, amount.0, hold, out);
        }

        let (limit, remaining, sell_value_budget) = match o.kind {
            OrderKind::Limit { price, amount, .. } => (Some(price), amount.0, None),
            OrderKind::Market {
                size: MarketSize::Base(amount),
            } => (None, amount.0, None),
            OrderKind::Market {
                size: MarketSize::Quote(q),
            } => match o.side {
                Side::Buy => (None, u64::MAX, None),
                Side::Sell => (None, u64::MAX, Some(self.budget_value(&scale, q))),
            },
        };
        let mut taker = Taker {
            id: o.id,
            account: o.account,
            side: o.side,
            limit,
            remaining,
            held: hold,
            sell_value_budget,
            stp: o.stp,
            traded: false,
        };

        if let OrderKind::Limit {
            tif: TimeInForce::Fok,
            ..
        } = o.kind
            && !self.fok_fillable(o.pair, &taker)
        {
            self.ledger.release(o.account, hold_currency, taker.held);
            self.push_balance(o.account, hold_currency, out);
            out.push(Event::Done {
                order: o.id,
                account: o.account,
                pair: o.pair,
                reason: DoneReason::FillOrKill,
            });
            return;
        }

        let stopped = if may_trade {
            self.match_taker(o.pair, &mut taker, out)
        } else {
            None
        };

        let filled = match o.kind {
            OrderKind::Market {
                size: MarketSize::Quote(_),
            } => {
                let spent = match o.side {
                    Side::Buy => taker.held == 0,
                    Side::Sell => taker.sell_value_budget == Some(0),
                };
                taker.traded
                    && (matches!(stopped, Some(DoneReason::Filled))
                        || (spent && self.rules_version >= RULES_VERSION_SPENT_BUDGET_FILLS))
            }
            _ => taker.remaining == 0,
        };
        if let OrderKind::Limit {
            tif: TimeInForce::Fok,
            ..
        } = o.kind
        {
            assert!(
                filled,
                "a FOK order that passed its dry walk fills completely"
            );
        }
        let reason = if filled {
            DoneReason::Filled
        } else if let Some(r) = stopped.filter(|r| *r != DoneReason::Filled) {
            r
        } else {
            match o.kind {
                OrderKind::Limit {
                    tif: TimeInForce::Gtc,
                    price,
                    ..
                } => {
                    // What lets a full book take a crossing GTC order (module doc, "Full
                    // book"): its remainder rests only where matching freed a slot.
                    assert!(
                        self.pairs[o.pair.0 as usize].book.len() < book_len,
                        "a crossing GTC order rests only after taking an order off the book"
                    );
                    // Rest the remainder; its hold stays.
                    return self.rest(o, price, taker.remaining, taker.held, out);
                }
                OrderKind::Limit { .. } => DoneReason::ImmediateOrCancel,
                OrderKind::Market { .. } => DoneReason::NoLiquidity,
            }
        };
        if taker.held > 0 {
            self.ledger.release(o.account, hold_currency, taker.held);
            self.push_balance(o.account, hold_currency, out);
        }
        out.push(Event::Done {
            order: o.id,
            account: o.account,
            pair: o.pair,
            reason,
        });
    }

    /// Puts `remaining` lots of the limit order `o` on the book at `price`, holding `held`.
    fn rest(
        &mut self,
        o: &PlaceOrder,
        price: Price,
        remaining: u64,
        held: u64,
        out: &mut Vec<Event>,
    ) {
        let pair = &mut self.pairs[o.pair.0 as usize];
        let (slot, total) = pair
            .book
            .insert(o.id, o.account, o.side, price, remaining, held);
        self.order_ids
            .set_resting(o.id, OrderLoc { pair: o.pair, slot });
        out.push(Event::Rested {
            order: o.id,
            remaining: Amount(remaining),
        });
        self.push_level(o.pair, o.side, price, total, out);
    }

    /// `minor` quote minor units in value units, as the rules version says: saturating from
    /// version 4, wrapping before, as the builds of those rules did in release (module doc,
    /// "Rules versions"), so a replay of their journals decides the same.
    #[inline]
    fn budget_value(&self, scale: &PairScale, minor: u64) -> u128 {
        if self.rules_version >= RULES_VERSION_BUDGETS_SATURATE {
            value_of_minor(scale, minor)
        } else {
            u128::from(minor).wrapping_mul(scale.value_per_quote_minor)
        }
    }

    /// Lots the taker may take from a maker at `price`, given its size and budgets.
    #[inline]
    fn taker_lots(
        &self,
        scale: &PairScale,
        taker: &Taker,
        price: Price,
        maker_remaining: u64,
    ) -> u64 {
        let mut lots = taker.remaining.min(maker_remaining);
        match taker.side {
            Side::Buy if taker.limit.is_none() => {
                lots = lots.min(lots_affordable(
                    price.0,
                    self.budget_value(scale, taker.held),
                ))
            }
            Side::Sell => {
                if let Some(budget) = taker.sell_value_budget {
                    lots =
                        lots.min(u64::try_from(lots_in_value(budget, price.0)).unwrap_or(u64::MAX));
                }
                lots = lots.min(taker.held / scale.base_minor_per_lot);
            }
            Side::Buy => {}
        }
        lots
    }

    /// Quote a limit buy must keep held for `remaining` lots.
    #[inline]
    fn buy_requirement(scale: &PairScale, limit: Price, remaining: u64) -> u64 {
        buyer_pays(scale, exact_value(limit.0, remaining)) as u64
    }

    /// What a limit buy pays for a fill whose value rounds up to `paid` and down to
    /// `received`, when paying it and keeping its remainder covered takes `need` of the `have`
    /// it holds and has available; `None` when it cannot pay (the order expires). Under rules
    /// version 3 a shortfall within the fill's rounding remainder (`paid - received`, at most
    /// one minor unit for an order that holds what its limit needs) is waived: the buyer
    /// pays that much less, never less than the seller receives (module doc, "Money").
    #[inline]
    fn payable<T>(&self, paid: T, received: T, need: T, have: T) -> Option<T>
    where
        T: Copy + Ord + std::ops::Sub<Output = T>,
    {
        if need <= have {
            Some(paid)
        } else if self.rules_version >= RULES_VERSION_ROUNDING_WAIVED
            && need - have <= paid - received
        {
            Some(paid - (need - have))
        } else {
            None
        }
    }

    /// Dry walk: would this FOK taker fill completely under the same rules as matching?
    /// Conservative where exactness would need simulating other accounts' balances: a maker
    /// that would need a rounding top-up from its available funds ([`Engine::payable`]
    /// waives none) makes the walk fail.
    fn fok_fillable(&self, pair_id: PairId, taker: &Taker) -> bool {
        let pair = &self.pairs[pair_id.0 as usize];
        let (book, scale, quote) = (&pair.book, pair.scale, pair.spec.quote);
        let opp = taker.side.opposite();
        let limit = taker.limit.expect("FOK is a limit order");
        let mut remaining = taker.remaining;
        let taker_funds =
            u128::from(taker.held) + u128::from(self.ledger.get(taker.account, quote).available);
        let mut taker_paid: u128 = 0;
        let mut price = book.best(opp).map(|(p, _)| p);
        while let Some(p) = price {
            if remaining == 0 {
                break;
            }
            let acceptable = match taker.side {
                Side::Buy => p <= limit,
                Side::Sell => p >= limit,
            };
            if !acceptable {
                break;
            }
            let mut slot = book.level_head(opp, p);
            while let Some(s) = slot {
                if remaining == 0 {
                    return true;
                }
                let maker = book.order(s);
                slot = book.next_in_level(s);
                if maker.account == taker.account {
                    match taker.stp {
                        SelfTradePrevention::ExpireTaker | SelfTradePrevention::ExpireBoth => {
                            return false;
                        }
                        SelfTradePrevention::ExpireMaker => continue,
                        SelfTradePrevention::None => {}
                    }
                }
                let lots = remaining.min(maker.remaining);
                let value = exact_value(p.0, lots);
                let (paid, received) = (buyer_pays(&scale, value), seller_receives(&scale, value));
                match taker.side {
                    Side::Buy => {
                        let after =
                            u128::from(Self::buy_requirement(&scale, limit, remaining - lots));
                        match self.payable(paid, received, taker_paid + paid + after, taker_funds) {
                            Some(pays) => taker_paid += pays,
                            None => return false,
                        }
                    }
                    Side::Sell => {
                        let after =
                            u128::from(Self::buy_requirement(&scale, p, maker.remaining - lots));
                        if self
                            .payable(paid, received, paid + after, u128::from(maker.held))
                            .is_none()
                        {
                            return false;
                        }
                    }
                }
                remaining -= lots;
            }
            price = book.next_level_price(opp, p);
        }
        remaining == 0
    }

    /// Matches the taker against the book. Returns why it stopped early, if it did
    /// (`Some(Filled)` for a quote-sized market order whose budget is spent).
    fn match_taker(
        &mut self,
        pair_id: PairId,
        taker: &mut Taker,
        out: &mut Vec<Event>,
    ) -> Option<DoneReason> {
        let opp = taker.side.opposite();
        let mut touched: Option<(Price, u64)> = None;
        let stop = loop {
            if taker.remaining == 0 {
                break None;
            }
            let pair = &self.pairs[pair_id.0 as usize];
            let Some(head) = pair.book.best_head(opp) else {
                break None;
            };
            let maker = *pair.book.order(head);
            let (scale, quote) = (pair.scale, pair.spec.quote);
            let price = maker.price;
            if let Some(limit) = taker.limit {
                let acceptable = match taker.side {
                    Side::Buy => price <= limit,
                    Side::Sell => price >= limit,
                };
                if !acceptable {
                    break None;
                }
            }
            // A level is reported once, when the taker leaves it, and only if it changed:
            // stopping at a level (self-trade, funds) without touching it reports nothing.
            // `touched` carries the level's total after the last change (no lookup needed).
            let touch =
                |this: &mut Self, touched: &mut Option<(Price, u64)>, out: &mut Vec<Event>| {
                    if let Some((p, total)) = *touched
                        && p != price
                    {
                        this.push_level(pair_id, opp, p, total, out);
                    }
                    *touched = Some((price, 0));
                };

            if maker.account == taker.account && taker.stp != SelfTradePrevention::None {
                match taker.stp {
                    SelfTradePrevention::ExpireTaker => {
                        break Some(DoneReason::SelfTradePrevention);
                    }
                    SelfTradePrevention::ExpireMaker => {
                        touch(self, &mut touched, out);
                        let total =
                            self.expire_maker(pair_id, head, DoneReason::SelfTradePrevention, out);
                        touched = Some((price, total));
                        continue;
                    }
                    _ => {
                        touch(self, &mut touched, out);
                        let total =
                            self.expire_maker(pair_id, head, DoneReason::SelfTradePrevention, out);
                        touched = Some((price, total));
                        break Some(DoneReason::SelfTradePrevention);
                    }
                }
            }

            let lots = self.taker_lots(&scale, taker, price, maker.remaining);
            if lots == 0 {
                // A budget-limited market order cannot afford one more lot.
                break Some(match (taker.side, taker.sell_value_budget) {
                    // A market sell by quote that ran out of base did not reach its
                    // quote amount: it expires, it is not filled.
                    (Side::Sell, Some(budget)) if budget >= u128::from(price.0) => {
                        DoneReason::InsufficientFunds
                    }
                    (Side::Sell, Some(_)) => DoneReason::Filled,
                    (Side::Buy, _) if taker.remaining == u64::MAX => DoneReason::Filled,
                    _ => DoneReason::InsufficientFunds,
                });
            }
            let value = exact_value(price.0, lots);
            let (mut paid, received) = (
                buyer_pays(&scale, value) as u64,
                seller_receives(&scale, value) as u64,
            );

            // Can the buying order pay this fill and keep its remainder covered?
            match taker.side {
                Side::Buy => {
                    if let Some(limit) = taker.limit {
                        let need =
                            paid + Self::buy_requirement(&scale, limit, taker.remaining - lots);
                        let have = taker.held + self.ledger.get(taker.account, quote).available;
                        match self.payable(paid, received, need, have) {
                            Some(pays) => paid = pays,
                            None => break Some(DoneReason::InsufficientFunds),
                        }
                    }
                }
                Side::Sell => {
                    let need = paid + Self::buy_requirement(&scale, price, maker.remaining - lots);
                    let have = maker.held + self.ledger.get(maker.account, quote).available;
                    match self.payable(paid, received, need, have) {
                        Some(pays) => paid = pays,
                        None => {
                            touch(self, &mut touched, out);
                            let total = self.expire_maker(
                                pair_id,
                                head,
                                DoneReason::InsufficientFunds,
                                out,
                            );
                            touched = Some((price, total));
                            continue;
                        }
                    }
                }
            }

            touch(self, &mut touched, out);
            let total = self.execute(pair_id, taker, head, lots, (paid, received), out);
            touched = Some((price, total));
        };
        if let Some((p, total)) = touched {
            self.push_level(pair_id, opp, p, total, out);
        }
        stop
    }

    /// One trade between the taker and the maker at `slot`, settled in full: the buyer pays
    /// `paid` (the value rounded up, or less: [`Engine::payable`]) and the seller receives
    /// `received` (the value rounded down). Returns the maker's level total afterwards.
    fn execute(
        &mut self,
        pair_id: PairId,
        taker: &mut Taker,
        slot: u32,
        lots: u64,
        (paid, received): (u64, u64),
        out: &mut Vec<Event>,
    ) -> u64 {
        let pair = &mut self.pairs[pair_id.0 as usize];
        let scale = pair.scale;
        let (base, quote) = (pair.spec.base, pair.spec.quote);
        let (maker_fee, taker_fee) = (pair.spec.maker_fee_ppm, pair.spec.taker_fee_ppm);
        let maker = *pair.book.order(slot);
        let price = maker.price;
        let value = exact_value(price.0, lots);
        debug_assert_eq!(received, seller_receives(&scale, value) as u64);
        assert!(
            paid >= received,
            "a buyer pays at least what the seller receives"
        );
        let base_amount = lots * scale.base_minor_per_lot;
        let (buyer, seller, buyer_rate, seller_rate) = match taker.side {
            Side::Buy => (taker.account, maker.account, taker_fee, maker_fee),
            Side::Sell => (maker.account, taker.account, maker_fee, taker_fee),
        };
        let buyer_fee = fee(base_amount, buyer_rate);
        let seller_fee = fee(received, seller_rate);

        // The buyer's quote: out of the buying order's hold.
        let (buy_held, buy_limit, buy_remaining_after) = match taker.side {
            Side::Buy => (
                taker.held,
                taker.limit,
                taker.remaining.saturating_sub(lots),
            ),
            Side::Sell => (maker.held, Some(price), maker.remaining - lots),
        };
        let new_buy_held = match buy_limit {
            Some(limit) => {
                let required = Self::buy_requirement(&scale, limit, buy_remaining_after);
                let need = paid + required;
                if need > buy_held {
                    let topped = self.ledger.hold(buyer, quote, need - buy_held);
                    assert!(topped, "coverage checked before the trade");
                } else {
                    self.ledger.release(buyer, quote, buy_held - need);
                }
                self.ledger.spend_held(buyer, quote, paid);
                required
            }
            None => {
                self.ledger.spend_held(buyer, quote, paid);
                buy_held - paid
            }
        };
        self.ledger.credit(buyer, base, base_amount - buyer_fee);
        // The seller's base: out of the selling order's hold.
        self.ledger.spend_held(seller, base, base_amount);
        self.ledger.credit(seller, quote, received - seller_fee);
        // Fees and the rounding remainder.
        self.ledger.credit(AccountId::FEES, base, buyer_fee);
        self.ledger
            .credit(AccountId::FEES, quote, seller_fee + (paid - received));

        let trade_id = TradeId(self.next_trade_id);
        self.next_trade_id += 1;
        out.push(Event::Trade(Trade {
            id: trade_id,
            pair: pair_id,
            price,
            amount: Amount(lots),
            taker_side: taker.side,
            maker_order: maker.id,
            taker_order: taker.id,
            maker_account: maker.account,
            taker_account: taker.account,
            buyer_paid: paid,
            seller_received: received,
            base_received: base_amount,
            buyer_fee,
            seller_fee,
        }));

        // Order state.
        taker.traded = true;
        if taker.remaining != u64::MAX {
            taker.remaining -= lots;
        }
        if let Some(budget) = taker.sell_value_budget.as_mut() {
            *budget -= value;
        }
        match taker.side {
            Side::Buy => taker.held = new_buy_held,
            Side::Sell => taker.held -= base_amount,
        }
        let pair = &mut self.pairs[pair_id.0 as usize];
        let level_total = if lots == maker.remaining {
            let total = pair.book.remove(slot);
            self.order_ids.set_final(maker.id);
            let leftover = match maker.side {
                Side::Buy => new_buy_held,
                Side::Sell => maker.held - base_amount,
            };
            if leftover > 0 {
                let currency = if maker.side == Side::Buy { quote } else { base };
                self.ledger.release(maker.account, currency, leftover);
            }
            out.push(Event::Done {
                order: maker.id,
                account: maker.account,
                pair: pair_id,
                reason: DoneReason::Filled,
            });
            total
        } else {
            let total = pair.book.reduce(slot, lots);
            let m = pair.book.order_mut(slot);
            match maker.side {
                Side::Buy => m.held = new_buy_held,
                Side::Sell => m.held -= base_amount,
            }
            total
        };
        self.push_balance(buyer, quote, out);
        self.push_balance(buyer, base, out);
        self.push_balance(seller, base, out);
        self.push_balance(seller, quote, out);
        level_total
    }

    /// Removes a resting order that can no longer trade, releasing its hold. Returns its
    /// level's total afterwards.
    fn expire_maker(
        &mut self,
        pair_id: PairId,
        slot: u32,
        reason: DoneReason,
        out: &mut Vec<Event>,
    ) -> u64 {
        let pair = &mut self.pairs[pair_id.0 as usize];
        let o = pair.book.order(slot);
        let (id, account, side, held) = (o.id, o.account, o.side, o.held);
        let total = pair.book.remove(slot);
        let currency = if side == Side::Buy {
            pair.spec.quote
        } else {
            pair.spec.base
        };
        self.order_ids.set_final(id);
        self.ledger.release(account, currency, held);
        self.push_balance(account, currency, out);
        out.push(Event::Done {
            order: id,
            account,
            pair: pair_id,
            reason,
        });
        total
    }

    fn cancel(&mut self, account: AccountId, order: OrderId, out: &mut Vec<Event>) {
        let loc = match self.order_ids.get(order) {
            Some(loc)
                if self.pairs[loc.pair.0 as usize].book.order(loc.slot).account == account =>
            {
                loc
            }
            _ => {
                out.push(Event::CancelRejected {
                    order,
                    account,
                    reason: RejectReason::OrderNotOpen,
                });
                return;
            }
        };
        self.cancel_slot(loc.pair, loc.slot, out);
    }

    fn cancel_slot(&mut self, pair_id: PairId, slot: u32, out: &mut Vec<Event>) {
        let (side, price) = {
            let o = self.pairs[pair_id.0 as usize].book.order(slot);
            (o.side, o.price)
        };
        let total = self.expire_maker(pair_id, slot, DoneReason::Cancelled, out);
        self.push_level(pair_id, side, price, total, out);
    }

    fn cancel_all(&mut self, account: AccountId, only: Option<PairId>, out: &mut Vec<Event>) {
        let pairs = match only {
            Some(p) if (p.0 as usize) < self.pairs.len() => p.0..p.0 + 1,
            Some(_) => 0..0,
            None => 0..self.pairs.len() as u16,
        };
        // In order id order, not the account list's (arrival) order: a snapshot does not
        // keep arrival order, and an engine restored from one must emit the same events.
        let mut mine = std::mem::take(&mut self.scratch);
        for p in pairs {
            mine.clear();
            let book = &self.pairs[p as usize].book;
            let mut slot = book.account_head(account);
            while let Some(s) = slot {
                mine.push((book.order(s).id, s));
                slot = book.next_of_account(s);
            }
            mine.sort_unstable();
            for &(_, s) in &mine {
                self.cancel_slot(PairId(p), s, out);
            }
        }
        self.scratch = mine;
    }

    fn validate_request(&self, spec: &RequestSpec) -> Option<RejectReason> {
        if spec.currency.0 as usize >= self.currencies.len() {
            return Some(RejectReason::UnknownCurrency);
        }
        if spec.amount == 0 {
            return Some(RejectReason::InvalidAmount);
        }
        if self.request_ids.is_used(spec.request.0) {
            return Some(RejectReason::DuplicateRequestId);
        }
        if spec.account.0 > self.limits.max_account_id || spec.account == AccountId::FEES {
            return Some(RejectReason::InvalidSpec);
        }
        None
    }

    fn supply_room(&self, currency: CurrencyId, amount: u64) -> bool {
        let c = &self.currencies[currency.0 as usize];
        u128::from(c.deposited) - u128::from(c.withdrawn) + u128::from(amount)
            <= u128::from(MAX_SUPPLY)
            && c.deposited.checked_add(amount).is_some()
    }

    fn request_new(&mut self, spec: &RequestSpec, kind: RequestKind, out: &mut Vec<Event>) {
        if let Some(reason) = self.validate_request(spec) {
            out.push(Event::RequestRefused {
                request: spec.request,
                reason,
            });
            return;
        }
        if kind == RequestKind::Withdrawal {
            if !self.ledger.hold(spec.account, spec.currency, spec.amount) {
                out.push(Event::RequestRefused {
                    request: spec.request,
                    reason: RejectReason::InsufficientFunds,
                });
                return;
            }
            self.push_balance(spec.account, spec.currency, out);
        }
        self.request_ids.mark(spec.request.0);
        self.requests.insert(
            spec.request,
            PendingRequest {
                kind,
                account: spec.account,
                currency: spec.currency,
                amount: spec.amount,
            },
        );
        out.push(Event::RequestUpdated {
            request: spec.request,
            account: spec.account,
            status: RequestStatus::Pending,
        });
    }

    fn deposit_credited(&mut self, spec: &RequestSpec, out: &mut Vec<Event>) {
        if let Some(reason) = self.validate_request(spec) {
            out.push(Event::RequestRefused {
                request: spec.request,
                reason,
            });
            return;
        }
        if !self.supply_room(spec.currency, spec.amount) {
            out.push(Event::RequestRefused {
                request: spec.request,
                reason: RejectReason::AmountOverflow,
            });
            return;
        }
        self.request_ids.mark(spec.request.0);
        self.credit_deposit(spec.account, spec.currency, spec.amount, out);
        out.push(Event::RequestUpdated {
            request: spec.request,
            account: spec.account,
            status: RequestStatus::Completed,
        });
    }

    fn credit_deposit(
        &mut self,
        account: AccountId,
        currency: CurrencyId,
        amount: u64,
        out: &mut Vec<Event>,
    ) {
        self.ledger.ensure_account(account);
        self.ledger.credit(account, currency, amount);
        self.currencies[currency.0 as usize].deposited += amount;
        self.push_balance(account, currency, out);
    }

    fn request_decide(&mut self, request: RequestId, approve: bool, out: &mut Vec<Event>) {
        let Some(pending) = self.requests.get(&request).copied() else {
            out.push(Event::RequestRefused {
                request,
                reason: RejectReason::RequestNotPending,
            });
            return;
        };
        let (account, currency, amount) = (pending.account, pending.currency, pending.amount);
        match (pending.kind, approve) {
            (RequestKind::Deposit, true) => {
                if !self.supply_room(currency, amount) {
                    out.push(Event::RequestRefused {
                        request,
                        reason: RejectReason::AmountOverflow,
                    });
                    return;
                }
                self.credit_deposit(account, currency, amount, out);
            }
            (RequestKind::Deposit, false) => {}
            (RequestKind::Withdrawal, true) => {
                self.ledger.spend_held(account, currency, amount);
                self.currencies[currency.0 as usize].withdrawn += amount;
                self.push_balance(account, currency, out);
            }
            (RequestKind::Withdrawal, false) => {
                self.ledger.release(account, currency, amount);
                self.push_balance(account, currency, out);
            }
        }
        self.requests.remove(&request);
        let status = if approve {
            RequestStatus::Completed
        } else {
            RequestStatus::Rejected
        };
        out.push(Event::RequestUpdated {
            request,
            account,
            status,
        });
    }

    fn add_currency(&mut self, spec: &CurrencySpec, out: &mut Vec<Event>) {
        let reason = if self.currencies.len() >= MAX_CURRENCIES {
            Some(RejectReason::TooManyCurrencies)
        } else if spec.decimals > MAX_CURRENCY_DECIMALS || spec.code.is_empty() {
            Some(RejectReason::InvalidSpec)
        } else if self.currencies.iter().any(|c| c.spec.code == spec.code) {
            Some(RejectReason::DuplicateCurrency)
        } else {
            None
        };
        if let Some(reason) = reason {
            out.push(Event::ConfigRefused { reason });
            return;
        }
        self.currencies.push(CurrencyState {
            spec: spec.clone(),
            deposited: 0,
            withdrawn: 0,
        });
        out.push(Event::CurrencyAdded {
            currency: CurrencyId((self.currencies.len() - 1) as u16),
        });
    }

    fn add_pair(&mut self, spec: &PairSpec, out: &mut Vec<Event>) {
        let scale = match (
            self.currencies.get(spec.base.0 as usize),
            self.currencies.get(spec.quote.0 as usize),
        ) {
            _ if self.pairs.len() >= MAX_PAIRS => Err(RejectReason::TooManyPairs),
            (Some(b), Some(q)) => spec
                .scale(b.spec.decimals, q.spec.decimals)
                .map_err(|_| RejectReason::InvalidSpec),
            _ => Err(RejectReason::UnknownCurrency),
        };
        let scale = match scale {
            Ok(_)
                if self
                    .pairs
                    .iter()
                    .any(|p| p.spec.base == spec.base && p.spec.quote == spec.quote) =>
            {
                Err(RejectReason::DuplicatePair)
            }
            other => other,
        };
        match scale {
            Err(reason) => out.push(Event::ConfigRefused { reason }),
            Ok(scale) => {
                self.pairs.push(PairState {
                    spec: spec.clone(),
                    scale,
                    book: Book::with_capacity(self.limits.reserve_orders_per_book),
                    book_seq: 0,
                    bumped_at: 0,
                });
                out.push(Event::PairAdded {
                    pair: PairId((self.pairs.len() - 1) as u16),
                });
            }
        }
    }

    fn set_pair_status(&mut self, pair: PairId, status: PairStatus, out: &mut Vec<Event>) {
        match self.pairs.get_mut(pair.0 as usize) {
            None => out.push(Event::ConfigRefused {
                reason: RejectReason::UnknownPair,
            }),
            Some(p) => {
                p.spec.status = status;
                out.push(Event::PairStatusChanged { pair, status });
            }
        }
    }

    /// Accounts need no engine state (a balance appears on first credit); the command is
    /// journaled so the read models (users, clients) can be rebuilt from the journal. The
    /// engine only checks the id is one the ledger accepts.
    fn register_account(&mut self, account: AccountId, out: &mut Vec<Event>) {
        if account == AccountId::FEES || account.0 > self.limits.max_account_id {
            out.push(Event::ConfigRefused {
                reason: RejectReason::InvalidSpec,
            });
        } else {
            out.push(Event::AccountRegistered { account });
        }
    }

    // ----- event helpers -------------------------------------------------------------

    #[inline]
    fn push_balance(&self, account: AccountId, currency: CurrencyId, out: &mut Vec<Event>) {
        if account == AccountId::FEES {
            return;
        }
        let b = self.ledger.get(account, currency);
        out.push(Event::Balance {
            account,
            currency,
            available: b.available,
            held: b.held,
        });
    }

    #[inline(always)]
    fn push_level(
        &mut self,
        pair_id: PairId,
        side: Side,
        price: Price,
        total: u64,
        out: &mut Vec<Event>,
    ) {
        let pair = &mut self.pairs[pair_id.0 as usize];
        if pair.bumped_at != self.commands {
            pair.bumped_at = self.commands;
            pair.book_seq += 1;
        }
        out.push(Event::LevelChanged {
            pair: pair_id,
            side,
            price,
            amount: Amount(total),
            book_seq: pair.book_seq,
        });
    }

    // ----- invariants ----------------------------------------------------------------

    /// Every structural and money invariant. Costly: tests and the `verify` feature.
    pub fn check_invariants(&self) -> Result<(), String> {
        if !(RULES_VERSION_GENESIS..=RULES_VERSION_CURRENT).contains(&self.rules_version) {
            return Err(format!("unknown rules version {}", self.rules_version));
        }
        let mut held: FxHashMap<(AccountId, CurrencyId), u64> = FxHashMap::default();
        let mut resting = 0usize;
        for (i, pair) in self.pairs.iter().enumerate() {
            pair.book
                .check_invariants()
                .map_err(|e| format!("pair {i}: {e}"))?;
            for side in [Side::Buy, Side::Sell] {
                let currency = if side == Side::Buy {
                    pair.spec.quote
                } else {
                    pair.spec.base
                };
                let mut err = None;
                pair.book.for_each_level(side, |level| {
                    pair.book.for_each_order_at(side, level.price, |o| {
                        resting += 1;
                        match self.order_ids.get(o.id) {
                            Some(loc)
                                if loc.pair.0 as usize == i
                                    && pair.book.order(loc.slot).id == o.id => {}
                            _ => err = Some(format!("order {} missing from the id table", o.id)),
                        }
                        let need = match side {
                            Side::Buy => Self::buy_requirement(&pair.scale, o.price, o.remaining),
                            Side::Sell => o.remaining * pair.scale.base_minor_per_lot,
                        };
                        if o.held != need {
                            err = Some(format!("order {} holds {} but needs {need}", o.id, o.held));
                        }
                        *held.entry((o.account, currency)).or_default() += o.held;
                    });
                    true
                });
                if let Some(e) = err {
                    return Err(e);
                }
            }
        }
        if resting != self.order_ids.resting() {
            return Err(format!(
                "{resting} resting orders, {} in the id table",
                self.order_ids.resting()
            ));
        }
        for r in self.requests.values() {
            if r.kind == RequestKind::Withdrawal {
                *held.entry((r.account, r.currency)).or_default() += r.amount;
            }
        }
        for (account, currency, balance) in self.ledger.non_zero() {
            let expected = held.remove(&(account, currency)).unwrap_or(0);
            if balance.held != expected {
                return Err(format!(
                    "account {account} currency {currency}: held {} but orders hold {expected}",
                    balance.held
                ));
            }
        }
        if let Some(((a, c), h)) = held.into_iter().find(|(_, h)| *h != 0) {
            return Err(format!(
                "account {a} currency {c}: orders hold {h} but the ledger holds 0"
            ));
        }
        for audit in self.audit() {
            if !audit.ok() {
                return Err(format!("money not conserved: {audit:?}"));
            }
        }
        Ok(())
    }

    // ----- snapshot support (used by `state`) ---------------------------------------

    pub(crate) fn restore_parts(
        limits: EngineLimits,
        rules_version: u32,
        currencies: Vec<(CurrencySpec, u64, u64)>,
        next_trade_id: u64,
        order_ids: IdWindow,
        request_ids: RequestIds,
    ) -> Engine {
        let mut e = Engine::new(limits);
        e.rules_version = rules_version;
        e.currencies = currencies
            .into_iter()
            .map(|(spec, deposited, withdrawn)| CurrencyState {
                spec,
                deposited,
                withdrawn,
            })
            .collect();
        e.next_trade_id = next_trade_id;
        e.order_ids = order_ids;
        e.request_ids = request_ids;
        e
    }

    pub(crate) fn restore_pair(
        &mut self,
        spec: PairSpec,
        book_seq: u64,
    ) -> Result<PairId, RejectReason> {
        let mut out = Vec::new();
        self.add_pair(&spec, &mut out);
        match out.first() {
            Some(Event::PairAdded { pair }) => {
                self.pairs[pair.0 as usize].book_seq = book_seq;
                Ok(*pair)
            }
            Some(Event::ConfigRefused { reason }) => Err(*reason),
            _ => Err(RejectReason::InvalidSpec),
        }
    }

    pub(crate) fn restore_order(&mut self, pair: PairId, o: &crate::state::RestingOrderState) {
        let book = &mut self.pairs[pair.0 as usize].book;
        let (slot, _) = book.insert(o.id, o.account, o.side, o.price, o.remaining, o.held);
        self.order_ids.set_resting(o.id, OrderLoc { pair, slot });
    }

    pub(crate) fn restore_request(&mut self, id: RequestId, r: PendingRequest) {
        self.requests.insert(id, r);
    }

    pub(crate) fn ledger_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }

    pub(crate) fn currency_totals(&self) -> Vec<(CurrencySpec, u64, u64)> {
        self.currencies
            .iter()
            .map(|c| (c.spec.clone(), c.deposited, c.withdrawn))
            .collect()
    }

    pub(crate) fn request_ids(&self) -> &RequestIds {
        &self.request_ids
    }

    pub(crate) fn order_ids(&self) -> &IdWindow {
        &self.order_ids
    }
}
