//! Order sides and the order-entry enums (time in force, self-trade prevention).

use serde::{Deserialize, Serialize};

/// Buy or sell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// The side a taker of this side matches against.
    #[inline]
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// Index used for per-side arrays: buy 0, sell 1.
    #[inline]
    pub fn index(self) -> usize {
        match self {
            Side::Buy => 0,
            Side::Sell => 1,
        }
    }
}

/// How long a limit order may live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeInForce {
    /// Good till cancelled: the remainder rests on the book.
    #[default]
    Gtc,
    /// Immediate or cancel: trade what crosses now, expire the rest.
    Ioc,
    /// Fill or kill: trade the whole amount now or nothing at all.
    Fok,
}

/// What happens when a taker would trade with an order of its own account.
/// The taker's setting decides, as on the venues clients know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SelfTradePrevention {
    /// Expire the taker's remainder; trades done so far stand.
    #[default]
    ExpireTaker,
    /// Expire the resting order and keep matching.
    ExpireMaker,
    /// Expire both.
    ExpireBoth,
    /// Trade with yourself (fees are charged as usual).
    None,
}
