//! The history listener's open orders, in a map that never holds up the engine thread to
//! grow.
//!
//! A single `HashMap` of every open order doubles its table when it fills and moves every
//! entry in that one insert. The history listener runs on the engine thread, so every reply
//! waited behind the move: with ~200-byte records the step at 229,000 open orders took
//! ~70 ms, and `bourse bench http --no-cancel` (orders only rest, so they pile up) showed a
//! maximum latency of 74-77 ms in every 8 s run, against 18-23 ms with the table pre-sized.
//! Here the orders are spread over [`SHARDS`] tables by id and boxed, so one growth step
//! moves a 64th of the entries at 16 bytes each: about 250 KB at a million open orders.

use std::collections::HashMap;

use crate::model::OrderRec;

/// Tables the orders are spread over (a power of two: the shard is the id's low bits, and
/// order ids are handed out in sequence, so the shards fill evenly).
pub const SHARDS: usize = 64;

/// Open orders by id.
#[derive(Debug)]
pub struct OpenOrders {
    shards: Vec<HashMap<u64, Box<OrderRec>>>,
}

impl Default for OpenOrders {
    fn default() -> Self {
        OpenOrders {
            shards: (0..SHARDS).map(|_| HashMap::new()).collect(),
        }
    }
}

fn shard(id: u64) -> usize {
    (id % SHARDS as u64) as usize
}

impl OpenOrders {
    /// Adds (or replaces) the order `id`.
    pub fn insert(&mut self, id: u64, order: OrderRec) {
        self.shards[shard(id)].insert(id, Box::new(order));
    }

    pub fn get(&self, id: &u64) -> Option<&OrderRec> {
        self.shards[shard(*id)].get(id).map(|b| &**b)
    }

    pub fn get_mut(&mut self, id: &u64) -> Option<&mut OrderRec> {
        self.shards[shard(*id)].get_mut(id).map(|b| &mut **b)
    }

    pub fn remove(&mut self, id: &u64) -> Option<OrderRec> {
        self.shards[shard(*id)].remove(id).map(|b| *b)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }

    /// Entries in the fullest table (what the largest single growth step can move).
    pub fn largest_shard(&self) -> usize {
        self.shards.iter().map(HashMap::len).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{
        AccountId, Amount, ClientOrderId, OrderId, OrderKind, PairId, PlaceOrder, Price,
        SelfTradePrevention, Side, TimeInForce,
    };

    fn rec(id: u64) -> OrderRec {
        OrderRec::new(
            &PlaceOrder {
                id: OrderId(id),
                account: AccountId((id % 7) as u32),
                pair: PairId(0),
                side: if id.is_multiple_of(2) {
                    Side::Buy
                } else {
                    Side::Sell
                },
                kind: OrderKind::Limit {
                    price: Price(1_000 + id),
                    amount: Amount(1 + id % 5),
                    tif: TimeInForce::Gtc,
                    post_only: false,
                },
                stp: SelfTradePrevention::None,
                client_id: ClientOrderId::NONE,
            },
            i64::try_from(id).unwrap_or(0),
        )
    }

    /// The same answers as one `HashMap` through a pseudo-random mix of inserts, updates,
    /// reads and removals.
    #[test]
    fn behaves_like_one_map() {
        let mut sharded = OpenOrders::default();
        let mut reference: HashMap<u64, OrderRec> = HashMap::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next_id = 1u64;
        for _ in 0..60_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 10 {
                0..=4 => {
                    sharded.insert(next_id, rec(next_id));
                    reference.insert(next_id, rec(next_id));
                    next_id += 1;
                }
                5 | 6 => {
                    let id = 1 + x / 10 % next_id;
                    if let (Some(a), Some(b)) = (sharded.get_mut(&id), reference.get_mut(&id)) {
                        a.filled += 1;
                        b.filled += 1;
                    } else {
                        assert!(sharded.get(&id).is_none() && !reference.contains_key(&id));
                    }
                }
                7 | 8 => {
                    let id = 1 + x / 10 % next_id;
                    let a = sharded.remove(&id).map(|o| (o.id, o.filled));
                    let b = reference.remove(&id).map(|o| (o.id, o.filled));
                    assert_eq!(a, b);
                }
                _ => {
                    let id = 1 + x / 10 % next_id;
                    assert_eq!(
                        sharded.get(&id).map(|o| (o.id, o.filled, o.price)),
                        reference.get(&id).map(|o| (o.id, o.filled, o.price))
                    );
                }
            }
            assert_eq!(sharded.len(), reference.len());
        }
        assert!(sharded.len() > 1_000);
        for (id, o) in &reference {
            assert_eq!(sharded.get(id).map(|s| s.filled), Some(o.filled));
        }
    }

    /// Sequential ids spread evenly, so no table grows far beyond a 64th of the orders.
    #[test]
    fn sequential_ids_fill_the_shards_evenly() {
        let mut m = OpenOrders::default();
        assert!(m.is_empty());
        for id in 1..=64_000u64 {
            m.insert(id, rec(id));
        }
        assert_eq!(m.len(), 64_000);
        assert_eq!(m.largest_shard(), 1_000);
    }
}
