//! One pair's order book: resting orders in price-time priority.
//!
//! # Layout
//! - Orders live in one arena (`Vec` plus free list), addressed by `u32` slots. Each order
//!   is linked into its level's FIFO list (`prev`/`next`) and into its account's list
//!   (`acct_prev`/`acct_next`), so cancel, and cancel-all per account, touch only the orders
//!   concerned: O(1) per order, never a scan of the book.
//! - Levels live in a second arena; each side maps price to level slot with a
//!   [`PriceIndex`] (O(1) bounded insert/remove/min/max) and caches its best price.
//! - Once warm, nothing here allocates: freed slots are reused.
//!
//! # Invariants ([`Book::check_invariants`])
//! Not crossed; no empty level; each level's total is the sum of its orders' remaining;
//! FIFO links are consistent in both directions; every order is on the level of its price
//! and side; account lists hold exactly the account's orders.
//!
//! Level totals are `u64` sums of lots: the engine admits at most `MAX_ORDER_LOTS` (2^40)
//! per order and `MAX_ORDERS_PER_BOOK` (< 2^24) per book, so no total can overflow; the
//! addition is still checked.
//!
//! The book knows nothing of money: holds are stored on the order for the engine's ledger.

use rustc_hash::FxHashMap;

use crate::ids::{AccountId, OrderId};
use crate::price::{Amount, Price};
use crate::price_index::PriceIndex;
use crate::side::Side;

/// "No slot" in the intrusive lists.
pub const NIL: u32 = u32::MAX;

/// A resting order.
#[derive(Clone, Copy, Debug)]
pub struct RestingOrder {
    pub id: OrderId,
    pub account: AccountId,
    pub side: Side,
    pub price: Price,
    /// Lots still open.
    pub remaining: u64,
    /// Funds this order still holds (quote minor for a buy, base minor for a sell).
    pub held: u64,
    /// The slot of its level in its side's ladder: fills and cancels skip the price index.
    level: u32,
    prev: u32,
    next: u32,
    acct_prev: u32,
    acct_next: u32,
}

/// A price level: a FIFO list of orders at one price.
#[derive(Clone, Copy, Debug)]
pub struct Level {
    pub price: Price,
    /// Sum of the orders' remaining lots.
    pub total: u64,
    pub count: u32,
    head: u32,
    tail: u32,
}

#[derive(Debug, Default, Clone)]
struct Ladder {
    index: PriceIndex,
    levels: Vec<Level>,
    free_levels: Vec<u32>,
    best: Option<(Price, u32)>,
}

/// One side's view for iteration: levels from best outwards.
#[derive(Debug, Clone, Copy)]
pub struct LevelView {
    pub price: Price,
    pub total: Amount,
    pub orders: u32,
}

/// One pair's book.
#[derive(Debug, Clone, Default)]
pub struct Book {
    orders: Vec<RestingOrder>,
    free_orders: Vec<u32>,
    sides: [Ladder; 2],
    accounts: FxHashMap<AccountId, u32>,
    len: usize,
}

impl Book {
    /// A book with room for `orders` resting orders before its arena grows.
    pub fn with_capacity(orders: usize) -> Self {
        let mut book = Book::default();
        book.orders.reserve(orders);
        book.free_orders.reserve(orders);
        book
    }

    /// Number of resting orders.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Best price and its level total on `side`.
    #[inline]
    pub fn best(&self, side: Side) -> Option<(Price, Amount)> {
        let ladder = &self.sides[side.index()];
        ladder
            .best
            .map(|(p, l)| (p, Amount(ladder.levels[l as usize].total)))
    }

    /// The slot of the first order at the best price of `side`.
    #[inline]
    pub fn best_head(&self, side: Side) -> Option<u32> {
        let ladder = &self.sides[side.index()];
        ladder.best.map(|(_, l)| ladder.levels[l as usize].head)
    }

    #[inline]
    pub fn order(&self, slot: u32) -> &RestingOrder {
        &self.orders[slot as usize]
    }

    #[inline]
    pub fn order_mut(&mut self, slot: u32) -> &mut RestingOrder {
        &mut self.orders[slot as usize]
    }

    /// The order after `slot` in its level's FIFO, if any.
    pub fn next_in_level(&self, slot: u32) -> Option<u32> {
        let n = self.orders[slot as usize].next;
        (n != NIL).then_some(n)
    }

    /// The total of the level at `price` on `side` (0 if absent).
    pub fn level_total(&self, side: Side, price: Price) -> u64 {
        let ladder = &self.sides[side.index()];
        ladder
            .index
            .get(price.0)
            .map_or(0, |l| ladder.levels[l as usize].total)
    }

    /// The first order of the level at `price` on `side`.
    pub fn level_head(&self, side: Side, price: Price) -> Option<u32> {
        let ladder = &self.sides[side.index()];
        ladder
            .index
            .get(price.0)
            .map(|l| ladder.levels[l as usize].head)
    }

    /// The next level's price further from the best (lower for bids, higher for asks).
    pub fn next_level_price(&self, side: Side, price: Price) -> Option<Price> {
        let index = &self.sides[side.index()].index;
        let next = match side {
            Side::Buy => index.next_below(price.0),
            Side::Sell => index.next_above(price.0),
        };
        next.map(|(p, _)| Price(p))
    }

    /// Calls `f` for each level of `side`, best first, until it returns false.
    pub fn for_each_level(&self, side: Side, mut f: impl FnMut(LevelView) -> bool) {
        let ladder = &self.sides[side.index()];
        let mut cursor = ladder.best;
        while let Some((price, slot)) = cursor {
            let level = &ladder.levels[slot as usize];
            if !f(LevelView {
                price,
                total: Amount(level.total),
                orders: level.count,
            }) {
                return;
            }
            let next = match side {
                Side::Buy => ladder.index.next_below(price.0),
                Side::Sell => ladder.index.next_above(price.0),
            };
            cursor = next.map(|(p, s)| (Price(p), s));
        }
    }

    /// Calls `f` with each order of the level at `price`, FIFO order.
    pub fn for_each_order_at(&self, side: Side, price: Price, mut f: impl FnMut(&RestingOrder)) {
        let mut slot = self.level_head(side, price).unwrap_or(NIL);
        while slot != NIL {
            let order = &self.orders[slot as usize];
            f(order);
            slot = order.next;
        }
    }

    /// The slots of `account`'s resting orders (walks the account list).
    pub fn account_head(&self, account: AccountId) -> Option<u32> {
        self.accounts.get(&account).copied()
    }

    /// The next order of the same account after `slot`.
    pub fn next_of_account(&self, slot: u32) -> Option<u32> {
        let n = self.orders[slot as usize].acct_next;
        (n != NIL).then_some(n)
    }

    /// Appends a new order at the back of its level. Returns its slot and the level's new total.
    #[inline(always)]
    pub fn insert(
        &mut self,
        id: OrderId,
        account: AccountId,
        side: Side,
        price: Price,
        remaining: u64,
        held: u64,
    ) -> (u32, u64) {
        assert!(remaining > 0, "a resting order has a positive amount");
        // The level first (the order records its slot).
        let ladder = &mut self.sides[side.index()];
        let level_slot = match ladder.index.get(price.0) {
            Some(l) => l,
            None => {
                let level = Level {
                    price,
                    total: 0,
                    count: 0,
                    head: NIL,
                    tail: NIL,
                };
                let l = match ladder.free_levels.pop() {
                    Some(l) => {
                        ladder.levels[l as usize] = level;
                        l
                    }
                    None => {
                        ladder.levels.push(level);
                        if ladder.free_levels.capacity() < ladder.levels.len() {
                            ladder
                                .free_levels
                                .reserve(ladder.levels.capacity() - ladder.free_levels.len());
                        }
                        (ladder.levels.len() - 1) as u32
                    }
                };
                ladder.index.insert(price.0, l);
                let better = match (ladder.best, side) {
                    (None, _) => true,
                    (Some((b, _)), Side::Buy) => price > b,
                    (Some((b, _)), Side::Sell) => price < b,
                };
                if better {
                    ladder.best = Some((price, l));
                }
                l
            }
        };
        // The slot, and the account list (newest first: one hash operation), before the
        // order is written, so it is written once, complete.
        let slot = match self.free_orders.pop() {
            Some(s) => s,
            None => self.orders.len() as u32,
        };
        let head = self.accounts.entry(account).or_insert(NIL);
        let acct_next = std::mem::replace(head, slot);
        let level = &mut ladder.levels[level_slot as usize];
        let tail = level.tail;
        level.tail = slot;
        if tail == NIL {
            level.head = slot;
        }
        // Bounded by construction (`MAX_ORDER_LOTS` per order, `MAX_ORDERS_PER_BOOK` orders),
        // asserted because a wrapped total would publish a wrong book.
        level.total = level
            .total
            .checked_add(remaining)
            .expect("level total bounded by MAX_ORDER_LOTS x MAX_ORDERS_PER_BOOK");
        level.count += 1;
        let total = level.total;
        let order = RestingOrder {
            id,
            account,
            side,
            price,
            remaining,
            held,
            level: level_slot,
            prev: tail,
            next: NIL,
            acct_prev: NIL,
            acct_next,
        };
        if slot as usize == self.orders.len() {
            self.orders.push(order);
            if self.free_orders.capacity() < self.orders.len() {
                self.free_orders
                    .reserve(self.orders.capacity() - self.free_orders.len());
            }
        } else {
            self.orders[slot as usize] = order;
        }
        if tail != NIL {
            self.orders[tail as usize].next = slot;
        }
        if acct_next != NIL {
            self.orders[acct_next as usize].acct_prev = slot;
        }
        self.len += 1;
        (slot, total)
    }

    /// Reduces a resting order by `lots` (a fill). Returns the level's new total.
    /// The order must stay positive: a complete fill goes through [`Book::remove`].
    #[inline]
    pub fn reduce(&mut self, slot: u32, lots: u64) -> u64 {
        let order = &mut self.orders[slot as usize];
        assert!(lots < order.remaining, "reduce must leave the order open");
        order.remaining -= lots;
        let (side, l) = (order.side, order.level);
        let level = &mut self.sides[side.index()].levels[l as usize];
        level.total -= lots;
        level.total
    }

    /// Takes an order off the book. Returns its level's new total (0 when the level
    /// disappeared). Callers read what they need of the order first ([`Book::order`]):
    /// returning the whole order copied 64 bytes per cancel and fill for nothing.
    #[inline(always)]
    pub fn remove(&mut self, slot: u32) -> u64 {
        let order = self.orders[slot as usize];
        // Level FIFO.
        if order.prev != NIL {
            self.orders[order.prev as usize].next = order.next;
        }
        if order.next != NIL {
            self.orders[order.next as usize].prev = order.prev;
        }
        // Account list.
        if order.acct_prev != NIL {
            self.orders[order.acct_prev as usize].acct_next = order.acct_next;
        } else if order.acct_next != NIL {
            self.accounts.insert(order.account, order.acct_next);
        } else {
            self.accounts.remove(&order.account);
        }
        if order.acct_next != NIL {
            self.orders[order.acct_next as usize].acct_prev = order.acct_prev;
        }
        self.free_orders.push(slot);
        self.len -= 1;

        let ladder = &mut self.sides[order.side.index()];
        let l = order.level;
        let level = &mut ladder.levels[l as usize];
        if level.head == slot {
            level.head = order.next;
        }
        if level.tail == slot {
            level.tail = order.prev;
        }
        level.total -= order.remaining;
        level.count -= 1;
        let total = level.total;
        if level.count == 0 {
            debug_assert_eq!(level.total, 0);
            ladder.index.remove(order.price.0);
            ladder.free_levels.push(l);
            if ladder.best.map(|(p, _)| p) == Some(order.price) {
                let lowest = order.side == Side::Sell;
                let next = ladder.index.extreme_after_removing(order.price.0, lowest);
                ladder.best = next.map(|(p, s)| (Price(p), s));
            }
        }
        total
    }

    /// Checks every structural invariant; returns a description of the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        if let (Some((bid, _)), Some((ask, _))) = (self.best(Side::Buy), self.best(Side::Sell))
            && bid >= ask
        {
            return Err(format!("crossed book: bid {bid} >= ask {ask}"));
        }
        let mut seen = 0usize;
        for side in [Side::Buy, Side::Sell] {
            let ladder = &self.sides[side.index()];
            let expected_best = match side {
                Side::Buy => ladder.index.max(),
                Side::Sell => ladder.index.min(),
            };
            if expected_best.map(|(p, s)| (Price(p), s)) != ladder.best {
                return Err(format!(
                    "{side:?} best cache {:?} != index {:?}",
                    ladder.best, expected_best
                ));
            }
            let mut levels = 0usize;
            let mut failure = None;
            self.for_each_level(side, |view| {
                levels += 1;
                let l = ladder
                    .index
                    .get(view.price.0)
                    .expect("listed level is indexed");
                let level = &ladder.levels[l as usize];
                if level.count == 0 || level.total == 0 {
                    failure = Some(format!("empty level at {}", view.price));
                    return false;
                }
                let (mut sum, mut count, mut prev, mut slot) = (0u64, 0u32, NIL, level.head);
                while slot != NIL {
                    let o = &self.orders[slot as usize];
                    if o.prev != prev
                        || o.price != view.price
                        || o.side != side
                        || o.remaining == 0
                        || o.level != l
                    {
                        failure = Some(format!("bad order {} at level {}", o.id, view.price));
                        return false;
                    }
                    if !self.accounts.contains_key(&o.account) {
                        failure = Some(format!("order {} missing from its account list", o.id));
                        return false;
                    }
                    sum += o.remaining;
                    count += 1;
                    prev = slot;
                    slot = o.next;
                }
                if prev != level.tail || sum != level.total || count != level.count {
                    failure = Some(format!("level {} totals or tail inconsistent", view.price));
                    return false;
                }
                seen += count as usize;
                true
            });
            if let Some(f) = failure {
                return Err(f);
            }
            if levels != ladder.index.len() {
                return Err(format!(
                    "{side:?}: {levels} levels reachable, {} indexed",
                    ladder.index.len()
                ));
            }
        }
        if seen != self.len {
            return Err(format!("{seen} orders on levels, {} counted", self.len));
        }
        let mut in_accounts = 0usize;
        for (account, head) in &self.accounts {
            let (mut prev, mut slot) = (NIL, *head);
            while slot != NIL {
                let o = &self.orders[slot as usize];
                if o.account != *account || o.acct_prev != prev {
                    return Err(format!(
                        "account list of {account} broken at order {}",
                        o.id
                    ));
                }
                in_accounts += 1;
                prev = slot;
                slot = o.acct_next;
            }
        }
        if in_accounts != self.len {
            return Err(format!(
                "{in_accounts} orders in account lists, {} resting",
                self.len
            ));
        }
        Ok(())
    }
}
