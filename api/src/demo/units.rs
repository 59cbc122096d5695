//! Fixed-point decimal strings <-> integers, for the simulator's own arithmetic.
//!
//! The simulator thinks in price ticks and amount lots (integers) and only writes decimal
//! strings at the API boundary, like every client should.

/// Parses `"12.5"` at `decimals` places into `125 * 10^(decimals-1)`. `None` for anything that is
/// not a plain non-negative decimal with at most `decimals` places, or that overflows.
pub fn parse(s: &str, decimals: u8) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if frac.len() > usize::from(decimals)
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut v: u64 = 0;
    for b in int.bytes() {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    for i in 0..usize::from(decimals) {
        let digit = frac.as_bytes().get(i).map_or(0, |b| b - b'0');
        v = v.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    Some(v)
}

/// Writes `v` scaled by `10^decimals` with exactly `decimals` places.
pub fn format(v: u64, decimals: u8) -> String {
    if decimals == 0 {
        return v.to_string();
    }
    let digits = format!("{v:0>width$}", width = usize::from(decimals) + 1);
    let (int, frac) = digits.split_at(digits.len() - usize::from(decimals));
    format!("{int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(parse("12.5", 2), Some(1250));
        assert_eq!(parse("0.0001", 8), Some(10_000));
        assert_eq!(parse("7", 0), Some(7));
        assert_eq!(parse(".5", 1), Some(5));
        assert_eq!(parse("1.234", 2), None);
        assert_eq!(parse("-1", 2), None);
        assert_eq!(parse("", 2), None);
        assert_eq!(parse("99999999999999999999", 2), None);
        assert_eq!(format(1250, 2), "12.50");
        assert_eq!(format(5, 3), "0.005");
        assert_eq!(format(42, 0), "42");
    }
}
