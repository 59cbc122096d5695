//! The hash for the order id table: locality for sequential ids.
//!
//! Order ids are assigned sequentially before sequencing, so orders placed close in time
//! have close ids. A general hash (FxHash) scatters them over the whole table: with a deep
//! book every new order's lookup is a cache miss. This hash keeps the id itself in the low
//! bits (the bucket index), so neighbouring ids share cache lines, and puts mixed bits in the
//! top seven (the tag the table compares first), so probing stays selective.
//!
//! Deterministic (no random seed), like everything in the engine. An adversarial id pattern
//! (a large power-of-two stride) would cluster; ids never come from clients.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Bits of the id kept verbatim.
const LOW_BITS: u32 = 57;
const LOW_MASK: u64 = (1 << LOW_BITS) - 1;
const K: u64 = 0xf135_7aea_2e62_a9c5;

/// See the module doc.
#[derive(Clone, Copy, Debug, Default)]
pub struct SequentialIdHasher(u64);

impl Hasher for SequentialIdHasher {
    fn finish(&self) -> u64 {
        let x = self.0;
        (x & LOW_MASK) | (x.wrapping_mul(K) & !LOW_MASK)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(K);
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
}

/// A map keyed by sequentially assigned ids.
pub type SequentialIdMap<K, V> = HashMap<K, V, BuildHasherDefault<SequentialIdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OrderId;
    use std::hash::BuildHasher;

    fn hash(id: OrderId) -> u64 {
        BuildHasherDefault::<SequentialIdHasher>::default().hash_one(id)
    }

    #[test]
    fn neighbouring_ids_get_neighbouring_buckets_and_varied_tags() {
        assert_eq!(hash(OrderId(1001)) & LOW_MASK, 1001);
        assert_eq!(hash(OrderId(1002)) & LOW_MASK, 1002);
        let tags: std::collections::HashSet<u64> =
            (0..1000).map(|i| hash(OrderId(i)) >> LOW_BITS).collect();
        assert!(tags.len() > 100, "tags spread: {}", tags.len());
    }

    #[test]
    fn map_works_with_inserts_and_removes() {
        let mut m: SequentialIdMap<OrderId, u32> = SequentialIdMap::default();
        for i in 0..10_000u64 {
            m.insert(OrderId(i), i as u32);
            if i >= 100 {
                assert_eq!(m.remove(&OrderId(i - 100)), Some((i - 100) as u32));
            }
        }
        assert_eq!(m.len(), 100);
        assert_eq!(m.get(&OrderId(9_950)), Some(&9_950));
    }
}
