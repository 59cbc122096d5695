//! One simulated market: a fair value that drifts (a bounded random walk in integer ticks) and
//! the quote ladder a market maker wants around it.
//!
//! Reference prices come from rough US-dollar values per currency, so any pair of known
//! currencies starts somewhere plausible; an unknown currency counts as one dollar.

use rand::Rng;

use super::client::PairInfo;
use super::units;

/// Rough value of one unit of a currency, in micro-dollars.
fn usd_micros(currency: &str) -> u128 {
    match currency {
        "BTC" => 65_000_000_000,
        "ETH" => 2_500_000_000,
        "USDC" | "USDT" | "USD" => 1_000_000,
        "EUR" => 1_080_000,
        "SEK" => 95_000,
        _ => 1_000_000,
    }
}

/// The amount of `currency` worth about `usd` dollars, in its minor units.
pub fn worth_minor(currency: &str, decimals: u8, usd: u64) -> u64 {
    let v = u128::from(usd) * 10u128.pow(u32::from(decimals)) * 1_000_000 / usd_micros(currency);
    u64::try_from(v).unwrap_or(u64::MAX / 4)
}

/// Quotes per side.
pub const LEVELS: usize = 12;

/// A pair's simulated fair value and its grid.
#[derive(Clone, Debug)]
pub struct Market {
    pub pair: String,
    pub price_decimals: u8,
    pub amount_decimals: u8,
    /// Smallest order amount, in lots.
    pub min_lots: u64,
    /// The current fair value, in ticks.
    pub fair: u64,
    /// Where the walk started; it is pulled back towards it so it never wanders off.
    anchor: u64,
    /// Distance between ladder rungs, in ticks. Fixed (from the anchor) so that quotes stay on
    /// one grid while the fair value moves: only the rungs it crosses change.
    rung: u64,
    /// Distance from the fair value to the nearest quote, in ticks.
    half_spread: u64,
}

impl Market {
    /// A market for `info` starting at its reference price. `None` if the grid is unusable.
    pub fn new(info: &PairInfo) -> Option<Market> {
        let scale = 10u128.pow(u32::from(info.price_decimals));
        let fair = usd_micros(&info.base) * scale / usd_micros(&info.quote);
        let fair = u64::try_from(fair).ok()?;
        // Below ~1000 ticks a 1-tick step is a big relative move: not a useful demo market.
        if fair < 1_000 {
            return None;
        }
        let min_lots = units::parse(&info.min_amount, info.amount_decimals)?.max(1);
        Some(Market {
            pair: info.pair.clone(),
            price_decimals: info.price_decimals,
            amount_decimals: info.amount_decimals,
            min_lots,
            fair,
            anchor: fair,
            rung: (fair / 4_000).max(1),        // 2.5 bp
            half_spread: (fair / 5_000).max(1), // 2 bp
        })
    }

    /// One step of the walk: up to +-2 basis points, with a pull towards the anchor once the
    /// price is more than 15 % away from it.
    pub fn step(&mut self, rng: &mut impl Rng) {
        let unit = (self.fair / 50_000).max(1); // 0.2 bp
        let mut k: i64 = rng.random_range(-10..=10);
        if self.fair > self.anchor + self.anchor / 7 {
            k -= 3;
        } else if self.fair < self.anchor - self.anchor / 7 {
            k += 3;
        }
        let delta = unit.saturating_mul(k.unsigned_abs());
        self.fair = if k < 0 {
            self.fair.saturating_sub(delta).max(self.anchor / 4)
        } else {
            self.fair
                .saturating_add(delta)
                .min(self.anchor.saturating_mul(4))
        };
    }

    fn gaps(&self) -> (u64, u64) {
        (self.rung, self.half_spread)
    }

    /// The bid prices the maker wants (best first), snapped to a grid of rungs so that a small
    /// move of the fair value keeps most quotes where they are.
    pub fn bid_ladder(&self) -> Vec<u64> {
        let (rung, half) = self.gaps();
        let top = (self.fair.saturating_sub(half)) / rung * rung;
        (0..LEVELS as u64)
            .map(|i| top.saturating_sub(i * rung))
            .filter(|p| *p > 0)
            .collect()
    }

    /// The ask prices the maker wants (best first).
    pub fn ask_ladder(&self) -> Vec<u64> {
        let (rung, half) = self.gaps();
        let top = (self.fair + half).div_ceil(rung) * rung;
        (0..LEVELS as u64).map(|i| top + i * rung).collect()
    }

    /// A quote size: deeper rungs are larger, with noise.
    pub fn quote_lots(&self, level: usize, rng: &mut impl Rng) -> u64 {
        let base = self.min_lots * rng.random_range(10..=120);
        base + base * level as u64 / 2
    }

    /// A taker size.
    pub fn taker_lots(&self, rng: &mut impl Rng) -> u64 {
        self.min_lots * rng.random_range(1..=60)
    }

    pub fn price(&self, ticks: u64) -> String {
        units::format(ticks, self.price_decimals)
    }

    pub fn amount(&self, lots: u64) -> String {
        units::format(lots, self.amount_decimals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn info(pair: &str, pd: u8, ad: u8, min: &str) -> PairInfo {
        let (base, quote) = pair.split_once('_').unwrap();
        PairInfo {
            pair: pair.into(),
            base: base.into(),
            quote: quote.into(),
            price_decimals: pd,
            amount_decimals: ad,
            min_amount: min.into(),
            status: "active".into(),
        }
    }

    #[test]
    fn ladders_do_not_cross_and_walk_stays_bounded() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for i in [
            info("BTC_SEK", 2, 8, "0.0001"),
            info("ETH_BTC", 6, 4, "0.001"),
            info("BTC_USDC", 2, 8, "0.0001"),
        ] {
            let mut m = Market::new(&i).unwrap();
            let start = m.fair;
            for _ in 0..20_000 {
                m.step(&mut rng);
                let (b, a) = (m.bid_ladder(), m.ask_ladder());
                assert!(b[0] < m.fair && a[0] > m.fair && b[0] < a[0]);
                assert_eq!(a.len(), LEVELS);
            }
            assert!(m.fair > start / 4 && m.fair < start * 4);
            // Rungs stay on one grid.
            assert!(m.bid_ladder().iter().all(|p| p % m.rung == 0));
        }
    }

    #[test]
    fn worth_is_sane() {
        assert_eq!(worth_minor("USDC", 6, 10), 10_000_000);
        assert_eq!(worth_minor("BTC", 8, 65_000), 100_000_000);
    }
}
