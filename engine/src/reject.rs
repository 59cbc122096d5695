//! Business failures. They are outcomes, not errors: the engine reports them as events and
//! changes nothing. Ordered by precedence: when several apply, the first listed wins.

use serde::{Deserialize, Serialize};

/// Why a command was refused. Declaration order is precedence order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RejectReason {
    UnknownPair,
    UnknownCurrency,
    PairHalted,
    InvalidPrice,
    InvalidAmount,
    AmountTooSmall,
    DuplicateOrderId,
    DuplicateRequestId,
    /// A balance would exceed the engine's bound (2^62 minor units per currency in total).
    AmountOverflow,
    InsufficientFunds,
    /// A post-only order that would have taken liquidity.
    PostOnlyWouldTake,
    /// The book holds its maximum number of resting orders and a GTC order would rest whole
    /// (it does not cross).
    BookFull,
    /// Cancel of an order that is not resting (unknown, final, or another account's).
    OrderNotOpen,
    /// Approve or reject of a request that is not pending (unknown or already decided).
    RequestNotPending,
    /// A currency or pair spec the engine cannot settle exactly, or a duplicate code.
    InvalidSpec,
    DuplicateCurrency,
    DuplicatePair,
    TooManyCurrencies,
    TooManyPairs,
    /// A `SetRulesVersion` to a version this build does not know (0, or above
    /// [`crate::RULES_VERSION_CURRENT`]).
    UnknownRulesVersion,
    /// A `SetRulesVersion` to a version older than the engine's: rules never go back.
    RulesVersionDowngrade,
}
