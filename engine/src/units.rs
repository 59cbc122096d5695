//! Integer units to decimal strings and back, for the edges (API, feed, bench input).
//!
//! `format_units(31043836, 2)` is `"310438.36"`: always exactly `decimals` places, as
//! API.md requires. `parse_units("310438.3", 2)` is `31043830`; more places than allowed,
//! signs, exponents and overflow are refused. The API parses with rust_decimal first for
//! its error messages; this is the exact integer conversion both sides share.

/// Why a decimal string is not a valid amount on a grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnitsError {
    #[error("not a plain non-negative decimal number")]
    Syntax,
    #[error("more decimal places than allowed")]
    TooManyPlaces,
    #[error("number too large")]
    Overflow,
}

/// Formats `value` minor units with exactly `decimals` places.
pub fn format_units(value: u128, decimals: u8) -> String {
    let d = usize::from(decimals);
    let digits = value.to_string();
    if d == 0 {
        return digits;
    }
    let padded = if digits.len() <= d {
        format!("{}{}", "0".repeat(d + 1 - digits.len()), digits)
    } else {
        digits
    };
    let (int, frac) = padded.split_at(padded.len() - d);
    format!("{int}.{frac}")
}

/// Parses a plain decimal (`"12"`, `"12.5"`, `"0.001"`) into minor units of `decimals`.
pub fn parse_units(text: &str, decimals: u8) -> Result<u128, UnitsError> {
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(UnitsError::Syntax);
    }
    if text.ends_with('.') {
        return Err(UnitsError::Syntax);
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > usize::from(decimals) {
        return Err(UnitsError::TooManyPlaces);
    }
    let mut value: u128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(b - b'0')))
            .ok_or(UnitsError::Overflow)?;
    }
    let scale = 10u128
        .checked_pow(u32::from(decimals) - frac.len() as u32)
        .ok_or(UnitsError::Overflow)?;
    value.checked_mul(scale).ok_or(UnitsError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_fixed_places() {
        assert_eq!(format_units(31_043_836, 2), "310438.36");
        assert_eq!(format_units(5, 8), "0.00000005");
        assert_eq!(format_units(0, 2), "0.00");
        assert_eq!(format_units(42, 0), "42");
    }

    #[test]
    fn parses_fewer_places_and_refuses_more() {
        assert_eq!(parse_units("310438.3", 2), Ok(31_043_830));
        assert_eq!(parse_units("1", 8), Ok(100_000_000));
        assert_eq!(parse_units("0.10", 1), Ok(1));
        assert_eq!(parse_units("0.001", 2), Err(UnitsError::TooManyPlaces));
        for bad in ["", "-1", "1e5", "+1", ".5", "5.", "1.2.3", " 1", "0x10"] {
            assert_eq!(parse_units(bad, 2), Err(UnitsError::Syntax), "{bad}");
        }
        assert_eq!(
            parse_units("999999999999999999999999999999999999999", 8),
            Err(UnitsError::Overflow)
        );
    }
}
