//! Which deposit and withdrawal request ids have been used: the `DuplicateRequestId` check.
//!
//! Request ids, like order ids, are taken from a counter in the API before sequencing, so
//! two concurrent requests can reach the engine in the opposite order of their ids. The
//! engine used to refuse any id not above the highest seen, which turned that race into a
//! spurious refusal (a 503 for the client). The rule is now the order ids' rule
//! ([`crate::id_window`]): with `hi` the highest accepted id, an id is a duplicate when it
//! was accepted before within `(hi - WINDOW, hi]`, or is older than that window. Requests
//! are rare, so this is a plain bit ring (8 KiB). Only accepted requests use an id.
//! The used ids are engine state, in the snapshot as runs `(first, count)`.

/// Ids remembered below the highest accepted id.
pub const WINDOW: u64 = 1 << 16;
const WORDS: usize = (WINDOW / 64) as usize;

/// See the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestIds {
    /// Highest accepted id (0: none yet).
    hi: u64,
    /// Bit `id % WINDOW` is set when `id` in `(hi - WINDOW, hi]` was accepted.
    bits: Box<[u64]>,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds {
            hi: 0,
            bits: vec![0u64; WORDS].into_boxed_slice(),
        }
    }
}

#[inline]
fn position(id: u64) -> (usize, u64) {
    let bit = id % WINDOW;
    ((bit / 64) as usize, 1u64 << (bit % 64))
}

impl RequestIds {
    /// Highest accepted id.
    pub fn hi(&self) -> u64 {
        self.hi
    }

    fn low(&self) -> u64 {
        self.hi.saturating_sub(WINDOW - 1).max(1)
    }

    fn bit(&self, id: u64) -> bool {
        let (w, m) = position(id);
        self.bits[w] & m != 0
    }

    /// True when `id` may not be used. Id 0 is never valid.
    pub fn is_used(&self, id: u64) -> bool {
        if id > self.hi {
            return id == 0;
        }
        id < self.low() || self.bit(id)
    }

    /// Records `id` as used. It must not be (checked with [`RequestIds::is_used`]).
    pub fn mark(&mut self, id: u64) {
        assert!(!self.is_used(id), "request id {id} marked twice");
        if id > self.hi {
            if id - self.hi >= WINDOW {
                self.bits.fill(0);
            } else {
                for old in self.hi + 1..id {
                    let (w, m) = position(old);
                    self.bits[w] &= !m;
                }
            }
            self.hi = id;
        }
        let (w, m) = position(id);
        self.bits[w] |= m;
    }

    /// The used ids of the window as ascending runs `(first, count)` (the snapshot form).
    pub fn used_runs(&self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        if self.hi == 0 {
            return runs;
        }
        for id in self.low()..=self.hi {
            if !self.bit(id) {
                continue;
            }
            match runs.last_mut() {
                Some((first, count)) if *first + *count == id => *count += 1,
                _ => runs.push((id, 1)),
            }
        }
        runs
    }

    /// Rebuilds the window from [`RequestIds::used_runs`] and the highest accepted id.
    pub fn restore(hi: u64, runs: &[(u64, u64)]) -> Result<RequestIds, String> {
        let mut ids = RequestIds {
            hi,
            ..RequestIds::default()
        };
        let mut next = ids.low();
        for &(first, count) in runs {
            match first.checked_add(count).map(|end| end - 1) {
                Some(last) if count > 0 && first >= next && last <= hi => {
                    for id in first..=last {
                        let (w, m) = position(id);
                        ids.bits[w] |= m;
                    }
                    next = last + 2;
                }
                _ => {
                    return Err(format!(
                        "request id run {first}+{count} out of order or outside the window below {hi}"
                    ));
                }
            }
        }
        if hi > 0 && !ids.bit(hi) {
            return Err(format!("highest request id {hi} not marked as used"));
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_may_arrive_out_of_order_but_are_used_once() {
        let mut r = RequestIds::default();
        assert!(r.is_used(0));
        for id in [3u64, 1, 2, 7] {
            assert!(!r.is_used(id), "{id}");
            r.mark(id);
            assert!(r.is_used(id));
        }
        assert!(!r.is_used(5));
        assert_eq!(r.used_runs(), vec![(1, 3), (7, 1)]);
        r.mark(7 + WINDOW);
        assert!(r.is_used(7), "too old");
        assert!(r.is_used(5), "too old, never used");
        assert!(!r.is_used(8 + WINDOW - 2));
        let back = RequestIds::restore(r.hi(), &r.used_runs()).unwrap();
        assert_eq!(back, r);
        assert!(RequestIds::restore(3, &[(1, 4)]).is_err());
        assert!(RequestIds::restore(3, &[(1, 2)]).is_err(), "hi unused");
    }
}
