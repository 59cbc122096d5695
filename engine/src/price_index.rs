//! An ordered map from price (ticks) to a level slot, with O(1) insert, remove, min and max.
//!
//! A 64-ary trie of fixed depth 7 over the 42-bit price space: each node holds a 64-bit
//! occupancy mask and 64 child slots, so every operation is at most 7 steps of
//! `trailing_zeros`/`leading_zeros`, whatever the number of levels. Nodes live in one
//! arena with a free list: once the book is warm, adding and removing levels allocates
//! nothing (a `BTreeMap` would allocate on node splits).
//!
//! # The leaf cache
//! A book's activity is near its best prices, so consecutive operations nearly always land
//! in one of two leaves (64 consecutive ticks each: a side's best prices straddle a leaf
//! boundary as often as not). The index remembers the last two leaves an insert or a
//! remove walked to; `get`, `insert` and `remove` in those leaves skip the six levels above
//! (in `bourse bench engine`, the walk from the root was most of a book insert's cost; one
//! cached leaf missed 30 % of the book's level lookups, two miss 13 %). A cached leaf is always
//! live and non-empty: a remove that empties a leaf takes the full path, which frees it and
//! forgets it.

use crate::price::MAX_PRICE_TICKS;

const BITS: u32 = 6;
const DEPTH: usize = 7;
const NONE: u32 = u32::MAX;

#[derive(Clone)]
struct Node {
    mask: u64,
    slots: [u32; 64],
}

impl Node {
    const EMPTY: Node = Node {
        mask: 0,
        slots: [NONE; 64],
    };
}

/// Price to slot map, ordered by price.
#[derive(Clone)]
pub struct PriceIndex {
    nodes: Vec<Node>,
    free: Vec<u32>,
    len: usize,
    /// `key >> BITS` of the keys in each cached leaf ([`NO_LEAF`]: none), most recent first.
    leaf_prefix: [u64; 2],
    /// The cached leaves' nodes (live, non-empty leaves where `leaf_prefix` is set).
    leaf: [u32; 2],
}

/// No cached leaf: above every key's prefix.
const NO_LEAF: u64 = u64::MAX;

impl std::fmt::Debug for PriceIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriceIndex")
            .field("len", &self.len)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Default for PriceIndex {
    fn default() -> Self {
        Self::new()
    }
}

fn digit(key: u64, depth: usize) -> usize {
    ((key >> (BITS * (DEPTH - 1 - depth) as u32)) & 63) as usize
}

impl PriceIndex {
    pub fn new() -> Self {
        PriceIndex {
            nodes: vec![Node::EMPTY],
            free: Vec::new(),
            len: 0,
            leaf_prefix: [NO_LEAF; 2],
            leaf: [0; 2],
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Arena nodes in use or free (for capacity planning and tests).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn alloc(&mut self) -> u32 {
        if let Some(n) = self.free.pop() {
            n
        } else {
            self.nodes.push(Node::EMPTY);
            // Keep the free list able to take every node back without growing.
            if self.free.capacity() < self.nodes.len() {
                self.free.reserve(self.nodes.capacity() - self.free.len());
            }
            (self.nodes.len() - 1) as u32
        }
    }

    /// The cached leaf, if `key` belongs to it.
    #[inline]
    fn cached_leaf(&self, key: u64) -> Option<usize> {
        let prefix = key >> BITS;
        if prefix == self.leaf_prefix[0] {
            Some(self.leaf[0] as usize)
        } else if prefix == self.leaf_prefix[1] {
            Some(self.leaf[1] as usize)
        } else {
            None
        }
    }

    /// Caches leaf `node` for `prefix` (not cached yet), dropping the older entry.
    #[inline]
    fn remember_leaf(&mut self, prefix: u64, node: u32) {
        debug_assert!(!self.leaf_prefix.contains(&prefix));
        self.leaf_prefix[1] = self.leaf_prefix[0];
        self.leaf[1] = self.leaf[0];
        self.leaf_prefix[0] = prefix;
        self.leaf[0] = node;
    }

    /// Forgets the cached leaf for `prefix`, if any (it is being freed).
    #[inline]
    fn forget_leaf(&mut self, prefix: u64) {
        for p in &mut self.leaf_prefix {
            if *p == prefix {
                *p = NO_LEAF;
            }
        }
    }

    /// The slot stored for `key`.
    #[inline]
    pub fn get(&self, key: u64) -> Option<u32> {
        if let Some(leaf) = self.cached_leaf(key) {
            let node = &self.nodes[leaf];
            let i = digit(key, DEPTH - 1);
            return (node.mask & (1 << i) != 0).then(|| node.slots[i]);
        }
        self.get_walk(key)
    }

    #[inline(never)]
    fn get_walk(&self, key: u64) -> Option<u32> {
        if key > MAX_PRICE_TICKS {
            return None;
        }
        let mut n = 0usize;
        for d in 0..DEPTH {
            let i = digit(key, d);
            let node = &self.nodes[n];
            if node.mask & (1 << i) == 0 {
                return None;
            }
            if d == DEPTH - 1 {
                return Some(node.slots[i]);
            }
            n = node.slots[i] as usize;
        }
        None
    }

    /// Stores `slot` for `key` (which must not be present).
    pub fn insert(&mut self, key: u64, slot: u32) {
        if let Some(leaf) = self.cached_leaf(key) {
            let i = digit(key, DEPTH - 1);
            let node = &mut self.nodes[leaf];
            assert!(node.mask & (1 << i) == 0, "price already indexed");
            node.mask |= 1 << i;
            node.slots[i] = slot;
            self.len += 1;
            return;
        }
        assert!(key <= MAX_PRICE_TICKS, "price outside the index");
        let mut n = 0usize;
        for d in 0..DEPTH {
            let i = digit(key, d);
            if d == DEPTH - 1 {
                let node = &mut self.nodes[n];
                assert!(node.mask & (1 << i) == 0, "price already indexed");
                node.mask |= 1 << i;
                node.slots[i] = slot;
                self.len += 1;
                self.remember_leaf(key >> BITS, n as u32);
                return;
            }
            if self.nodes[n].mask & (1 << i) == 0 {
                let child = self.alloc();
                let node = &mut self.nodes[n];
                node.mask |= 1 << i;
                node.slots[i] = child;
            }
            n = self.nodes[n].slots[i] as usize;
        }
    }

    /// Removes `key`, returning its slot.
    pub fn remove(&mut self, key: u64) -> Option<u32> {
        if let Some(leaf) = self.cached_leaf(key) {
            let i = digit(key, DEPTH - 1);
            let node = &mut self.nodes[leaf];
            let rest = node.mask & !(1 << i);
            if node.mask & (1 << i) == 0 {
                return None;
            }
            if rest != 0 {
                // The leaf stays: nothing above it changes.
                node.mask = rest;
                let slot = std::mem::replace(&mut node.slots[i], NONE);
                self.len -= 1;
                return Some(slot);
            }
            // The leaf empties: the full path frees it (and forgets the cache).
        }
        if key > MAX_PRICE_TICKS {
            return None;
        }
        let mut path = [0u32; DEPTH];
        let mut n = 0u32;
        for (d, step) in path.iter_mut().enumerate() {
            *step = n;
            let node = &self.nodes[n as usize];
            let i = digit(key, d);
            if node.mask & (1 << i) == 0 {
                return None;
            }
            if d < DEPTH - 1 {
                n = node.slots[i];
            }
        }
        let leaf = &mut self.nodes[path[DEPTH - 1] as usize];
        let i = digit(key, DEPTH - 1);
        let slot = leaf.slots[i];
        leaf.mask &= !(1 << i);
        leaf.slots[i] = NONE;
        self.len -= 1;
        if leaf.mask == 0 {
            self.forget_leaf(key >> BITS);
        } else if self.cached_leaf(key).is_none() {
            self.remember_leaf(key >> BITS, path[DEPTH - 1]);
        }
        // Free emptied nodes bottom-up (never the root).
        let mut d = DEPTH - 1;
        while d > 0 && self.nodes[path[d] as usize].mask == 0 {
            self.free.push(path[d]);
            let parent = &mut self.nodes[path[d - 1] as usize];
            let pi = digit(key, d - 1);
            parent.mask &= !(1 << pi);
            parent.slots[pi] = NONE;
            d -= 1;
        }
        Some(slot)
    }

    /// Descends from node `n` at depth `d` with key prefix `prefix`, always taking the
    /// lowest (or highest) child.
    fn extreme_from(
        &self,
        mut n: usize,
        mut d: usize,
        mut prefix: u64,
        lowest: bool,
    ) -> (u64, u32) {
        loop {
            let node = &self.nodes[n];
            debug_assert!(node.mask != 0);
            let i = if lowest {
                node.mask.trailing_zeros()
            } else {
                63 - node.mask.leading_zeros()
            } as usize;
            prefix = (prefix << BITS) | i as u64;
            if d == DEPTH - 1 {
                return (prefix, node.slots[i]);
            }
            n = node.slots[i] as usize;
            d += 1;
        }
    }

    /// The new lowest (`lowest`) or highest key after `removed`, which was the lowest or
    /// highest, was removed: the rest of its leaf when the leaf is cached (every other leaf
    /// holds only keys beyond it), else a walk from the root.
    #[inline]
    pub fn extreme_after_removing(&self, removed: u64, lowest: bool) -> Option<(u64, u32)> {
        if let Some(leaf) = self.cached_leaf(removed) {
            let node = &self.nodes[leaf];
            debug_assert!(node.mask != 0, "the cached leaf is never empty");
            let i = if lowest {
                node.mask.trailing_zeros()
            } else {
                63 - node.mask.leading_zeros()
            } as usize;
            return Some((((removed >> BITS) << BITS) | i as u64, node.slots[i]));
        }
        if lowest { self.min() } else { self.max() }
    }

    /// Lowest key and its slot.
    pub fn min(&self) -> Option<(u64, u32)> {
        if self.len == 0 {
            None
        } else {
            Some(self.extreme_from(0, 0, 0, true))
        }
    }

    /// Highest key and its slot.
    pub fn max(&self) -> Option<(u64, u32)> {
        if self.len == 0 {
            None
        } else {
            Some(self.extreme_from(0, 0, 0, false))
        }
    }

    /// Smallest key strictly above `key`.
    pub fn next_above(&self, key: u64) -> Option<(u64, u32)> {
        self.neighbour(key, true)
    }

    /// Largest key strictly below `key`.
    pub fn next_below(&self, key: u64) -> Option<(u64, u32)> {
        self.neighbour(key, false)
    }

    fn neighbour(&self, key: u64, above: bool) -> Option<(u64, u32)> {
        if self.len == 0 {
            return None;
        }
        if key > MAX_PRICE_TICKS {
            return if above { None } else { self.max() };
        }
        // Walk down the key's path as far as it exists.
        let mut path = [0u32; DEPTH];
        let mut depth_reached = 0;
        let mut n = 0u32;
        for (d, step) in path.iter_mut().enumerate() {
            *step = n;
            depth_reached = d;
            let node = &self.nodes[n as usize];
            let i = digit(key, d);
            if d == DEPTH - 1 || node.mask & (1 << i) == 0 {
                break;
            }
            n = node.slots[i];
        }
        // From the deepest node reached, look for a sibling on the wanted side, climbing up.
        let mut d = depth_reached as isize;
        while d >= 0 {
            let du = d as usize;
            let node = &self.nodes[path[du] as usize];
            let i = digit(key, du) as u32;
            let candidates = if above {
                if i == 63 {
                    0
                } else {
                    node.mask & (!0u64 << (i + 1))
                }
            } else if i == 0 {
                0
            } else {
                node.mask & ((1u64 << i) - 1)
            };
            if candidates != 0 {
                let j = if above {
                    candidates.trailing_zeros()
                } else {
                    63 - candidates.leading_zeros()
                } as u64;
                let shift = BITS * (DEPTH - du) as u32;
                let prefix = if shift >= 64 { 0 } else { key >> shift };
                let prefix = (prefix << BITS) | j;
                if du == DEPTH - 1 {
                    return Some((prefix, node.slots[j as usize]));
                }
                return Some(self.extreme_from(
                    node.slots[j as usize] as usize,
                    du + 1,
                    prefix,
                    above,
                ));
            }
            d -= 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The next value of a xorshift64 sequence, in place.
    fn xorshift(x: &mut u64) {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
    }

    #[test]
    fn ordered_operations_match_a_btreemap() {
        let mut index = PriceIndex::new();
        let mut model = BTreeMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for step in 0..20_000u32 {
            xorshift(&mut x);
            let key = if step % 3 == 0 {
                x & MAX_PRICE_TICKS
            } else {
                1_000_000 + (x % 5_000)
            };
            if let Some(slot) = model.remove(&key) {
                assert_eq!(index.remove(key), Some(slot));
            } else {
                index.insert(key, step);
                model.insert(key, step);
            }
            assert_eq!(index.len(), model.len());
            assert_eq!(index.min(), model.iter().next().map(|(k, v)| (*k, *v)));
            assert_eq!(index.max(), model.iter().next_back().map(|(k, v)| (*k, *v)));
            let probe = 1_000_000 + (x >> 20) % 5_000;
            assert_eq!(index.get(probe), model.get(&probe).copied());
            assert_eq!(
                index.next_above(probe),
                model.range(probe + 1..).next().map(|(k, v)| (*k, *v))
            );
            assert_eq!(
                index.next_below(probe),
                model.range(..probe).next_back().map(|(k, v)| (*k, *v))
            );
        }
        for k in model.keys().copied().collect::<Vec<_>>() {
            index.remove(k);
        }
        assert!(index.is_empty());
        assert_eq!(index.min(), None);
    }

    #[test]
    fn removing_the_extreme_finds_the_next_one_like_a_btreemap() {
        let mut index = PriceIndex::new();
        let mut model = BTreeMap::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for step in 0..20_000u32 {
            xorshift(&mut x);
            // Clustered keys (leaf cache hits and leaves emptied) with rare far ones.
            let key = if step % 50 == 0 {
                x & MAX_PRICE_TICKS
            } else {
                1_000_000 + (x % 300)
            };
            if let std::collections::btree_map::Entry::Vacant(e) = model.entry(key) {
                e.insert(step);
                index.insert(key, step);
                assert_eq!(index.get(key), Some(step));
            }
            if x.is_multiple_of(3) {
                let lowest = x.is_multiple_of(2);
                let (k, v) = if lowest {
                    model.pop_first().unwrap()
                } else {
                    model.pop_last().unwrap()
                };
                assert_eq!(index.remove(k), Some(v));
                assert_eq!(index.get(k), None);
                let expected = if lowest {
                    model.first_key_value()
                } else {
                    model.last_key_value()
                };
                assert_eq!(
                    index.extreme_after_removing(k, lowest),
                    expected.map(|(k, v)| (*k, *v))
                );
            }
            assert_eq!(index.len(), model.len());
        }
    }

    #[test]
    fn extremes_of_the_key_space() {
        let mut index = PriceIndex::new();
        index.insert(1, 10);
        index.insert(MAX_PRICE_TICKS, 20);
        assert_eq!(index.min(), Some((1, 10)));
        assert_eq!(index.max(), Some((MAX_PRICE_TICKS, 20)));
        assert_eq!(index.next_above(1), Some((MAX_PRICE_TICKS, 20)));
        assert_eq!(index.next_below(MAX_PRICE_TICKS), Some((1, 10)));
        assert_eq!(index.next_above(MAX_PRICE_TICKS), None);
        assert_eq!(index.next_below(1), None);
        assert_eq!(index.next_below(0), None);
    }
}
