//! How many orders each account has open, for the per-account bound on them
//! (`max_open_orders_per_account`).
//!
//! Without it one account could fill a pair's book to the engine's `max_orders_per_book`
//! (ten million by default) with tiny resting orders, and from then on every other
//! account's resting order on that pair was refused with a 503: the book is shared, so its
//! bound is everybody's. The bound is an admission check, like the rate limit: a GTC order
//! (the only kind that can rest) from an account at the bound is refused before it is
//! journaled, so the journal and its replay never depend on it.
//!
//! The history listener counts an order open when the engine accepts it and closed when it
//! is done ([`OpenCounts::opened`], [`OpenCounts::closed`], on the engine thread, before the
//! order's reply). A GTC order takes a slot ([`OpenCounts::reserve`]) before it is
//! submitted and holds it with its clientId's reservation until the pipeline has processed
//! it (the reply runs after the listeners): while it is in flight it counts against the
//! bound too, so concurrent requests of one account cannot all pass the same check, and a
//! client that hangs up does not give its place back before its order is counted.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Tables the accounts are spread over, so that accounts trading at once rarely share a lock.
const SHARDS: usize = 16;

/// One account's open and in-flight GTC orders.
#[derive(Clone, Copy, Debug, Default)]
struct Count {
    open: u32,
    in_flight: u32,
}

/// Open orders per account.
#[derive(Debug)]
pub struct OpenCounts {
    shards: Vec<Mutex<HashMap<u32, Count>>>,
}

impl Default for OpenCounts {
    fn default() -> Self {
        OpenCounts {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// A GTC order's place under the bound, from its check to its reply.
#[derive(Debug)]
pub struct OpenSlot {
    counts: Arc<OpenCounts>,
    account: u32,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.counts.update(self.account, |c| {
            c.in_flight = c.in_flight.saturating_sub(1);
        });
    }
}

impl OpenCounts {
    fn shard(&self, account: u32) -> &Mutex<HashMap<u32, Count>> {
        &self.shards[account as usize % SHARDS]
    }

    /// Changes one account's count; an account with nothing open or in flight is dropped.
    fn update(&self, account: u32, f: impl FnOnce(&mut Count)) {
        let mut shard = self.shard(account).lock();
        let c = shard.entry(account).or_default();
        f(c);
        if c.open == 0 && c.in_flight == 0 {
            shard.remove(&account);
        }
    }

    /// The engine accepted an order of `account` (it may still be done in the same command).
    pub fn opened(&self, account: u32) {
        self.update(account, |c| c.open = c.open.saturating_add(1));
    }

    /// An open order of `account` is done (filled, cancelled, expired).
    pub fn closed(&self, account: u32) {
        self.update(account, |c| c.open = c.open.saturating_sub(1));
    }

    /// The account's open orders.
    pub fn open(&self, account: u32) -> u32 {
        self.shard(account)
            .lock()
            .get(&account)
            .map_or(0, |c| c.open)
    }

    /// A slot for one more GTC order of `account`, unless its open and in-flight orders
    /// already reach `max`.
    pub fn reserve(self: &Arc<Self>, account: u32, max: u32) -> Option<OpenSlot> {
        let mut shard = self.shard(account).lock();
        let c = shard.entry(account).or_default();
        if c.open.saturating_add(c.in_flight) >= max {
            if c.open == 0 && c.in_flight == 0 {
                shard.remove(&account);
            }
            return None;
        }
        c.in_flight += 1;
        Some(OpenSlot {
            counts: self.clone(),
            account,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_and_open_orders_both_count_and_a_slot_frees_on_drop() {
        let counts = Arc::new(OpenCounts::default());
        let a = counts.reserve(7, 2).expect("first");
        let b = counts.reserve(7, 2).expect("second");
        assert!(counts.reserve(7, 2).is_none(), "two in flight");
        assert!(counts.reserve(8, 2).is_some(), "another account");
        // The first rests (counted open before its reply), the second is done at once.
        counts.opened(7);
        drop(a);
        counts.opened(7);
        counts.closed(7);
        drop(b);
        assert_eq!(counts.open(7), 1);
        let c = counts.reserve(7, 2).expect("one open, none in flight");
        assert!(counts.reserve(7, 2).is_none());
        drop(c);
        counts.closed(7);
        assert_eq!(counts.open(7), 0);
        assert!(
            counts.shards.iter().all(|s| s.lock().is_empty()),
            "nothing kept"
        );
        assert!(counts.reserve(7, 0).is_none(), "a bound of 0 takes nothing");
    }
}
