//! Order ids: which have been used (the `DuplicateOrderId` check) and where each resting
//! order is (its pair and book slot), in one direct-mapped ring.
//!
//! # Why a window
//! Order ids are assigned upstream (one counter in the API, before sequencing), so they are
//! unique by construction but reach the engine only *nearly* in order: two requests that
//! took ids 7 and 8 may be sequenced 8 then 7. A demanding exchange still refuses to reuse
//! an id, resting or final, because every read model (orders, fills, replies) is keyed by
//! it. Remembering every id ever used costs memory without bound; checking only resting ids
//! (what the engine did before) lets a filled or cancelled order's id come back.
//!
//! # The rule
//! With `hi` the highest id ever accepted, an order id `id` is a duplicate when
//! - `id <= hi - WINDOW` (too old to tell: refused, whatever it was), or
//! - `id` is in `(hi - WINDOW, hi]` and was accepted before.
//!
//! `WINDOW` (2^22) is far more than the ids that can be in flight between assignment and
//! sequencing (bounded by the API's connection and queue limits), so no genuine order is
//! ever refused as too old. Only accepted orders use an id; a rejected one leaves no trace
//! (like every reject), the same rule as request ids.
//!
//! # Layout and cost
//! One `u64` per id of the window at `id % WINDOW` (32 MiB, touched only where ids are, so
//! mostly never paged in by a young engine): 0 unused, 1 used and final, or
//! the resting order's pair and slot. Ids arrive nearly in order, so a new order's entry is
//! next to the previous one's (cached), and a cancel costs one cache line where a hash table
//! costs two (control bytes and bucket) plus probing. A resting order whose id leaves the
//! window (4 million newer orders arrived while it rested) moves to a hash map, `old`, which
//! stays small; the window is that wide so that moving out is rare even under a deep book
//! (a book of a million orders followed by a million new ones moves none: moving one costs a
//! hash insert, about what the ring saves per order). `bourse bench engine`: this replaced a `HashMap<OrderId, OrderLoc>` probe
//! per place, insert per rest, remove per fill and lookup per cancel.
//!
//! The used ids are engine state: the snapshot stores them as runs (`used_runs`), so a
//! recovered engine decides exactly like the live one.

use crate::id_hash::SequentialIdMap;
use crate::ids::{OrderId, PairId};

/// Ids remembered below the highest accepted id.
pub const WINDOW: u64 = 1 << 22;

const UNUSED: u64 = 0;
const FINAL: u64 = 1;

/// Where a resting order is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderLoc {
    pub pair: PairId,
    pub slot: u32,
}

impl OrderLoc {
    #[inline]
    fn encode(self) -> u64 {
        ((u64::from(self.pair.0) + 1) << 32) | u64::from(self.slot)
    }

    #[inline]
    fn decode(entry: u64) -> Option<OrderLoc> {
        (entry > FINAL).then(|| OrderLoc {
            pair: PairId(((entry >> 32) - 1) as u16),
            slot: entry as u32,
        })
    }
}

/// See the module doc.
#[derive(PartialEq, Eq)]
pub struct IdWindow {
    /// Highest accepted id (0: none yet; ids start at 1).
    hi: u64,
    /// `entries[id % WINDOW]` for ids in `(hi - WINDOW, hi]`. A fixed-size array, so that
    /// indexing with `id % WINDOW` needs no bounds check.
    entries: Box<[u64; WINDOW as usize]>,
    /// Resting orders whose id is below the window.
    old: SequentialIdMap<OrderId, OrderLoc>,
    /// Resting orders (window and `old`).
    resting: usize,
}

impl std::fmt::Debug for IdWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdWindow")
            .field("hi", &self.hi)
            .field("resting", &self.resting)
            .field("old", &self.old.len())
            .finish()
    }
}

/// A zeroed ring, built on the heap (32 MiB never passes through the stack).
fn unused_entries() -> Box<[u64; WINDOW as usize]> {
    vec![UNUSED; WINDOW as usize]
        .into_boxed_slice()
        .try_into()
        .expect("a vec of WINDOW entries")
}

impl Default for IdWindow {
    fn default() -> Self {
        IdWindow {
            hi: 0,
            entries: unused_entries(),
            old: SequentialIdMap::default(),
            resting: 0,
        }
    }
}

impl Clone for IdWindow {
    /// By hand: the ring is copied heap to heap, never through the stack.
    fn clone(&self) -> Self {
        let mut entries = unused_entries();
        entries.copy_from_slice(&self.entries[..]);
        IdWindow {
            hi: self.hi,
            entries,
            old: self.old.clone(),
            resting: self.resting,
        }
    }
}

#[inline]
fn position(id: u64) -> usize {
    (id % WINDOW) as usize
}

impl IdWindow {
    /// Highest accepted id.
    pub fn hi(&self) -> u64 {
        self.hi
    }

    /// Number of resting orders.
    pub fn resting(&self) -> usize {
        self.resting
    }

    /// Room for `n` resting orders below the window before `old` grows.
    pub fn reserve_old(&mut self, n: usize) {
        self.old.reserve(n);
    }

    /// `id` in `(hi - WINDOW, hi]` (and not 0).
    #[inline]
    fn in_window(&self, id: u64) -> bool {
        id != 0 && id <= self.hi && self.hi - id < WINDOW
    }

    /// True when `id` may not be used (see the module doc). Id 0 is never valid.
    #[inline]
    pub fn is_used(&self, id: OrderId) -> bool {
        let id = id.0;
        if id > self.hi {
            return false;
        }
        !self.in_window(id) || self.entries[position(id)] != UNUSED
    }

    /// Records `id` as used. It must not be (checked with [`IdWindow::is_used`]).
    #[inline(always)]
    pub fn mark(&mut self, id: OrderId) {
        let id = id.0;
        debug_assert!(!self.is_used(OrderId(id)), "order id {id} already used");
        if id > self.hi && id - self.hi == 1 {
            // The common case (ids arrive nearly in order): `advance` for one position.
            let p = self.recycle(id);
            self.entries[p] = FINAL;
            self.hi = id;
            return;
        }
        self.mark_slow(id);
    }

    /// [`IdWindow::mark`] for an id out of order or past a gap (out of line, so the fast
    /// path inlines).
    #[inline(never)]
    fn mark_slow(&mut self, id: u64) {
        if id > self.hi {
            self.advance(id);
        } else {
            assert!(
                self.entries[position(id)] == UNUSED,
                "order id {id} marked twice"
            );
        }
        self.entries[position(id)] = FINAL;
    }

    /// Moves `hi` up to `id`: the positions of `(hi, id]` held ids now out of the window;
    /// the resting ones among them move to `old`.
    #[inline]
    fn advance(&mut self, id: u64) {
        if id - self.hi > WINDOW {
            // Every position is recycled: move all resting entries out.
            self.evict_all();
        } else {
            for fresh in self.hi + 1..=id {
                let p = self.recycle(fresh);
                self.entries[p] = UNUSED;
            }
        }
        self.hi = id;
    }

    /// Frees the position of `fresh` (just above `hi`) for it: the id `WINDOW` below it,
    /// which held the position, leaves the window, to `old` if it still rests. Returns the
    /// position; the caller writes the new entry.
    #[inline(always)]
    fn recycle(&mut self, fresh: u64) -> usize {
        let p = position(fresh);
        let entry = self.entries[p];
        if entry > FINAL {
            self.evict(fresh - WINDOW, entry);
        }
        p
    }

    #[cold]
    fn evict(&mut self, old_id: u64, entry: u64) {
        let loc = OrderLoc::decode(entry).expect("a resting entry");
        self.old.insert(OrderId(old_id), loc);
    }

    #[cold]
    fn evict_all(&mut self) {
        for id in self.hi.saturating_sub(WINDOW - 1).max(1)..=self.hi {
            let entry = self.entries[position(id)];
            if entry > FINAL {
                self.evict(id, entry);
            }
        }
        self.entries.fill(UNUSED);
    }

    /// Where the resting order `id` is.
    #[inline]
    pub fn get(&self, id: OrderId) -> Option<OrderLoc> {
        if self.in_window(id.0) {
            OrderLoc::decode(self.entries[position(id.0)])
        } else if self.old.is_empty() {
            None
        } else {
            self.old.get(&id).copied()
        }
    }

    /// Records where the resting order `id` (used, in the window) is.
    #[inline(always)]
    pub fn set_resting(&mut self, id: OrderId, loc: OrderLoc) {
        if self.in_window(id.0) {
            let e = &mut self.entries[position(id.0)];
            assert!(*e == FINAL, "order {id} rests once, after it was marked");
            *e = loc.encode();
            self.resting += 1;
        } else {
            self.set_resting_old(id, loc);
        }
    }

    #[cold]
    #[inline(never)]
    fn set_resting_old(&mut self, id: OrderId, loc: OrderLoc) {
        let before = self.old.insert(id, loc);
        assert!(before.is_none(), "order {id} rests once");
        self.resting += 1;
    }

    /// The resting order `id` is final (filled, cancelled, expired).
    #[inline(always)]
    pub fn set_final(&mut self, id: OrderId) {
        if self.in_window(id.0) {
            let e = &mut self.entries[position(id.0)];
            assert!(*e > FINAL, "order {id} was not resting");
            *e = FINAL;
            self.resting -= 1;
        } else {
            self.set_final_old(id);
        }
    }

    #[cold]
    #[inline(never)]
    fn set_final_old(&mut self, id: OrderId) {
        let before = self.old.remove(&id);
        assert!(before.is_some(), "order {id} was not resting");
        self.resting -= 1;
    }

    /// The lowest id that can be in the window.
    fn low(&self) -> u64 {
        self.hi.saturating_sub(WINDOW - 1).max(1)
    }

    /// The used ids of the window as ascending runs `(first, count)` (the snapshot form:
    /// canonical, and small because nearly every id is used).
    pub fn used_runs(&self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        if self.hi == 0 {
            return runs;
        }
        for id in self.low()..=self.hi {
            if self.entries[position(id)] == UNUSED {
                continue;
            }
            match runs.last_mut() {
                Some((first, count)) if *first + *count == id => *count += 1,
                _ => runs.push((id, 1)),
            }
        }
        runs
    }

    /// The used ids still inside the window, ascending.
    pub fn used(&self) -> Vec<u64> {
        self.used_runs()
            .into_iter()
            .flat_map(|(first, count)| first..first + count)
            .collect()
    }

    /// Rebuilds a window, with no resting order yet, from [`IdWindow::used_runs`] and the
    /// highest accepted id.
    pub fn restore(hi: u64, runs: &[(u64, u64)]) -> Result<IdWindow, String> {
        let mut window = IdWindow {
            hi,
            ..IdWindow::default()
        };
        let mut next = window.low();
        for &(first, count) in runs {
            let last = first.checked_add(count).map(|end| end - 1);
            match last {
                Some(last) if count > 0 && first >= next && last <= hi => {
                    for id in first..=last {
                        window.entries[position(id)] = FINAL;
                    }
                    next = last + 2;
                }
                _ => {
                    return Err(format!(
                        "order id run {first}+{count} out of order or outside the window below {hi}"
                    ));
                }
            }
        }
        if hi > 0 && window.entries[position(hi)] == UNUSED {
            return Err(format!("highest order id {hi} not marked as used"));
        }
        Ok(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(slot: u32) -> OrderLoc {
        OrderLoc {
            pair: PairId(3),
            slot,
        }
    }

    #[test]
    fn ids_out_of_order_are_accepted_once() {
        let mut w = IdWindow::default();
        for id in [2u64, 1, 5, 3] {
            assert!(!w.is_used(OrderId(id)));
            w.mark(OrderId(id));
            assert!(w.is_used(OrderId(id)));
        }
        assert!(!w.is_used(OrderId(4)));
        assert!(w.is_used(OrderId(0)));
        assert_eq!(w.used(), vec![1, 2, 3, 5]);
    }

    #[test]
    fn ids_older_than_the_window_are_refused_and_positions_are_recycled() {
        let mut w = IdWindow::default();
        w.mark(OrderId(10));
        w.mark(OrderId(10 + WINDOW - 1));
        assert!(w.is_used(OrderId(10)), "still inside the window");
        assert!(!w.is_used(OrderId(11)), "inside, never used");
        w.mark(OrderId(10 + WINDOW));
        assert!(w.is_used(OrderId(10)), "too old: refused");
        assert!(!w.is_used(OrderId(11)), "its position was not carried over");
        w.mark(OrderId(5 * WINDOW));
        assert!(!w.is_used(OrderId(5 * WINDOW - 1)));
        assert_eq!(w.used(), vec![5 * WINDOW]);
    }

    #[test]
    fn resting_orders_are_found_in_the_window_and_after_they_leave_it() {
        let mut w = IdWindow::default();
        for (id, slot) in [(1u64, 10u32), (2, 20), (7, 70)] {
            w.mark(OrderId(id));
            w.set_resting(OrderId(id), loc(slot));
        }
        w.set_final(OrderId(2));
        assert_eq!(w.get(OrderId(1)), Some(loc(10)));
        assert_eq!(w.get(OrderId(2)), None);
        assert_eq!(w.resting(), 2);
        // Id 1 leaves the window (position reused), id 7 too after a jump.
        w.mark(OrderId(1 + WINDOW));
        assert_eq!(w.get(OrderId(1)), Some(loc(10)));
        assert_eq!(w.get(OrderId(1 + WINDOW)), None);
        w.mark(OrderId(10 * WINDOW));
        assert_eq!(w.get(OrderId(7)), Some(loc(70)));
        assert_eq!(w.old.len(), 2);
        w.set_final(OrderId(1));
        assert_eq!(w.get(OrderId(1)), None);
        assert_eq!(w.resting(), 1);
        w.set_final(OrderId(7));
        assert_eq!(w.resting(), 0);
    }

    #[test]
    fn ids_far_above_the_highest_are_neither_used_nor_resting() {
        let mut w = IdWindow::default();
        w.mark(OrderId(1000));
        w.set_resting(OrderId(1000), loc(1));
        for id in [1001, WINDOW + 1000, u64::MAX - 100, u64::MAX] {
            assert!(!w.is_used(OrderId(id)), "{id}");
            assert_eq!(w.get(OrderId(id)), None, "{id}");
        }
        assert_eq!(w.get(OrderId(1000)), Some(loc(1)));
    }

    #[test]
    fn restore_gives_back_the_same_used_ids() {
        let mut w = IdWindow::default();
        for id in [3u64, 9, 7, WINDOW + 4, WINDOW + 2] {
            w.mark(OrderId(id));
        }
        assert_eq!(
            w.used_runs(),
            vec![(7, 1), (9, 1), (WINDOW + 2, 1), (WINDOW + 4, 1)]
        );
        let r = IdWindow::restore(w.hi(), &w.used_runs()).unwrap();
        assert_eq!(r, w);
        assert!(
            IdWindow::restore(10, &[(9, 3)]).is_err(),
            "id 11 above hi 10"
        );
        assert!(IdWindow::restore(10, &[(5, 2), (6, 5)]).is_err(), "overlap");
        assert!(
            IdWindow::restore(10, &[(5, 0), (10, 1)]).is_err(),
            "empty run"
        );
        assert!(IdWindow::restore(10, &[(1, 9)]).is_err(), "hi unused");
        let dense = IdWindow::restore(10, &[(1, 4), (6, 5)]).unwrap();
        assert_eq!(dense.used_runs(), vec![(1, 4), (6, 5)]);
    }
}
