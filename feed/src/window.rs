//! The rolling 24 hour window behind a ticker's high, low and volumes.
//!
//! Trades are kept in time order; expiring drops them from the front, so each trade is
//! added once and removed once (amortised O(1), never a rescan). High and low use monotonic
//! deques: the front of `maxq` is the highest price still in the window, and a price is
//! dropped from the back as soon as a newer trade at a higher (lower) price makes it
//! irrelevant. Memory is O(trades in the last 24 h), about 40 bytes per trade.

use std::collections::VecDeque;

/// 24 hours in nanoseconds.
pub const DAY_NS: i64 = 86_400_000_000_000;

#[derive(Clone, Copy, Debug)]
struct Entry {
    ts_ns: i64,
    idx: u64,
    lots: u64,
    quote: u64,
}

/// Trades in `(now - 24 h, now]` with running sums and extremes.
#[derive(Clone, Debug, Default)]
pub struct Window {
    trades: VecDeque<Entry>,
    next_idx: u64,
    maxq: VecDeque<(u64, u64)>,
    minq: VecDeque<(u64, u64)>,
    base_lots: u128,
    quote_minor: u128,
    horizon_ns: i64,
}

impl Window {
    /// Adds a trade; `ts_ns` never decreases between calls.
    pub fn push(&mut self, ts_ns: i64, price: u64, lots: u64, quote: u64) {
        let idx = self.next_idx;
        self.next_idx += 1;
        self.trades.push_back(Entry {
            ts_ns,
            idx,
            lots,
            quote,
        });
        while self.maxq.back().is_some_and(|&(_, p)| p <= price) {
            self.maxq.pop_back();
        }
        self.maxq.push_back((idx, price));
        while self.minq.back().is_some_and(|&(_, p)| p >= price) {
            self.minq.pop_back();
        }
        self.minq.push_back((idx, price));
        self.base_lots += u128::from(lots);
        self.quote_minor += u128::from(quote);
    }

    /// Drops every trade at or before `now_ns - 24 h`. The horizon never moves back.
    pub fn expire(&mut self, now_ns: i64) {
        let horizon = now_ns.saturating_sub(DAY_NS);
        if horizon <= self.horizon_ns {
            return;
        }
        self.horizon_ns = horizon;
        while let Some(front) = self.trades.front().copied() {
            if front.ts_ns > horizon {
                break;
            }
            self.trades.pop_front();
            if self.maxq.front().is_some_and(|&(i, _)| i == front.idx) {
                self.maxq.pop_front();
            }
            if self.minq.front().is_some_and(|&(i, _)| i == front.idx) {
                self.minq.pop_front();
            }
            self.base_lots -= u128::from(front.lots);
            self.quote_minor -= u128::from(front.quote);
        }
    }

    pub fn high(&self) -> Option<u64> {
        self.maxq.front().map(|&(_, p)| p)
    }

    pub fn low(&self) -> Option<u64> {
        self.minq.front().map(|&(_, p)| p)
    }

    /// Base volume in lots.
    pub fn base_lots(&self) -> u128 {
        self.base_lots
    }

    /// Quote volume in quote minor units (sum of what buyers paid).
    pub fn quote_minor(&self) -> u128 {
        self.quote_minor
    }

    pub fn len(&self) -> usize {
        self.trades.len()
    }

    pub fn is_empty(&self) -> bool {
        self.trades.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_naive_rescan() {
        let mut w = Window::default();
        let mut all: Vec<(i64, u64, u64)> = Vec::new();
        let mut x: u64 = 12345;
        let mut ts = 0i64;
        for _ in 0..5000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ts += ((x >> 33) % 60_000_000_000) as i64;
            let price = 100 + (x >> 40) % 50;
            w.expire(ts);
            w.push(ts, price, 3, price * 3);
            all.push((ts, price, 3));
            let live: Vec<_> = all.iter().filter(|t| t.0 > ts - DAY_NS).collect();
            assert_eq!(w.len(), live.len());
            assert_eq!(w.high(), live.iter().map(|t| t.1).max());
            assert_eq!(w.low(), live.iter().map(|t| t.1).min());
            assert_eq!(w.base_lots(), live.len() as u128 * 3);
        }
        w.expire(ts + DAY_NS);
        assert!(w.is_empty());
        assert_eq!(w.high(), None);
        assert_eq!(w.quote_minor(), 0);
    }
}
