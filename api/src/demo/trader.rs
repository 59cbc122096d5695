//! The simulated traders of one pair: a market maker that keeps a ladder of post-only quotes
//! around the drifting fair value (cancelling quotes the walk has left behind), and a taker that
//! now and then crosses the spread with a market order so that trades print.
//!
//! Everything goes through the public REST API. The rate is bounded by construction: one loop
//! per pair, at most `MAX_CHANGES` cancels plus `MAX_CHANGES` places per tick, one taker order
//! at most per tick.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::client::Client;
use super::market::Market;
use super::units;

/// How often a pair's loop runs.
pub const TICK: Duration = Duration::from_millis(250);
/// Quotes changed (cancelled, and separately placed) per tick at most.
const MAX_CHANGES: usize = 4;
/// How often the maker re-reads its open orders (learning which quotes were taken).
const RESYNC: Duration = Duration::from_secs(1);
/// A quote older than this is replaced (one per tick) so sizes keep changing.
const MAX_QUOTE_AGE: Duration = Duration::from_secs(20);

/// Counters shared by all pairs, for the status line.
#[derive(Debug, Default)]
pub struct Stats {
    pub placed: AtomicU64,
    pub cancelled: AtomicU64,
    pub taker_orders: AtomicU64,
    pub errors: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Buy,
    Sell,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

#[derive(Debug)]
struct Quote {
    id: String,
    placed: Instant,
}

/// One pair's maker and taker.
#[derive(Debug)]
pub struct PairTrader {
    market: Market,
    maker: Client,
    taker: Client,
    /// The maker's live quotes by (side, price ticks).
    quotes: BTreeMap<(Side, u64), Quote>,
    rng: StdRng,
    stats: Arc<Stats>,
    seq: u64,
    prefix: String,
}

impl PairTrader {
    pub fn new(market: Market, maker: Client, taker: Client, stats: Arc<Stats>, seed: u64) -> Self {
        let prefix = format!(
            "sim{}{}",
            market.pair.replace('_', ""),
            seed % 1_000_000 // keeps client ids unique across demo restarts on one data dir
        );
        PairTrader {
            market,
            maker,
            taker,
            quotes: BTreeMap::new(),
            rng: StdRng::seed_from_u64(seed),
            stats,
            seq: 0,
            prefix,
        }
    }

    fn client_id(&mut self, kind: &str) -> String {
        self.seq += 1;
        format!("{}-{kind}-{}", self.prefix, self.seq)
    }

    /// Runs forever (until the task is aborted).
    pub async fn run(mut self) {
        // Start with a full book at once rather than filling it 3 quotes per tick.
        self.resync().await;
        self.requote(usize::MAX).await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_resync = Instant::now();
        loop {
            tick.tick().await;
            self.market.step(&mut self.rng);
            if last_resync.elapsed() >= RESYNC {
                self.resync().await;
                last_resync = Instant::now();
            }
            self.requote(MAX_CHANGES).await;
            if self.rng.random_range(0..100) < 35 {
                self.take().await;
            }
        }
    }

    /// Replaces the quote list with the server's view of the maker's open orders.
    async fn resync(&mut self) {
        let Ok(open) = self.maker.open_orders(&self.market.pair).await else {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut quotes = BTreeMap::new();
        for o in open {
            let side = if o.side == "buy" {
                Side::Buy
            } else {
                Side::Sell
            };
            let Some(price) = o
                .price
                .as_deref()
                .and_then(|p| units::parse(p, self.market.price_decimals))
            else {
                continue;
            };
            let placed = self
                .quotes
                .get(&(side, price))
                .map_or_else(Instant::now, |q| q.placed);
            quotes.insert((side, price), Quote { id: o.id, placed });
        }
        self.quotes = quotes;
    }

    /// Cancels quotes off the wanted ladder (and one old quote), then fills missing rungs.
    async fn requote(&mut self, max_changes: usize) {
        let bids = self.market.bid_ladder();
        let asks = self.market.ask_ladder();
        let wanted = |side: Side, p: u64| match side {
            Side::Buy => bids.contains(&p),
            Side::Sell => asks.contains(&p),
        };
        // Stale first: those on the wrong side of the fair value, then the farthest.
        let fair = self.market.fair;
        let mut stale: Vec<(Side, u64)> = self
            .quotes
            .keys()
            .filter(|(s, p)| !wanted(*s, *p))
            .copied()
            .collect();
        stale.sort_by_key(|(s, p)| {
            let crossing = match s {
                Side::Buy => *p >= fair,
                Side::Sell => *p <= fair,
            };
            (!crossing, std::cmp::Reverse(p.abs_diff(fair)))
        });
        stale.truncate(max_changes);
        if stale.len() < max_changes
            && let Some((k, _)) = self
                .quotes
                .iter()
                .filter(|(_, q)| q.placed.elapsed() > MAX_QUOTE_AGE)
                .min_by_key(|(_, q)| q.placed)
            && !stale.contains(k)
        {
            stale.push(*k);
        }
        let cancels = stale
            .iter()
            .filter_map(|k| self.quotes.get(k).map(|q| q.id.clone()))
            .map(|id| {
                let maker = self.maker.clone();
                async move { maker.cancel(&id).await }
            });
        for r in join_all(cancels).await {
            match r {
                Ok(_) => {
                    self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                }
                // Taken (or cancelled) meanwhile: it is gone either way.
                Err(e) if e.code() == "ORDER_NOT_OPEN" || e.code() == "ORDER_NOT_FOUND" => {}
                Err(_) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for k in &stale {
            self.quotes.remove(k);
        }

        // Missing rungs, nearest the fair value first, alternating sides.
        let mut missing = Vec::new();
        for i in 0..bids.len().max(asks.len()) {
            for (side, ladder) in [(Side::Buy, &bids), (Side::Sell, &asks)] {
                if let Some(&p) = ladder.get(i)
                    && !self.quotes.contains_key(&(side, p))
                {
                    missing.push((side, p, i));
                }
            }
        }
        missing.truncate(max_changes);
        let mut orders = Vec::new();
        for &(side, p, level) in &missing {
            let lots = self.market.quote_lots(level, &mut self.rng);
            let body = json!({
                "pair": self.market.pair,
                "side": side.as_str(),
                "type": "limit",
                "price": self.market.price(p),
                "amount": self.market.amount(lots),
                "timeInForce": "GTC",
                "postOnly": true,
                "clientId": self.client_id("q"),
            });
            orders.push(body);
        }
        let placed = join_all(orders.iter().map(|b| self.maker.place(b))).await;
        for ((side, p, _), r) in missing.into_iter().zip(placed) {
            match r {
                Ok(o) if o.status == "open" || o.status == "partially_filled" => {
                    self.stats.placed.fetch_add(1, Ordering::Relaxed);
                    self.quotes.insert(
                        (side, p),
                        Quote {
                            id: o.id,
                            placed: Instant::now(),
                        },
                    );
                }
                Ok(_) => {
                    // Post-only rejected (the book moved through the price): try next tick.
                    self.stats.placed.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// A market order from the taker account, on a random side.
    async fn take(&mut self) {
        let side = if self.rng.random_bool(0.5) {
            Side::Buy
        } else {
            Side::Sell
        };
        let lots = self.market.taker_lots(&mut self.rng);
        let body = json!({
            "pair": self.market.pair,
            "side": side.as_str(),
            "type": "market",
            "amount": self.market.amount(lots),
            "clientId": self.client_id("t"),
        });
        match self.taker.place(&body).await {
            Ok(_) => {
                self.stats.taker_orders.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
