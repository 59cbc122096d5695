//! Per-client request budgets: token buckets keyed by who is asking ([`RateKey`]).
//!
//! Who is asking: an authenticated request spends its *account's* budget, whichever of the
//! account's tokens it carries and however it spells `Bearer`; every other request, and
//! every call of the token endpoint whatever credentials it carries, spends its peer
//! address's budget. Keying by the raw `Authorization` header (as before) gave one client
//! a fresh budget per token, per spelling of the scheme and per Basic credential string.
//!
//! Memory is bounded: each of the [`SHARDS`] shards holds at most `max_keys / SHARDS`
//! buckets. A shard that is full when a new key arrives first forgets the buckets that have
//! refilled completely (a fresh bucket is full, so forgetting those changes no answer), and
//! if none has, the eighth of its buckets holding the most tokens: forgetting a bucket
//! gives its key back what it has spent, so the keys forgotten are those that spent least
//! (a flood of new keys, one request each, forgets its own buckets first, never the budget
//! of a client that has been using its own). Clearing the whole shard, as before, let
//! anyone reset every client's limit by sending requests with many different keys.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::time::Instant;

use parking_lot::Mutex;

/// Shards of the bucket table (a request locks one).
pub const SHARDS: usize = 16;
/// Buckets kept by default, all shards together (about 64 bytes each).
pub const DEFAULT_MAX_KEYS: usize = 131_072;
/// One token, in the micro-tokens buckets count in (integers only).
const MICRO: u64 = 1_000_000;

/// Whose budget a request spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// An authenticated caller: every token of the account shares one budget.
    Account(u32),
    /// Anyone else, by peer address: an IPv4 address, or an IPv6 peer's /64 (the block one
    /// host or one subscriber usually holds, so an IPv6 client cannot pick a fresh address
    /// per request). `None` when the server runs without peer addresses (in-process tests).
    Peer(Option<IpAddr>),
}

impl RateKey {
    /// The key of an unauthenticated request from `ip`.
    pub fn peer(ip: Option<IpAddr>) -> RateKey {
        RateKey::Peer(ip.map(client_address))
    }
}

/// The address a client is counted by: an IPv4 address as it is (an IPv4-mapped IPv6
/// address as its IPv4 one), an IPv6 address as its /64, the block one host or one
/// subscriber usually holds, so that a client cannot pick a fresh address per request or
/// per connection. Shared by the rate limit ([`RateKey::peer`]) and the bound on
/// connections per address ([`crate::connections`]).
pub fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Micro-tokens at `last`.
    tokens: u64,
    last: Instant,
}

#[derive(Debug, Default)]
struct Shard {
    buckets: HashMap<RateKey, Bucket>,
    /// Reused by eviction (refilled levels), so a full shard does not allocate each time.
    scratch: Vec<u64>,
}

/// Token buckets per [`RateKey`]: `per_sec` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: u64,
    /// Bucket capacity in micro-tokens.
    cap: u64,
    max_per_shard: usize,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

impl RateLimiter {
    /// `per_sec` 0 turns limits off; `burst` is at least 1.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self::with_max_keys(per_sec, burst, DEFAULT_MAX_KEYS)
    }

    /// [`RateLimiter::new`] keeping at most `max_keys` buckets (at least one per shard).
    pub fn with_max_keys(per_sec: u32, burst: u32, max_keys: usize) -> Self {
        RateLimiter {
            per_sec: u64::from(per_sec),
            cap: u64::from(burst.max(1)) * MICRO,
            max_per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Whether limits apply at all (`per_sec` 0: off).
    pub fn enabled(&self) -> bool {
        self.per_sec != 0
    }

    /// Buckets held now (all shards).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().buckets.len()).sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes one token of `key`'s bucket: `Ok` to proceed, `Err(seconds)` to wait.
    pub fn check(&self, key: RateKey) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: RateKey, now: Instant) -> Result<(), u64> {
        if self.per_sec == 0 {
            return Ok(());
        }
        let i = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        let mut shard = self.shards[i].lock();
        if shard.buckets.len() >= self.max_per_shard && !shard.buckets.contains_key(&key) {
            self.evict(&mut shard, now);
        }
        let bucket = shard.buckets.entry(key).or_insert(Bucket {
            tokens: self.cap,
            last: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.last = now;
        if bucket.tokens >= MICRO {
            bucket.tokens -= MICRO;
            Ok(())
        } else {
            let wait_us = (MICRO - bucket.tokens).div_ceil(self.per_sec);
            Err(wait_us.div_ceil(1_000_000).max(1))
        }
    }

    /// A bucket's micro-tokens at `now`.
    fn refilled(&self, b: &Bucket, now: Instant) -> u64 {
        let elapsed_us =
            u64::try_from(now.saturating_duration_since(b.last).as_micros()).unwrap_or(u64::MAX);
        b.tokens
            .saturating_add(elapsed_us.saturating_mul(self.per_sec))
            .min(self.cap)
    }

    /// Makes room in a full shard (see the module doc): the full buckets go, then, if none
    /// was, the eighth holding the most tokens. Runs once per `max_per_shard / 8` new keys
    /// at most, so its cost per request stays constant.
    fn evict(&self, shard: &mut Shard, now: Instant) {
        shard
            .buckets
            .retain(|_, b| self.refilled(b, now) < self.cap);
        if shard.buckets.len() < self.max_per_shard {
            return;
        }
        let Shard { buckets, scratch } = shard;
        scratch.clear();
        scratch.extend(buckets.values().map(|b| self.refilled(b, now)));
        let k = scratch.len() - 1 - scratch.len() / 8;
        let (_, &mut floor, _) = scratch.select_nth_unstable(k);
        // At least `len / 8 + 1` buckets hold `floor` or more.
        buckets.retain(|_, b| self.refilled(b, now) < floor);
        debug_assert!(buckets.len() < self.max_per_shard);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let r = RateLimiter::new(2, 3);
        let t0 = Instant::now();
        let k = RateKey::Account(1);
        for _ in 0..3 {
            assert_eq!(r.check_at(k, t0), Ok(()));
        }
        assert_eq!(r.check_at(k, t0), Err(1));
        // Another key has its own budget.
        assert_eq!(r.check_at(RateKey::Account(2), t0), Ok(()));
        // Two tokens a second: one more after half a second.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(r.check_at(k, t1), Ok(()));
        assert_eq!(r.check_at(k, t1), Err(1));
        assert!(RateLimiter::new(0, 1).check(k).is_ok());
    }

    #[test]
    fn ipv6_peers_share_their_64_and_mapped_ipv4_is_ipv4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        let peer = |ip: Ipv6Addr| RateKey::peer(Some(IpAddr::V6(ip)));
        assert_eq!(peer(a), peer(b));
        assert_ne!(peer(a), peer(c));
        let v4 = Ipv4Addr::new(192, 0, 2, 7);
        assert_eq!(
            peer(v4.to_ipv6_mapped()),
            RateKey::peer(Some(IpAddr::V4(v4)))
        );
        assert_ne!(
            RateKey::peer(Some(IpAddr::V4(v4))),
            RateKey::peer(Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8))))
        );
    }

    /// The old table was cleared when a shard filled up: a flood of new keys gave every
    /// client, the flooder included, a fresh budget.
    #[test]
    fn a_flood_of_new_keys_does_not_reset_a_spent_budget() {
        let r = RateLimiter::with_max_keys(1, 5, 64);
        let t0 = Instant::now();
        let victim = RateKey::Account(7);
        while r.check_at(victim, t0).is_ok() {}
        for i in 0..10_000u32 {
            let _ = r.check_at(RateKey::Account(1_000 + i), t0);
            assert!(r.len() <= 64, "bounded: {}", r.len());
        }
        assert!(r.check_at(victim, t0).is_err(), "still limited");
    }

    #[test]
    fn a_full_shard_forgets_refilled_buckets_first() {
        let r = RateLimiter::with_max_keys(1, 2, SHARDS);
        let t0 = Instant::now();
        // Find two keys of one shard (one bucket per shard).
        let shard = |k: RateKey| r.hasher.hash_one(k) % SHARDS as u64;
        let a = RateKey::Account(0);
        let b = (1..)
            .map(RateKey::Account)
            .find(|k| shard(*k) == shard(a))
            .unwrap();
        assert!(r.check_at(a, t0).is_ok());
        assert!(r.check_at(a, t0).is_ok());
        assert!(r.check_at(a, t0).is_err());
        // Two seconds later `a` is full again: forgotten for `b`, and nothing is lost.
        let t1 = t0 + Duration::from_secs(2);
        assert!(r.check_at(b, t1).is_ok());
        assert_eq!(r.len(), 1);
        assert!(r.check_at(a, t1).is_ok());
    }
}
