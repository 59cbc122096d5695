//! The money rules of API.md in integers: trade value rounding and fees.
//!
//! A trade's exact value is `price_ticks * lots` in units of
//! `10^-(price_decimals + amount_decimals)` quote. The buyer pays it rounded up to the quote's
//! minor unit, the seller receives it rounded down, the remainder goes to the fee account.
//! Fees are charged on what each side receives, rounded up.

use crate::spec::{FEE_RATE_SCALE, PairScale};

/// The exact value of `lots` at `price`, in value units.
#[inline]
pub fn exact_value(price_ticks: u64, lots: u64) -> u128 {
    u128::from(price_ticks) * u128::from(lots)
}

/// What the buyer pays for a value, quote minor units (rounded up).
#[inline]
pub fn buyer_pays(scale: &PairScale, value: u128) -> u128 {
    value.div_ceil(scale.value_per_quote_minor)
}

/// What the seller receives for a value, quote minor units (rounded down).
#[inline]
pub fn seller_receives(scale: &PairScale, value: u128) -> u128 {
    value / scale.value_per_quote_minor
}

/// A fee on `received` minor units at `rate_ppm`, rounded up.
#[inline]
pub fn fee(received: u64, rate_ppm: u32) -> u64 {
    let f = (u128::from(received) * u128::from(rate_ppm)).div_ceil(u128::from(FEE_RATE_SCALE));
    // rate <= 100 %, so the fee never exceeds what was received.
    f as u64
}

/// The most lots whose rounded-up cost fits in `budget_minor` quote minor units at `price`.
#[inline]
pub fn lots_affordable(scale: &PairScale, price_ticks: u64, budget_minor: u64) -> u64 {
    let lots = u128::from(budget_minor) * scale.value_per_quote_minor / u128::from(price_ticks);
    u64::try_from(lots).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn btc_sek() -> PairScale {
        // price 2 decimals, amount 8 decimals, SEK 2 decimals, BTC 8 decimals.
        PairScale {
            value_per_quote_minor: 100_000_000,
            base_minor_per_lot: 1,
        }
    }

    #[test]
    fn buyer_rounds_up_seller_rounds_down() {
        let s = btc_sek();
        // 0.00012345 BTC at 310438.36 SEK = 38.3236156... SEK
        let v = exact_value(31_043_836, 12_345);
        assert_eq!(buyer_pays(&s, v), 3_833);
        assert_eq!(seller_receives(&s, v), 3_832);
        // An exact value rounds neither way.
        let v = exact_value(31_043_836, 100_000_000);
        assert_eq!(buyer_pays(&s, v), 31_043_836);
        assert_eq!(seller_receives(&s, v), 31_043_836);
    }

    #[test]
    fn fees_round_up_and_never_exceed_what_was_received() {
        assert_eq!(fee(1000, 1000), 1);
        assert_eq!(fee(1001, 1000), 2);
        assert_eq!(fee(0, 2000), 0);
        assert_eq!(fee(1, 1), 1);
        assert_eq!(fee(u64::MAX >> 2, 1_000_000), u64::MAX >> 2);
    }

    #[test]
    fn affordable_lots_never_cost_more_than_the_budget() {
        let s = btc_sek();
        for budget in [0u64, 1, 99, 3_833, 1_000_000] {
            let lots = lots_affordable(&s, 31_043_836, budget);
            assert!(buyer_pays(&s, exact_value(31_043_836, lots)) <= u128::from(budget));
            assert!(buyer_pays(&s, exact_value(31_043_836, lots + 1)) > u128::from(budget));
        }
    }
}
