//! Identifiers as newtypes, so an order id can never be passed where an account id is meant.
//!
//! All ids are plain integers inside the engine; the API renders them as opaque strings.

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $inner:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub $inner);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// An account (a user's wallet). Account 0 is the exchange's fee account.
    AccountId,
    u32
);
id_type!(
    /// A currency, dense from 0 in the order currencies were added.
    CurrencyId,
    u16
);
id_type!(
    /// A trading pair, dense from 0 in the order pairs were added.
    PairId,
    u16
);
id_type!(
    /// An order, assigned before sequencing (by the API or the bench input).
    OrderId,
    u64
);
id_type!(
    /// A trade, assigned by the engine in execution order, per engine (not per pair).
    TradeId,
    u64
);
id_type!(
    /// A deposit or withdrawal request, assigned before sequencing.
    RequestId,
    u64
);

impl AccountId {
    /// The exchange's own account: every fee and every rounding remainder lands here.
    pub const FEES: AccountId = AccountId(0);
}
