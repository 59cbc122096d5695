//! The in-memory index of used idempotency keys (an order's `(account, clientId)`, a
//! request's `(account, externalId)`), spread over tables so that it never holds up the
//! engine thread to grow.
//!
//! The index holds a 64-bit hash ([`crate::state::client_key`]) of every key ever used and
//! only grows. In one table, an insert that fills it moves every entry into a table twice the
//! size, under the write lock, on the pipeline's engine thread: every reply and every market
//! data message waits behind it. With [`SHARDS`] tables chosen by the key's low bits (the key
//! is already a hash, so they fill evenly) one growth step moves a 64th of the entries, and a
//! reader locks only the table its key is in.

use std::collections::HashSet;

use parking_lot::RwLock;

/// Tables the keys are spread over (a power of two).
pub const SHARDS: usize = 64;

/// A set of used-key hashes.
#[derive(Debug)]
pub struct UsedKeys {
    shards: Vec<RwLock<HashSet<u64>>>,
}

impl Default for UsedKeys {
    fn default() -> Self {
        UsedKeys {
            shards: (0..SHARDS).map(|_| RwLock::new(HashSet::new())).collect(),
        }
    }
}

fn shard(key: u64) -> usize {
    (key % SHARDS as u64) as usize
}

impl UsedKeys {
    /// Records `key` as used.
    pub fn insert(&self, key: u64) {
        self.shards[shard(key)].write().insert(key);
    }

    /// Whether `key` was recorded.
    pub fn contains(&self, key: u64) -> bool {
        self.shards[shard(key)].read().contains(&key)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.read().is_empty())
    }

    /// Entries in the fullest table (what the largest single growth step can move).
    pub fn largest_shard(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().len())
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::client_key;

    #[test]
    fn keys_are_found_after_insert_and_only_then() {
        let used = UsedKeys::default();
        assert!(used.is_empty());
        let a = client_key(1, "order-1");
        let b = client_key(1, "order-2");
        let c = client_key(2, "order-1");
        used.insert(a);
        used.insert(c);
        used.insert(a);
        assert!(used.contains(a));
        assert!(!used.contains(b));
        assert!(used.contains(c));
        assert_eq!(used.len(), 2);
    }

    /// The keys of many accounts' sequential client ids spread evenly, so one growth step
    /// moves about a 64th of the index.
    #[test]
    fn hashed_keys_spread_evenly_over_the_tables() {
        let used = UsedKeys::default();
        let n = 64_000;
        for i in 0..n {
            used.insert(client_key(i % 128, &format!("b{}-{}", i % 128, i / 128)));
        }
        assert_eq!(used.len(), n as usize);
        let even = n as usize / SHARDS;
        assert!(
            used.largest_shard() < even + even / 5,
            "largest table {} of {} keys",
            used.largest_shard(),
            n
        );
    }
}
