//! A naive reference engine for the property tests: the book is a plain `Vec` scanned for
//! the best order, balances a `BTreeMap`, the money rules re-derived from API.md and the
//! engine's module doc rather than shared with the engine. Slow and obviously correct is
//! the point: when it and the engine disagree, one of them misread the spec.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use engine::{
    AccountId, Amount, Command, CurrencyId, DoneReason, Event, MAX_ORDER_LOTS, MAX_PRICE_TICKS,
    MarketSize, OrderId, OrderKind, PairId, PairSpec, PairStatus, PlaceOrder, Price, RejectReason,
    RequestId, RequestSpec, RequestStatus, SelfTradePrevention, Side, TimeInForce, Trade, TradeId,
};

const FEE_SCALE: u128 = 1_000_000;
const SUPPLY_MAX: u128 = 1 << 62;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MOrder {
    pub id: OrderId,
    pub account: AccountId,
    pub side: Side,
    pub price: Price,
    pub remaining: u64,
    pub held: u64,
    /// Arrival order: time priority.
    seq: u64,
}

#[derive(Clone, Debug)]
struct MPair {
    spec: PairSpec,
    /// Value units (price ticks x lots) per quote minor unit.
    vpq: u128,
    /// Base minor units per lot.
    m: u64,
    orders: Vec<MOrder>,
    book_seq: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Deposit,
    Withdrawal,
}

/// The reference engine.
#[derive(Clone, Debug, Default)]
pub struct Model {
    decimals: Vec<u8>,
    deposited: Vec<u128>,
    withdrawn: Vec<u128>,
    pairs: Vec<MPair>,
    /// (available, held) per (account, currency).
    bal: BTreeMap<(AccountId, CurrencyId), (u64, u64)>,
    requests: BTreeMap<RequestId, (Kind, AccountId, CurrencyId, u64)>,
    next_trade: u64,
    /// Every request id ever accepted (naive: never forgets).
    used_requests: BTreeSet<u64>,
    /// Every order id ever accepted (naive: never forgets).
    used_ids: BTreeSet<u64>,
    seq: u64,
    /// Did this command already bump the pair's book sequence?
    bumped: Vec<bool>,
    /// Most resting orders per book: a GTC order meeting a book this full is refused (every
    /// one under rules version 1, one that would grow the book from version 2).
    max_orders_per_book: usize,
    /// The matching rules version (1 at genesis, moved forward only by `SetRulesVersion`).
    rules_version: u32,
}

fn ceil_div(a: u128, b: u128) -> u128 {
    a.div_ceil(b)
}

fn fee(received: u64, ppm: u32) -> u64 {
    ceil_div(u128::from(received) * u128::from(ppm), FEE_SCALE) as u64
}

/// The incoming order while it matches.
struct Taker {
    o: PlaceOrder,
    limit: Option<Price>,
    /// `None` for a market order sized in quote.
    remaining: Option<u64>,
    held: u64,
    /// Market sell by quote: value units still to sell.
    budget: Option<u128>,
    traded: bool,
}

impl Model {
    pub fn new() -> Model {
        Model {
            next_trade: 1,
            max_orders_per_book: engine::EngineLimits::default().max_orders_per_book,
            rules_version: 1,
            ..Default::default()
        }
    }

    // ----- views compared with the engine ---------------------------------------------

    pub fn balance(&self, a: AccountId, c: CurrencyId) -> (u64, u64) {
        self.bal.get(&(a, c)).copied().unwrap_or((0, 0))
    }

    /// The book in priority order: bids best first, then asks best first, FIFO within.
    pub fn book(&self, pair: PairId) -> Vec<MOrder> {
        let mut v = self.pairs[pair.0 as usize].orders.clone();
        v.sort_by_key(|o| (o.side.index(), Self::priority_key(o), o.seq));
        v
    }

    pub fn book_seq(&self, pair: PairId) -> u64 {
        self.pairs[pair.0 as usize].book_seq
    }

    pub fn pair_count(&self) -> usize {
        self.pairs.len()
    }

    /// Resting order ids and their owners, oldest first.
    pub fn resting(&self) -> Vec<(OrderId, AccountId)> {
        let mut v: Vec<_> = self
            .pairs
            .iter()
            .flat_map(|p| p.orders.iter().map(|o| (o.seq, o.id, o.account)))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id, a)| (id, a)).collect()
    }

    pub fn pending_requests(&self) -> Vec<RequestId> {
        self.requests.keys().copied().collect()
    }

    /// deposits - withdrawals == every balance, per currency.
    pub fn conserved(&self) -> bool {
        (0..self.decimals.len()).all(|c| {
            let sum: u128 = self
                .bal
                .iter()
                .filter(|((_, cc), _)| cc.0 as usize == c)
                .map(|(_, (a, h))| u128::from(*a) + u128::from(*h))
                .sum();
            sum == self.deposited[c] - self.withdrawn[c]
        })
    }

    fn priority_key(o: &MOrder) -> i128 {
        match o.side {
            Side::Buy => -i128::from(o.price.0),
            Side::Sell => i128::from(o.price.0),
        }
    }

    // ----- commands -----------------------------------------------------------------------

    pub fn apply(&mut self, c: &Command) -> Vec<Event> {
        let mut out = Vec::new();
        self.bumped = vec![false; self.pairs.len()];
        match c {
            Command::AddCurrency(spec) => {
                self.decimals.push(spec.decimals);
                self.deposited.push(0);
                self.withdrawn.push(0);
                out.push(Event::CurrencyAdded {
                    currency: CurrencyId((self.decimals.len() - 1) as u16),
                });
            }
            Command::AddPair(spec) => {
                let (bd, qd) = (
                    self.decimals[spec.base.0 as usize],
                    self.decimals[spec.quote.0 as usize],
                );
                let vpq = 10u128.pow(u32::from(spec.price_decimals + spec.amount_decimals - qd));
                let m = 10u64.pow(u32::from(bd - spec.amount_decimals));
                self.pairs.push(MPair {
                    spec: spec.clone(),
                    vpq,
                    m,
                    orders: Vec::new(),
                    book_seq: 0,
                });
                out.push(Event::PairAdded {
                    pair: PairId((self.pairs.len() - 1) as u16),
                });
            }
            Command::SetPairStatus { pair, status } => match self.pairs.get_mut(pair.0 as usize) {
                Some(p) => {
                    p.spec.status = *status;
                    out.push(Event::PairStatusChanged {
                        pair: *pair,
                        status: *status,
                    });
                }
                None => out.push(Event::ConfigRefused {
                    reason: RejectReason::UnknownPair,
                }),
            },
            Command::RegisterAccount(r) => {
                out.push(Event::AccountRegistered { account: r.account })
            }
            Command::SetMaxOrdersPerBook { max } => {
                if *max == 0 || *max as usize > engine::MAX_ORDERS_PER_BOOK {
                    out.push(Event::ConfigRefused {
                        reason: RejectReason::InvalidSpec,
                    });
                } else {
                    self.max_orders_per_book = *max as usize;
                    out.push(Event::MaxOrdersPerBookSet { max: *max });
                }
            }
            // Versions this model knows: 1 to 5.
            Command::SetRulesVersion { version } => {
                if !(1..=5).contains(version) {
                    out.push(Event::ConfigRefused {
                        reason: RejectReason::UnknownRulesVersion,
                    });
                } else if *version < self.rules_version {
                    out.push(Event::ConfigRefused {
                        reason: RejectReason::RulesVersionDowngrade,
                    });
                } else {
                    self.rules_version = *version;
                    out.push(Event::RulesVersionSet { version: *version });
                }
            }
            Command::Place(o) => self.place(o, &mut out),
            Command::Cancel { account, order } => {
                let found = self.pairs.iter().enumerate().find_map(|(p, pair)| {
                    pair.orders
                        .iter()
                        .position(|x| x.id == *order && x.account == *account)
                        .map(|i| (p, i))
                });
                match found {
                    Some((p, i)) => self.cancel_at(p, i, &mut out),
                    None => out.push(Event::CancelRejected {
                        order: *order,
                        account: *account,
                        reason: RejectReason::OrderNotOpen,
                    }),
                }
            }
            Command::CancelAll { account, pair } => {
                let pairs: Vec<usize> = match pair {
                    Some(p) if (p.0 as usize) < self.pairs.len() => vec![p.0 as usize],
                    Some(_) => vec![],
                    None => (0..self.pairs.len()).collect(),
                };
                for p in pairs {
                    loop {
                        // Lowest order id first.
                        let next = self.pairs[p]
                            .orders
                            .iter()
                            .enumerate()
                            .filter(|(_, o)| o.account == *account)
                            .min_by_key(|(_, o)| o.id)
                            .map(|(i, _)| i);
                        match next {
                            Some(i) => self.cancel_at(p, i, &mut out),
                            None => break,
                        }
                    }
                }
            }
            Command::DepositRequested(s) => self.request_new(s, Kind::Deposit, &mut out),
            Command::WithdrawalRequested(s) => self.request_new(s, Kind::Withdrawal, &mut out),
            Command::DepositCredited(s) => {
                if let Some(reason) = self.request_invalid(s) {
                    out.push(Event::RequestRefused {
                        request: s.request,
                        reason,
                    });
                } else if !self.supply_room(s.currency, s.amount) {
                    out.push(Event::RequestRefused {
                        request: s.request,
                        reason: RejectReason::AmountOverflow,
                    });
                } else {
                    self.used_requests.insert(s.request.0);
                    self.deposit(s.account, s.currency, s.amount, &mut out);
                    out.push(Event::RequestUpdated {
                        request: s.request,
                        account: s.account,
                        status: RequestStatus::Completed,
                    });
                }
            }
            Command::ApproveRequest { request } => self.decide(*request, true, &mut out),
            Command::RejectRequest { request, .. } => self.decide(*request, false, &mut out),
        }
        out
    }

    fn request_invalid(&self, s: &RequestSpec) -> Option<RejectReason> {
        // Used before, or older than the engine's window below the highest.
        let highest = self.used_requests.last().copied().unwrap_or(0);
        let used = s.request.0 == 0
            || self.used_requests.contains(&s.request.0)
            || s.request.0 + engine::request_ids::WINDOW <= highest;
        if s.currency.0 as usize >= self.decimals.len() {
            Some(RejectReason::UnknownCurrency)
        } else if s.amount == 0 {
            Some(RejectReason::InvalidAmount)
        } else if used {
            Some(RejectReason::DuplicateRequestId)
        } else if s.account == AccountId::FEES {
            Some(RejectReason::InvalidSpec)
        } else {
            None
        }
    }

    fn supply_room(&self, c: CurrencyId, amount: u64) -> bool {
        let c = c.0 as usize;
        self.deposited[c] - self.withdrawn[c] + u128::from(amount) <= SUPPLY_MAX
            && self.deposited[c] + u128::from(amount) <= u128::from(u64::MAX)
    }

    fn deposit(&mut self, a: AccountId, c: CurrencyId, amount: u64, out: &mut Vec<Event>) {
        self.bal.entry((a, c)).or_default().0 += amount;
        self.deposited[c.0 as usize] += u128::from(amount);
        self.push_balance(a, c, out);
    }

    fn request_new(&mut self, s: &RequestSpec, kind: Kind, out: &mut Vec<Event>) {
        if let Some(reason) = self.request_invalid(s) {
            out.push(Event::RequestRefused {
                request: s.request,
                reason,
            });
            return;
        }
        if kind == Kind::Withdrawal {
            if self.balance(s.account, s.currency).0 < s.amount {
                out.push(Event::RequestRefused {
                    request: s.request,
                    reason: RejectReason::InsufficientFunds,
                });
                return;
            }
            self.move_to_held(s.account, s.currency, s.amount);
            self.push_balance(s.account, s.currency, out);
        }
        self.used_requests.insert(s.request.0);
        self.requests
            .insert(s.request, (kind, s.account, s.currency, s.amount));
        out.push(Event::RequestUpdated {
            request: s.request,
            account: s.account,
            status: RequestStatus::Pending,
        });
    }

    fn decide(&mut self, request: RequestId, approve: bool, out: &mut Vec<Event>) {
        let Some(&(kind, a, c, amount)) = self.requests.get(&request) else {
            out.push(Event::RequestRefused {
                request,
                reason: RejectReason::RequestNotPending,
            });
            return;
        };
        match (kind, approve) {
            (Kind::Deposit, true) => {
                if !self.supply_room(c, amount) {
                    out.push(Event::RequestRefused {
                        request,
                        reason: RejectReason::AmountOverflow,
                    });
                    return;
                }
                self.deposit(a, c, amount, out);
            }
            (Kind::Deposit, false) => {}
            (Kind::Withdrawal, true) => {
                self.bal.get_mut(&(a, c)).expect("held").1 -= amount;
                self.withdrawn[c.0 as usize] += u128::from(amount);
                self.push_balance(a, c, out);
            }
            (Kind::Withdrawal, false) => {
                self.release(a, c, amount);
                self.push_balance(a, c, out);
            }
        }
        self.requests.remove(&request);
        out.push(Event::RequestUpdated {
            request,
            account: a,
            status: if approve {
                RequestStatus::Completed
            } else {
                RequestStatus::Rejected
            },
        });
    }

    // ----- ledger helpers -----------------------------------------------------------------

    fn move_to_held(&mut self, a: AccountId, c: CurrencyId, x: u64) {
        let b = self.bal.entry((a, c)).or_default();
        b.0 = b.0.checked_sub(x).expect("hold more than available");
        b.1 += x;
    }

    fn release(&mut self, a: AccountId, c: CurrencyId, x: u64) {
        let b = self.bal.entry((a, c)).or_default();
        b.1 = b.1.checked_sub(x).expect("release more than held");
        b.0 += x;
    }

    fn push_balance(&self, a: AccountId, c: CurrencyId, out: &mut Vec<Event>) {
        if a == AccountId::FEES {
            return;
        }
        let (available, held) = self.balance(a, c);
        out.push(Event::Balance {
            account: a,
            currency: c,
            available,
            held,
        });
    }

    fn level_total(&self, p: usize, side: Side, price: Price) -> u64 {
        self.pairs[p]
            .orders
            .iter()
            .filter(|o| o.side == side && o.price == price)
            .map(|o| o.remaining)
            .sum()
    }

    fn push_level(&mut self, p: usize, side: Side, price: Price, out: &mut Vec<Event>) {
        if !self.bumped[p] {
            self.bumped[p] = true;
            self.pairs[p].book_seq += 1;
        }
        out.push(Event::LevelChanged {
            pair: PairId(p as u16),
            side,
            price,
            amount: Amount(self.level_total(p, side, price)),
            book_seq: self.pairs[p].book_seq,
        });
    }

    fn held_currency(&self, p: usize, side: Side) -> CurrencyId {
        match side {
            Side::Buy => self.pairs[p].spec.quote,
            Side::Sell => self.pairs[p].spec.base,
        }
    }

    /// Removes order `i` of pair `p`, releasing its hold: Balance, Done.
    fn remove_order(&mut self, p: usize, i: usize, reason: DoneReason, out: &mut Vec<Event>) {
        let o = self.pairs[p].orders.remove(i);
        let c = self.held_currency(p, o.side);
        self.release(o.account, c, o.held);
        self.push_balance(o.account, c, out);
        out.push(Event::Done {
            order: o.id,
            account: o.account,
            pair: PairId(p as u16),
            reason,
        });
    }

    fn cancel_at(&mut self, p: usize, i: usize, out: &mut Vec<Event>) {
        let (side, price) = (self.pairs[p].orders[i].side, self.pairs[p].orders[i].price);
        self.remove_order(p, i, DoneReason::Cancelled, out);
        self.push_level(p, side, price, out);
    }

    /// Index of the best order on `side` of pair `p`.
    fn best(&self, p: usize, side: Side) -> Option<usize> {
        self.pairs[p]
            .orders
            .iter()
            .enumerate()
            .filter(|(_, o)| o.side == side)
            .min_by_key(|(_, o)| (Self::priority_key(o), o.seq))
            .map(|(i, _)| i)
    }

    // ----- orders -------------------------------------------------------------------------

    fn place(&mut self, o: &PlaceOrder, out: &mut Vec<Event>) {
        let reject = |out: &mut Vec<Event>, reason| {
            out.push(Event::Rejected {
                order: o.id,
                account: o.account,
                reason,
            })
        };
        let p = o.pair.0 as usize;
        let Some(pair) = self.pairs.get(p) else {
            return reject(out, RejectReason::UnknownPair);
        };
        if pair.spec.status == PairStatus::Halted {
            return reject(out, RejectReason::PairHalted);
        }
        let min = pair.spec.min_amount.0;
        let (vpq, m) = (pair.vpq, pair.m);
        let size_reason = match o.kind {
            OrderKind::Limit { price, .. } if price.0 == 0 || price.0 > MAX_PRICE_TICKS => {
                Some(RejectReason::InvalidPrice)
            }
            OrderKind::Limit { amount, .. }
            | OrderKind::Market {
                size: MarketSize::Base(amount),
            } => {
                if amount.0 == 0 || amount.0 > MAX_ORDER_LOTS {
                    Some(RejectReason::InvalidAmount)
                } else if amount.0 < min {
                    Some(RejectReason::AmountTooSmall)
                } else {
                    None
                }
            }
            OrderKind::Market {
                size: MarketSize::Quote(q),
            } => (q == 0).then_some(RejectReason::InvalidAmount),
        };
        if let Some(r) = size_reason {
            return reject(out, r);
        }
        // Used before, or older than the engine's window of ids below the highest.
        let highest = self.used_ids.last().copied().unwrap_or(0);
        let window = engine::id_window::WINDOW;
        if o.id.0 == 0 || self.used_ids.contains(&o.id.0) || o.id.0 + window <= highest {
            return reject(out, RejectReason::DuplicateOrderId);
        }
        let hc = self.held_currency(p, o.side);
        let available = self.balance(o.account, hc).0;
        let hold: u128 = match (o.side, o.kind) {
            (Side::Buy, OrderKind::Limit { price, amount, .. }) => {
                ceil_div(u128::from(price.0) * u128::from(amount.0), vpq)
            }
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
            (Side::Sell, OrderKind::Limit { amount, .. })
            | (
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
            ) => u128::from(available - available % m),
        };
        if hold == 0 || hold > u128::from(available) {
            return reject(out, RejectReason::InsufficientFunds);
        }
        let hold = hold as u64;
        if let OrderKind::Limit {
            price,
            post_only: true,
            ..
        } = o.kind
        {
            let crosses = self.best(p, o.side.opposite()).is_some_and(|i| {
                let best = self.pairs[p].orders[i].price;
                match o.side {
                    Side::Buy => best <= price,
                    Side::Sell => best >= price,
                }
            });
            if crosses {
                return reject(out, RejectReason::PostOnlyWouldTake);
            }
        }
        // A full book refuses every GTC order under rules version 1. From version 2 only when
        // taking it would leave the book with more resting orders than before. Decided
        // naively: play the order on a copy of the whole model with the bound lifted and
        // count (the engine decides it from the best price).
        let len = self.pairs[p].orders.len();
        if let OrderKind::Limit {
            tif: TimeInForce::Gtc,
            ..
        } = o.kind
            && len >= self.max_orders_per_book
        {
            if self.rules_version < 2 {
                return reject(out, RejectReason::BookFull);
            }
            let mut trial = self.clone();
            trial.max_orders_per_book = usize::MAX;
            trial.place(o, &mut Vec::new());
            if trial.pairs[p].orders.len() > len {
                return reject(out, RejectReason::BookFull);
            }
        }

        self.move_to_held(o.account, hc, hold);
        self.used_ids.insert(o.id.0);
        out.push(Event::Accepted {
            order: o.id,
            account: o.account,
            pair: o.pair,
            side: o.side,
            held: hold,
        });
        self.push_balance(o.account, hc, out);

        let mut t = Taker {
            o: o.clone(),
            limit: None,
            remaining: None,
            held: hold,
            budget: None,
            traded: false,
        };
        match o.kind {
            OrderKind::Limit { price, amount, .. } => {
                t.limit = Some(price);
                t.remaining = Some(amount.0);
            }
            OrderKind::Market {
                size: MarketSize::Base(a),
            } => t.remaining = Some(a.0),
            OrderKind::Market {
                size: MarketSize::Quote(q),
            } => {
                if o.side == Side::Sell {
                    t.budget = Some(self.budget_value(q, vpq));
                }
            }
        }
        let fok = matches!(
            o.kind,
            OrderKind::Limit {
                tif: TimeInForce::Fok,
                ..
            }
        );
        if fok && !self.fok_fillable(p, &t) {
            self.release(o.account, hc, t.held);
            self.push_balance(o.account, hc, out);
            out.push(Event::Done {
                order: o.id,
                account: o.account,
                pair: o.pair,
                reason: DoneReason::FillOrKill,
            });
            return;
        }

        let stopped = self.match_taker(p, &mut t, out);
        let filled = match o.kind {
            OrderKind::Market {
                size: MarketSize::Quote(_),
            } => {
                // From version 5 a budget spent to the last unit is filled.
                let spent = match o.side {
                    Side::Buy => t.held == 0,
                    Side::Sell => t.budget == Some(0),
                };
                t.traded
                    && (stopped == Some(DoneReason::Filled) || (spent && self.rules_version >= 5))
            }
            _ => t.remaining == Some(0),
        };
        assert!(!fok || filled, "model: a FOK that passed its walk fills");
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
                    self.seq += 1;
                    let remaining = t.remaining.expect("limit sized in base");
                    self.pairs[p].orders.push(MOrder {
                        id: o.id,
                        account: o.account,
                        side: o.side,
                        price,
                        remaining,
                        held: t.held,
                        seq: self.seq,
                    });
                    out.push(Event::Rested {
                        order: o.id,
                        remaining: Amount(remaining),
                    });
                    self.push_level(p, o.side, price, out);
                    return;
                }
                OrderKind::Limit { .. } => DoneReason::ImmediateOrCancel,
                OrderKind::Market { .. } => DoneReason::NoLiquidity,
            }
        };
        if t.held > 0 {
            self.release(o.account, hc, t.held);
            self.push_balance(o.account, hc, out);
        }
        out.push(Event::Done {
            order: o.id,
            account: o.account,
            pair: o.pair,
            reason,
        });
    }

    fn crosses(side: Side, limit: Option<Price>, maker_price: Price) -> bool {
        match (limit, side) {
            (None, _) => true,
            (Some(l), Side::Buy) => maker_price <= l,
            (Some(l), Side::Sell) => maker_price >= l,
        }
    }

    /// The quote a buy order limited at `limit` must keep for `lots`.
    fn keep(vpq: u128, limit: Price, lots: u64) -> u128 {
        ceil_div(u128::from(limit.0) * u128::from(lots), vpq)
    }

    /// What a buying order pays for a fill that rounds up to `paid` and down to `received`
    /// when it needs `need` and has `have`: all of `paid` when it can; from version 3 on, a
    /// shortfall of at most the rounding remainder is waived; else it cannot pay.
    fn payable(&self, paid: u128, received: u128, need: u128, have: u128) -> Option<u128> {
        if need <= have {
            Some(paid)
        } else if self.rules_version >= 3 && need - have <= paid - received {
            Some(paid - (need - have))
        } else {
            None
        }
    }

    /// A budget of `minor` quote minor units in value units: from version 4 on saturating,
    /// before wrapping.
    fn budget_value(&self, minor: u64, vpq: u128) -> u128 {
        if self.rules_version >= 4 {
            u128::from(minor).saturating_mul(vpq)
        } else {
            u128::from(minor).wrapping_mul(vpq)
        }
    }

    /// The FOK dry walk: would the order fill completely? A maker that would need a
    /// rounding top-up from its available funds fails the walk (the documented conservative
    /// rule; from version 3 on its hold always suffices).
    fn fok_fillable(&self, p: usize, t: &Taker) -> bool {
        let vpq = self.pairs[p].vpq;
        let limit = t.limit.expect("FOK is a limit");
        let mut remaining = t.remaining.expect("sized in base");
        let funds =
            u128::from(t.held) + u128::from(self.balance(t.o.account, self.pairs[p].spec.quote).0);
        let mut paid_sum = 0u128;
        let book: Vec<MOrder> = self
            .book(PairId(p as u16))
            .into_iter()
            .filter(|x| x.side == t.o.side.opposite())
            .collect();
        for mk in book {
            if remaining == 0 || !Self::crosses(t.o.side, Some(limit), mk.price) {
                break;
            }
            if mk.account == t.o.account {
                match t.o.stp {
                    SelfTradePrevention::ExpireTaker | SelfTradePrevention::ExpireBoth => {
                        return false;
                    }
                    SelfTradePrevention::ExpireMaker => continue,
                    SelfTradePrevention::None => {}
                }
            }
            let lots = remaining.min(mk.remaining);
            let value = u128::from(mk.price.0) * u128::from(lots);
            let (paid, received) = (ceil_div(value, vpq), value / vpq);
            match t.o.side {
                Side::Buy => {
                    let need = paid_sum + paid + Self::keep(vpq, limit, remaining - lots);
                    match self.payable(paid, received, need, funds) {
                        Some(pays) => paid_sum += pays,
                        None => return false,
                    }
                }
                Side::Sell => {
                    let need = paid + Self::keep(vpq, mk.price, mk.remaining - lots);
                    if self
                        .payable(paid, received, need, u128::from(mk.held))
                        .is_none()
                    {
                        return false;
                    }
                }
            }
            remaining -= lots;
        }
        remaining == 0
    }

    fn match_taker(&mut self, p: usize, t: &mut Taker, out: &mut Vec<Event>) -> Option<DoneReason> {
        let side = t.o.side;
        let opp = side.opposite();
        let (vpq, m) = (self.pairs[p].vpq, self.pairs[p].m);
        let mut level: Option<Price> = None;
        let stop = loop {
            if t.remaining == Some(0) {
                break None;
            }
            let Some(i) = self.best(p, opp) else {
                break None;
            };
            let mk = self.pairs[p].orders[i].clone();
            if !Self::crosses(side, t.limit, mk.price) {
                break None;
            }
            // Report a level when the taker moves on from it, only once it changed it.
            let mut touch = |model: &mut Model, out: &mut Vec<Event>| {
                if let Some(prev) = level
                    && prev != mk.price
                {
                    model.push_level(p, opp, prev, out);
                }
                level = Some(mk.price);
            };
            if mk.account == t.o.account && t.o.stp != SelfTradePrevention::None {
                if t.o.stp == SelfTradePrevention::ExpireTaker {
                    break Some(DoneReason::SelfTradePrevention);
                }
                touch(self, out);
                self.remove_order(p, i, DoneReason::SelfTradePrevention, out);
                if t.o.stp == SelfTradePrevention::ExpireBoth {
                    break Some(DoneReason::SelfTradePrevention);
                }
                continue;
            }
            let price = mk.price;
            let mut lots = t.remaining.unwrap_or(u64::MAX).min(mk.remaining);
            if side == Side::Buy && t.limit.is_none() {
                let affordable = self.budget_value(t.held, vpq) / u128::from(price.0);
                lots = lots.min(u64::try_from(affordable).unwrap_or(u64::MAX));
            }
            if side == Side::Sell {
                if let Some(b) = t.budget {
                    lots = lots.min(u64::try_from(b / u128::from(price.0)).unwrap_or(u64::MAX));
                }
                lots = lots.min(t.held / m);
            }
            if lots == 0 {
                break Some(match (side, t.budget, t.remaining) {
                    (Side::Sell, Some(b), _) if b >= u128::from(price.0) => {
                        DoneReason::InsufficientFunds
                    }
                    (Side::Sell, Some(_), _) => DoneReason::Filled,
                    (Side::Buy, _, None) => DoneReason::Filled,
                    _ => DoneReason::InsufficientFunds,
                });
            }
            let value = u128::from(price.0) * u128::from(lots);
            let (mut paid, received) = (ceil_div(value, vpq), value / vpq);
            let quote = self.pairs[p].spec.quote;
            match side {
                Side::Buy => {
                    if let Some(limit) = t.limit {
                        let rem = t.remaining.expect("limit") - lots;
                        let have =
                            u128::from(t.held) + u128::from(self.balance(t.o.account, quote).0);
                        let need = paid + Self::keep(vpq, limit, rem);
                        match self.payable(paid, received, need, have) {
                            Some(pays) => paid = pays,
                            None => break Some(DoneReason::InsufficientFunds),
                        }
                    }
                }
                Side::Sell => {
                    let have = u128::from(mk.held) + u128::from(self.balance(mk.account, quote).0);
                    let need = paid + Self::keep(vpq, price, mk.remaining - lots);
                    match self.payable(paid, received, need, have) {
                        Some(pays) => paid = pays,
                        None => {
                            touch(self, out);
                            self.remove_order(p, i, DoneReason::InsufficientFunds, out);
                            continue;
                        }
                    }
                }
            }
            touch(self, out);
            self.trade(p, i, t, lots, paid as u64, out);
        };
        if let Some(prev) = level {
            self.push_level(p, opp, prev, out);
        }
        stop
    }

    /// Settles one trade between the taker and resting order `i`, the buyer paying `paid`.
    fn trade(
        &mut self,
        p: usize,
        i: usize,
        t: &mut Taker,
        lots: u64,
        paid: u64,
        out: &mut Vec<Event>,
    ) {
        let pair = &self.pairs[p];
        let (vpq, m, base, quote) = (pair.vpq, pair.m, pair.spec.base, pair.spec.quote);
        let (maker_ppm, taker_ppm) = (pair.spec.maker_fee_ppm, pair.spec.taker_fee_ppm);
        let mk = pair.orders[i].clone();
        let value = u128::from(mk.price.0) * u128::from(lots);
        let received = (value / vpq) as u64;
        assert!(
            paid >= received,
            "model: the buyer pays at least what the seller receives"
        );
        let base_amount = lots * m;
        let (buyer, seller, buyer_ppm, seller_ppm) = match t.o.side {
            Side::Buy => (t.o.account, mk.account, taker_ppm, maker_ppm),
            Side::Sell => (mk.account, t.o.account, maker_ppm, taker_ppm),
        };
        let buyer_fee = fee(base_amount, buyer_ppm);
        let seller_fee = fee(received, seller_ppm);

        // The buying order's hold after the fill: what its limit needs for what is left
        // (a market buy just spends from its hold).
        let (old_buy_hold, new_buy_hold) = match t.o.side {
            Side::Buy => (
                t.held,
                match t.limit {
                    Some(l) => Self::keep(vpq, l, t.remaining.expect("limit") - lots) as u64,
                    None => t.held - paid,
                },
            ),
            Side::Sell => (
                mk.held,
                Self::keep(vpq, mk.price, mk.remaining - lots) as u64,
            ),
        };
        // Buyer quote: total falls by `paid`, held moves to the order's new hold.
        {
            let b = self.bal.entry((buyer, quote)).or_default();
            let total = u128::from(b.0) + u128::from(b.1) - u128::from(paid);
            b.1 = b.1 - old_buy_hold + new_buy_hold;
            b.0 = (total - u128::from(b.1)) as u64;
        }
        self.bal.entry((buyer, base)).or_default().0 += base_amount - buyer_fee;
        self.bal.entry((seller, base)).or_default().1 -= base_amount;
        self.bal.entry((seller, quote)).or_default().0 += received - seller_fee;
        self.bal.entry((AccountId::FEES, base)).or_default().0 += buyer_fee;
        self.bal.entry((AccountId::FEES, quote)).or_default().0 += seller_fee + (paid - received);

        out.push(Event::Trade(Trade {
            id: TradeId(self.next_trade),
            pair: PairId(p as u16),
            price: mk.price,
            amount: Amount(lots),
            taker_side: t.o.side,
            maker_order: mk.id,
            taker_order: t.o.id,
            maker_account: mk.account,
            taker_account: t.o.account,
            buyer_paid: paid,
            seller_received: received,
            base_received: base_amount,
            buyer_fee,
            seller_fee,
        }));
        self.next_trade += 1;

        t.traded = true;
        if let Some(r) = t.remaining.as_mut() {
            *r -= lots;
        }
        if let Some(b) = t.budget.as_mut() {
            *b -= value;
        }
        match t.o.side {
            Side::Buy => t.held = new_buy_hold,
            Side::Sell => t.held -= base_amount,
        }
        let maker_hold_after = match mk.side {
            Side::Buy => new_buy_hold,
            Side::Sell => mk.held - base_amount,
        };
        if lots == mk.remaining {
            self.pairs[p].orders.remove(i);
            let c = self.held_currency(p, mk.side);
            self.release(mk.account, c, maker_hold_after);
            out.push(Event::Done {
                order: mk.id,
                account: mk.account,
                pair: PairId(p as u16),
                reason: DoneReason::Filled,
            });
        } else {
            let o = &mut self.pairs[p].orders[i];
            o.remaining -= lots;
            o.held = maker_hold_after;
        }
        self.push_balance(buyer, quote, out);
        self.push_balance(buyer, base, out);
        self.push_balance(seller, base, out);
        self.push_balance(seller, quote, out);
    }
}
