//! Candles (OHLCV) per interval, built from trades.

use std::collections::BTreeMap;

/// A candle interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    M1,
    M5,
    M15,
    H1,
    H4,
    D1,
}

impl Interval {
    pub const ALL: [Interval; 6] = [
        Interval::M1,
        Interval::M5,
        Interval::M15,
        Interval::H1,
        Interval::H4,
        Interval::D1,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Interval::M1 => "1m",
            Interval::M5 => "5m",
            Interval::M15 => "15m",
            Interval::H1 => "1h",
            Interval::H4 => "4h",
            Interval::D1 => "1d",
        }
    }

    pub fn parse(s: &str) -> Option<Interval> {
        Interval::ALL.into_iter().find(|i| i.as_str() == s)
    }

    /// Length in milliseconds.
    pub fn millis(self) -> i64 {
        let m = 60_000;
        match self {
            Interval::M1 => m,
            Interval::M5 => 5 * m,
            Interval::M15 => 15 * m,
            Interval::H1 => 60 * m,
            Interval::H4 => 240 * m,
            Interval::D1 => 1440 * m,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The open time (ms) of the candle holding `ts_ms` (UTC-aligned).
    pub fn open_of(self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.millis()) * self.millis()
    }
}

/// One candle, in integers (prices in ticks, base in lots, quote in minor units).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candle {
    pub open_ms: i64,
    pub open: u64,
    pub high: u64,
    pub low: u64,
    pub close: u64,
    pub base_lots: u128,
    pub quote_minor: u128,
    pub trades: u64,
}

impl Candle {
    pub fn new(open_ms: i64, price: u64) -> Candle {
        Candle {
            open_ms,
            open: price,
            high: price,
            low: price,
            close: price,
            base_lots: 0,
            quote_minor: 0,
            trades: 0,
        }
    }

    pub fn add(&mut self, price: u64, lots: u64, quote: u64) {
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        self.close = price;
        self.base_lots += u128::from(lots);
        self.quote_minor += u128::from(quote);
        self.trades += 1;
    }
}

/// One pair's candles of one interval, oldest first, at most `retain` kept in memory.
#[derive(Clone, Debug, Default)]
pub struct Series {
    candles: BTreeMap<i64, Candle>,
}

impl Series {
    /// Adds a trade and returns the candle it landed in.
    pub fn add(
        &mut self,
        interval: Interval,
        ts_ms: i64,
        price: u64,
        lots: u64,
        quote: u64,
        retain: usize,
    ) -> Candle {
        let open = interval.open_of(ts_ms);
        let c = self
            .candles
            .entry(open)
            .or_insert_with(|| Candle::new(open, price));
        c.add(price, lots, quote);
        let out = *c;
        while self.candles.len() > retain.max(1) {
            self.candles.pop_first();
        }
        out
    }

    /// Puts a stored candle back (on open).
    pub fn load(&mut self, candle: Candle, retain: usize) {
        self.candles.insert(candle.open_ms, candle);
        while self.candles.len() > retain.max(1) {
            self.candles.pop_first();
        }
    }

    /// The open time before which the store may hold candles this series no longer does:
    /// its oldest candle when it holds `retain` (older ones were dropped, or never loaded),
    /// `None` when it holds every candle of the series.
    pub fn dropped_before(&self, retain: usize) -> Option<i64> {
        if self.candles.len() < retain.max(1) {
            return None;
        }
        self.candles.first_key_value().map(|(open, _)| *open)
    }

    pub fn get(&self, open_ms: i64) -> Option<&Candle> {
        self.candles.get(&open_ms)
    }

    /// Candles with `start <= open < end`: the first `limit` from `start` when `from_start`,
    /// else the last `limit` before `end`; oldest first either way.
    pub fn query(&self, start: i64, end: i64, limit: usize, from_start: bool) -> Vec<Candle> {
        if start >= end {
            return Vec::new();
        }
        let range = self.candles.range(start..end);
        if from_start {
            range.take(limit).map(|(_, c)| *c).collect()
        } else {
            let mut v: Vec<Candle> = range.rev().take(limit).map(|(_, c)| *c).collect();
            v.reverse();
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_and_aggregates() {
        let mut s = Series::default();
        let t0 = 1_700_000_000_000i64;
        s.add(Interval::M1, t0, 10, 1, 10, 100);
        s.add(Interval::M1, t0 + 1, 12, 2, 24, 100);
        let c = s.add(Interval::M1, t0 + 2, 9, 1, 9, 100);
        assert_eq!(c.open_ms, Interval::M1.open_of(t0));
        assert_eq!((c.open, c.high, c.low, c.close), (10, 12, 9, 9));
        assert_eq!((c.base_lots, c.quote_minor, c.trades), (4, 43, 3));
        s.add(Interval::M1, t0 + 60_000, 11, 1, 11, 100);
        assert_eq!(s.query(0, i64::MAX, 10, false).len(), 2);
        assert_eq!(s.query(0, i64::MAX, 1, false)[0].open, 11);
        assert_eq!(s.query(0, i64::MAX, 1, true)[0].open, 10);
        assert_eq!(Interval::parse("4h"), Some(Interval::H4));
        assert_eq!(Interval::parse("2h"), None);
    }
}
