//! The money rules of API.md in integers: trade value rounding and fees.
//!
//! A trade's exact value is `price_ticks * lots` in units of
//! `10^-(price_decimals + amount_decimals)` quote. The buyer pays it rounded up to the quote's
//! minor unit, the seller receives it rounded down, the remainder goes to the fee account.
//! Fees are charged on what each side receives, rounded up.

use crate::spec::{FEE_RATE_SCALE, PairScale};

// Division: a `u128` division is a call into compiler-builtins (`__udivti3`, tens of
// instructions, and a division by a constant is not turned into a multiplication). Every
// realistic trade value fits in 64 bits (`price_ticks < 2^42`, lots of a normal order far
// below 2^22), so each division below tries the native 64-bit one first; the `u128` one
// remains for the rest. Both give the same quotient: this is an optimisation, not a rule.

/// `n / d`, through 64 bits when both fit.
#[inline(always)]
fn div(n: u128, d: u128) -> u128 {
    if (n | d) >> 64 == 0 {
        u128::from(n as u64 / d as u64)
    } else {
        n / d
    }
}

/// `ceil(n / d)`, through 64 bits when both fit.
#[inline(always)]
fn div_ceil(n: u128, d: u128) -> u128 {
    if (n | d) >> 64 == 0 {
        u128::from((n as u64).div_ceil(d as u64))
    } else {
        n.div_ceil(d)
    }
}

/// The exact value of `lots` at `price`, in value units.
#[inline]
pub fn exact_value(price_ticks: u64, lots: u64) -> u128 {
    u128::from(price_ticks) * u128::from(lots)
}

/// What the buyer pays for a value, quote minor units (rounded up).
#[inline]
pub fn buyer_pays(scale: &PairScale, value: u128) -> u128 {
    div_ceil(value, scale.value_per_quote_minor)
}

/// What the seller receives for a value, quote minor units (rounded down).
#[inline]
pub fn seller_receives(scale: &PairScale, value: u128) -> u128 {
    div(value, scale.value_per_quote_minor)
}

/// A fee on `received` minor units at `rate_ppm`, rounded up.
#[inline]
pub fn fee(received: u64, rate_ppm: u32) -> u64 {
    // rate <= 100 %, so the fee never exceeds what was received.
    match received.checked_mul(u64::from(rate_ppm)) {
        // A division by a 64-bit constant: a multiplication and a shift.
        Some(product) => product.div_ceil(FEE_RATE_SCALE),
        None => (u128::from(received) * u128::from(rate_ppm)).div_ceil(u128::from(FEE_RATE_SCALE))
            as u64,
    }
}

/// `minor` quote minor units in value units, saturating. A product past `u128` (a pair whose
/// price and amount decimals add up to 20 or more over the quote's, with an amount near the
/// 2^62 bound) is a budget larger than any trade, whose value is below 2^82: `u128::MAX`
/// stands for it. Matching rules before version 4 wrapped instead (engine module doc).
#[inline]
pub fn value_of_minor(scale: &PairScale, minor: u64) -> u128 {
    u128::from(minor).saturating_mul(scale.value_per_quote_minor)
}

/// The most lots whose rounded-up cost fits in a budget of `budget_value` value units
/// (see [`value_of_minor`]) at `price`.
#[inline]
pub fn lots_affordable(price_ticks: u64, budget_value: u128) -> u64 {
    u64::try_from(div(budget_value, u128::from(price_ticks))).unwrap_or(u64::MAX)
}

/// `value / price_ticks` (a value budget in lots at `price`), through 64 bits when it fits.
#[inline]
pub fn lots_in_value(value: u128, price_ticks: u64) -> u128 {
    div(value, u128::from(price_ticks))
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
    fn the_64_bit_fast_paths_agree_with_u128_division() {
        let values = [
            0u128,
            1,
            2,
            999,
            1_000_000,
            u128::from(u64::MAX) - 1,
            u128::from(u64::MAX),
        ];
        let big = [1u128 << 64, (1u128 << 64) + 7, u128::MAX / 3];
        let divisors = [
            1u128,
            3,
            10,
            100_000_000,
            u128::from(u64::MAX),
            1u128 << 64,
            10u128.pow(36),
        ];
        for &n in values.iter().chain(&big) {
            for &d in &divisors {
                assert_eq!(div(n, d), n / d, "{n} / {d}");
                assert_eq!(div_ceil(n, d), n.div_ceil(d), "{n} / {d}");
            }
        }
        for received in [0u64, 1, 999_999, 1 << 44, u64::MAX / 1_000_000, u64::MAX] {
            for rate in [0u32, 1, 1000, 999_999, 1_000_000] {
                let exact = (u128::from(received) * u128::from(rate)).div_ceil(1_000_000);
                assert_eq!(
                    u128::from(fee(received, rate)),
                    exact,
                    "{received} at {rate}"
                );
            }
        }
    }

    #[test]
    fn affordable_lots_never_cost_more_than_the_budget() {
        let s = btc_sek();
        for budget in [0u64, 1, 99, 3_833, 1_000_000] {
            let lots = lots_affordable(31_043_836, value_of_minor(&s, budget));
            assert!(buyer_pays(&s, exact_value(31_043_836, lots)) <= u128::from(budget));
            assert!(buyer_pays(&s, exact_value(31_043_836, lots + 1)) > u128::from(budget));
        }
    }

    #[test]
    fn a_budget_past_u128_in_value_units_saturates() {
        // 8 price and 12 amount decimals over a quote without decimals: 10^20 value units
        // per minor unit, so 2^62 minor units are past u128.
        let s = PairScale {
            value_per_quote_minor: 10u128.pow(20),
            base_minor_per_lot: 1_000_000,
        };
        assert_eq!(value_of_minor(&s, 1 << 62), u128::MAX);
        assert_eq!(value_of_minor(&s, 3), 3 * 10u128.pow(20));
        // Any price affords more lots than an order may hold.
        assert_eq!(lots_affordable(1, u128::MAX), u64::MAX);
        assert_eq!(
            lots_affordable(10_000_000_000, value_of_minor(&s, 1 << 62)),
            u64::MAX
        );
    }
}
