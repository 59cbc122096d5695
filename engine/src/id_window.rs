//! Which order ids have been used: the `DuplicateOrderId` check.
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
//! - `id` is in `(hi - WINDOW, hi]` and was accepted before (one bit per id in a ring).
//!
//! `WINDOW` (2^20) is far more than the ids that can be in flight between assignment and
//! sequencing (bounded by the API's connection and queue limits), so no genuine order is
//! ever refused as too old. Only accepted orders use an id; a rejected one leaves no trace
//! (like every reject), the same rule as request ids.
//!
//! # Cost
//! One bit test and set per accepted order in a 128 KiB ring; ids arrive nearly in order,
//! so the word touched is almost always cached. This replaced a probe of the resting-order
//! hash table per new order, so it is cheaper *and* stricter. The ring is engine state: it
//! is in the snapshot (see `state`), so a recovered engine decides exactly like the live one.

use crate::ids::OrderId;

/// Ids remembered below the highest accepted id.
pub const WINDOW: u64 = 1 << 20;
const WORDS: usize = (WINDOW / 64) as usize;

/// See the module doc.
#[derive(Clone, PartialEq, Eq)]
pub struct IdWindow {
    /// Highest accepted id (0: none yet; ids start at 1).
    hi: u64,
    /// Bit `id % WINDOW` is set when `id` in `(hi - WINDOW, hi]` was accepted.
    bits: Box<[u64]>,
}

impl std::fmt::Debug for IdWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdWindow")
            .field("hi", &self.hi)
            .field(
                "used",
                &self.bits.iter().map(|w| w.count_ones()).sum::<u32>(),
            )
            .finish()
    }
}

impl Default for IdWindow {
    fn default() -> Self {
        IdWindow {
            hi: 0,
            bits: vec![0u64; WORDS].into_boxed_slice(),
        }
    }
}

#[inline]
fn position(id: u64) -> (usize, u64) {
    let bit = id % WINDOW;
    ((bit / 64) as usize, 1u64 << (bit % 64))
}

impl IdWindow {
    /// Highest accepted id.
    pub fn hi(&self) -> u64 {
        self.hi
    }

    /// True when `id` may not be used (see the module doc). Id 0 is never valid.
    #[inline]
    pub fn is_used(&self, id: OrderId) -> bool {
        let id = id.0;
        if id == 0 || (self.hi >= WINDOW && id <= self.hi - WINDOW) {
            return true;
        }
        if id > self.hi {
            return false;
        }
        self.is_used_bit(id)
    }

    /// Records `id` as used. It must not be (checked with [`IdWindow::is_used`]).
    #[inline]
    pub fn mark(&mut self, id: OrderId) {
        let id = id.0;
        debug_assert!(!self.is_used(OrderId(id)), "order id {id} already used");
        let (w, m) = position(id);
        if id > self.hi {
            // Usually the next id: its position held `id - WINDOW`, now out of the window.
            if id - self.hi > 1 {
                self.forget_until(id);
            }
            self.hi = id;
        } else {
            assert!(self.bits[w] & m == 0, "order id {id} marked twice");
        }
        self.bits[w] |= m;
    }

    /// Clears the positions of `(hi, id)`: they held ids now out of the window.
    #[cold]
    fn forget_until(&mut self, id: u64) {
        if id - self.hi >= WINDOW {
            self.bits.fill(0);
        } else {
            for old in self.hi + 1..id {
                let (w, m) = position(old);
                self.bits[w] &= !m;
            }
        }
    }

    /// The ring as words (the snapshot form: canonical, bit `id % WINDOW` for each used id).
    pub fn words(&self) -> &[u64] {
        &self.bits
    }

    /// The used ids still inside the window, ascending.
    pub fn used(&self) -> Vec<u64> {
        let low = self.hi.saturating_sub(WINDOW - 1).max(1);
        (low..=self.hi)
            .filter(|&id| {
                let (w, m) = position(id);
                self.bits[w] & m != 0
            })
            .collect()
    }

    /// Rebuilds a window from [`IdWindow::words`] and the highest accepted id.
    pub fn restore(hi: u64, words: &[u64]) -> Result<IdWindow, String> {
        if words.len() != WORDS {
            return Err(format!(
                "order id window of {} words, expected {WORDS}",
                words.len()
            ));
        }
        let window = IdWindow {
            hi,
            bits: words.to_vec().into_boxed_slice(),
        };
        // Before the window fills, only ids 1..=hi have a position.
        let set: u64 = words.iter().map(|w| u64::from(w.count_ones())).sum();
        if set != window.used().len() as u64 {
            return Err(format!("order id window has bits outside 1..={hi}"));
        }
        if hi > 0 && !window.is_used_bit(hi) {
            return Err(format!("highest order id {hi} not marked as used"));
        }
        Ok(window)
    }

    fn is_used_bit(&self, id: u64) -> bool {
        let (w, m) = position(id);
        self.bits[w] & m != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn ids_older_than_the_window_are_refused_and_bits_are_forgotten() {
        let mut w = IdWindow::default();
        w.mark(OrderId(10));
        w.mark(OrderId(10 + WINDOW - 1));
        assert!(w.is_used(OrderId(10)), "still inside the window");
        assert!(!w.is_used(OrderId(11)), "inside, never used");
        w.mark(OrderId(10 + WINDOW));
        assert!(w.is_used(OrderId(10)), "too old: refused");
        assert!(!w.is_used(OrderId(11)), "its bit was not carried over");
        w.mark(OrderId(5 * WINDOW));
        assert!(!w.is_used(OrderId(5 * WINDOW - 1)));
        assert_eq!(w.used(), vec![5 * WINDOW]);
    }

    #[test]
    fn restore_gives_back_the_same_window() {
        let mut w = IdWindow::default();
        for id in [3u64, 9, 7, WINDOW + 4, WINDOW + 2] {
            w.mark(OrderId(id));
        }
        let r = IdWindow::restore(w.hi(), w.words()).unwrap();
        assert_eq!(r, w);
        let mut bad = vec![0u64; WORDS];
        bad[0] = 1 << 11;
        bad[0] |= 1 << 10;
        assert!(IdWindow::restore(10, &bad).is_err(), "id 11 above hi 10");
        assert!(IdWindow::restore(10, &[0; 3]).is_err());
    }
}
