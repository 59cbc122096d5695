//! The L2 book (price -> amount per side) mirrored from `LevelChanged`, and the checksum.

use std::collections::BTreeMap;

use engine::Side;
use engine::units::format_units;

/// Aggregated levels of one pair at `seq`.
#[derive(Clone, Debug, Default)]
pub struct L2 {
    pub bids: BTreeMap<u64, u64>,
    pub asks: BTreeMap<u64, u64>,
    pub seq: u64,
}

impl L2 {
    /// Sets a level's absolute amount (0 removes it).
    pub fn set(&mut self, side: Side, price: u64, amount: u64) {
        let map = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        if amount == 0 {
            map.remove(&price);
        } else {
            map.insert(price, amount);
        }
    }

    pub fn best_bid(&self) -> Option<(u64, u64)> {
        self.bids.last_key_value().map(|(p, a)| (*p, *a))
    }

    pub fn best_ask(&self) -> Option<(u64, u64)> {
        self.asks.first_key_value().map(|(p, a)| (*p, *a))
    }

    /// Bids best (highest) first.
    pub fn bids_best_first(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.bids.iter().rev().map(|(p, a)| (*p, *a))
    }

    /// Asks best (lowest) first.
    pub fn asks_best_first(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.asks.iter().map(|(p, a)| (*p, *a))
    }

    /// Levels formatted as `[price, amount]` strings, best first, at most `depth`.
    pub fn levels(&self, side: Side, depth: usize, pd: u8, ad: u8) -> Vec<[String; 2]> {
        let fmt = |(p, a): (u64, u64)| {
            [
                format_units(u128::from(p), pd),
                format_units(u128::from(a), ad),
            ]
        };
        match side {
            Side::Buy => self.bids_best_first().take(depth).map(fmt).collect(),
            Side::Sell => self.asks_best_first().take(depth).map(fmt).collect(),
        }
    }

    /// The API.md checksum of this book.
    pub fn checksum(&self, pd: u8, ad: u8) -> u32 {
        let asks = self.levels(Side::Sell, 10, pd, ad);
        let bids = self.levels(Side::Buy, 10, pd, ad);
        checksum_of(&asks, &bids)
    }
}

/// CRC32 of the top 10 asks (lowest first) then the top 10 bids (highest first), each level
/// written as price then amount with '.' removed and leading zeros stripped (Kraken style).
/// Public so clients and tests compute it the same way.
pub fn checksum_of(asks: &[[String; 2]], bids: &[[String; 2]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let mut buf = String::with_capacity(64);
    for level in asks.iter().take(10).chain(bids.iter().take(10)) {
        for s in level {
            buf.clear();
            buf.extend(s.chars().filter(|c| *c != '.'));
            h.update(buf.trim_start_matches('0').as_bytes());
        }
    }
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_strips_points_and_leading_zeros() {
        let asks = vec![["0.05005".to_string(), "0.00000500".to_string()]];
        let bids = vec![["0.05000".to_string(), "0.00001000".to_string()]];
        let expect = crc32fast::hash(b"5005500" as &[u8]);
        let _ = expect;
        let mut h = crc32fast::Hasher::new();
        h.update(b"5005");
        h.update(b"500");
        h.update(b"5000");
        h.update(b"1000");
        assert_eq!(checksum_of(&asks, &bids), h.finalize());
    }

    #[test]
    fn levels_sorted_best_first() {
        let mut b = L2::default();
        b.set(Side::Buy, 100, 5);
        b.set(Side::Buy, 101, 6);
        b.set(Side::Sell, 103, 1);
        b.set(Side::Sell, 102, 2);
        b.set(Side::Sell, 104, 2);
        b.set(Side::Sell, 104, 0);
        assert_eq!(b.best_bid(), Some((101, 6)));
        assert_eq!(b.best_ask(), Some((102, 2)));
        assert_eq!(
            b.levels(Side::Sell, 10, 2, 0),
            vec![
                ["1.02".to_string(), "2".to_string()],
                ["1.03".to_string(), "1".to_string()]
            ]
        );
    }
}
