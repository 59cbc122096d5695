//! Prices as integer ticks and amounts as integer lots.
//!
//! A pair with `price_decimals = 2` quotes in ticks of 0.01 quote units; with
//! `amount_decimals = 8` it trades in lots of 0.00000001 base units. The engine never sees
//! a decimal: the API converts at the edge, exactly, and refuses anything off the grid.

use serde::{Deserialize, Serialize};

/// Largest price the engine accepts, in ticks. The price index is a 64-ary trie of depth 7
/// (42 bits), so this is its capacity; at 2 decimals it is 43 980 465 111.03 quote units.
pub const MAX_PRICE_TICKS: u64 = (1 << 42) - 1;

/// Largest order amount in lots (about 1.1e12: 10 995 BTC at 8 amount decimals). With at
/// most [`crate::engine::MAX_ORDERS_PER_BOOK`] (< 2^24) orders on a level, a level total
/// stays below 2^64 by construction; larger orders are rejected with `InvalidAmount`.
pub const MAX_ORDER_LOTS: u64 = 1 << 40;

/// A limit price in ticks. Always in `1..=MAX_PRICE_TICKS` once accepted by the engine.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Price(pub u64);

/// A base amount in lots.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Amount(pub u64);

impl Price {
    /// True when the engine can hold this price in its index.
    pub fn is_valid(self) -> bool {
        self.0 >= 1 && self.0 <= MAX_PRICE_TICKS
    }
}

impl std::fmt::Display for Price {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
