//! Currency and pair specifications: the grid every amount and price lives on.
//!
//! The engine stores what it needs to decide (decimals, minimums, fee rates, status) plus the
//! names, so that a snapshot alone is enough to describe the market.

use serde::{Deserialize, Serialize};

use crate::ids::{CurrencyId, PairId};
use crate::price::Amount;

/// Fee rates are parts per million: 1000 ppm is 0.1 %.
pub const FEE_RATE_SCALE: u64 = 1_000_000;

/// The most currencies the engine holds (the ledger's row width).
pub const MAX_CURRENCIES: usize = 32;

/// The most pairs the engine holds.
pub const MAX_PAIRS: usize = 256;

/// The most decimals a currency may have.
pub const MAX_CURRENCY_DECIMALS: u8 = 18;

/// A currency as added by an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencySpec {
    /// Short code, `BTC`.
    pub code: String,
    /// Human name, `Bitcoin`.
    pub display_name: String,
    /// Decimals of the minor unit: balances are integers of `10^-decimals`.
    pub decimals: u8,
}

/// Whether a pair accepts new orders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PairStatus {
    #[default]
    Active,
    /// New orders are refused; cancels still work.
    Halted,
}

/// A trading pair as added by an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairSpec {
    pub base: CurrencyId,
    pub quote: CurrencyId,
    /// A tick is `10^-price_decimals` quote units.
    pub price_decimals: u8,
    /// A lot is `10^-amount_decimals` base units.
    pub amount_decimals: u8,
    /// Smallest order amount, in lots.
    pub min_amount: Amount,
    pub maker_fee_ppm: u32,
    pub taker_fee_ppm: u32,
    pub status: PairStatus,
}

/// The integer conversions a pair needs, derived once from the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairScale {
    /// `price_ticks * lots / value_per_minor` is the trade value in quote minor units
    /// (`10^(price_decimals + amount_decimals - quote_decimals)`).
    pub value_per_quote_minor: u128,
    /// Base minor units in one lot (`10^(base_decimals - amount_decimals)`).
    pub base_minor_per_lot: u64,
}

/// Why a spec was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("too many decimals")]
    Decimals,
    #[error("unknown currency")]
    UnknownCurrency,
    #[error("base and quote are the same currency")]
    SameCurrency,
    #[error("amount decimals exceed the base currency's decimals")]
    AmountFinerThanBase,
    #[error("price and amount decimals together are coarser than the quote currency")]
    ValueCoarserThanQuote,
    #[error("fee rate above 100 %")]
    FeeRate,
    #[error("minimum amount must be at least one lot")]
    MinAmount,
}

impl PairSpec {
    /// Derives the integer scales, refusing specs the engine cannot settle exactly.
    pub fn scale(&self, base_decimals: u8, quote_decimals: u8) -> Result<PairScale, SpecError> {
        if self.base == self.quote {
            return Err(SpecError::SameCurrency);
        }
        if self.price_decimals > MAX_CURRENCY_DECIMALS
            || self.amount_decimals > MAX_CURRENCY_DECIMALS
        {
            return Err(SpecError::Decimals);
        }
        if self.amount_decimals > base_decimals {
            return Err(SpecError::AmountFinerThanBase);
        }
        let value_decimals = u32::from(self.price_decimals) + u32::from(self.amount_decimals);
        if value_decimals < u32::from(quote_decimals) {
            return Err(SpecError::ValueCoarserThanQuote);
        }
        if u64::from(self.maker_fee_ppm) > FEE_RATE_SCALE
            || u64::from(self.taker_fee_ppm) > FEE_RATE_SCALE
        {
            return Err(SpecError::FeeRate);
        }
        if self.min_amount.0 == 0 {
            return Err(SpecError::MinAmount);
        }
        Ok(PairScale {
            value_per_quote_minor: 10u128.pow(value_decimals - u32::from(quote_decimals)),
            base_minor_per_lot: 10u64.pow(u32::from(base_decimals - self.amount_decimals)),
        })
    }
}

/// A pair id together with its spec, as listed by [`crate::Engine::pairs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairInfo {
    pub id: PairId,
    pub spec: PairSpec,
}
