//! Criterion micro-benchmarks of the engine core: insert, cancel, and a taker sweeping N
//! levels, each on books already holding 10 / 1 000 / 100 000 / 1 000 000 resting orders
//! (placed 50 to 2 050 ticks from the mid, so the measured orders work at the top of a
//! deep book, where a real one is busiest). Timings cover only the measured commands
//! (`iter_custom`): the setup that keeps the depth constant is untimed.
//!
//! # What each one says (and does not)
//! - `insert` and `cancel` work on orders placed just before, near the mid: their order
//!   slots, id entries and levels are in cache, whatever the depth. They measure the
//!   instructions of the operation, which are the same at every depth (O(1): callgrind
//!   counts the same instructions per command at 10 and 1 000 000 resting), and should be
//!   flat. They were not while the order id table was a hash table reserved for the whole
//!   deep book (the cancel's lookup touched control bytes and a bucket spread over tens of
//!   MiB); with the direct-mapped id ring (`engine::id_window`) a recent id's entry sits
//!   next to its neighbours'. Measured after that change (2 cores, load 5-6, so +-20 %):
//!   insert 79 / 79 / 56 / 59 ns and cancel 59 / 34 / 38 / 37 ns at 10 / 1 000 / 100 000 /
//!   1 000 000 resting.
//! - `cancel_random` cancels a uniformly random order of the deep book (and, untimed, puts
//!   a new one at the same price so the depth stays constant). This is the honest cost of
//!   a cancel anywhere in a deep book: a cold order slot, its FIFO and account-list
//!   neighbours and its id entry are cache misses once the book is larger than the cache,
//!   so it grows with depth although the work does not. It is memory-bound, not
//!   algorithmic; the engine keeps it to a few lines per cancel (no scan, no probe chain).
//!   Same run: 48 / 84 / 203 ns at 1 000 / 100 000 / 1 000 000 (at 10 the batches are
//!   ten cancels long, so the timer's cost shows: ~110 ns).
//! - `sweep_N_levels` takes N levels of 2 orders each, placed just before (warm).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bench_harness::engine_bench::{MID_TICKS, PAIR, PREFILL_USERS, SplitMix, fresh_engine};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use engine::{AccountId, Amount, Command, Engine, Event, OrderId, PlaceOrder, Price, Side};

const DEPTHS: [usize; 4] = [10, 1_000, 100_000, 1_000_000];

fn limit(id: u64, account: u32, side: Side, price: u64, lots: u64) -> Command {
    Command::Place(PlaceOrder::limit(
        OrderId(id),
        AccountId(account),
        PAIR,
        side,
        Price(price),
        Amount(lots),
    ))
}

/// A book at `depth` plus the next free order id.
struct Bench {
    e: Engine,
    out: Vec<Event>,
    next_id: u64,
}

impl Bench {
    fn new(depth: usize) -> Bench {
        Bench {
            e: fresh_engine(8, depth, depth + 200_000),
            out: Vec::with_capacity(1 << 16),
            next_id: 10_000_000,
        }
    }
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
    fn apply(&mut self, c: &Command) {
        self.out.clear();
        self.e.apply(c, &mut self.out);
    }
}

const USER: u32 = PREFILL_USERS + 1;
const BATCH: u64 = 1_000;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1_200));
    for depth in DEPTHS {
        let mut b = Bench::new(depth);

        // Insert: a resting order near the mid (new and existing levels), then untimed cancel.
        group.bench_function(BenchmarkId::new("insert", depth), |bencher| {
            bencher.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                let mut placed = Vec::with_capacity(BATCH as usize);
                let mut left = iters;
                while left > 0 {
                    let n = left.min(BATCH);
                    left -= n;
                    placed.clear();
                    let cmds: Vec<Command> = (0..n)
                        .map(|i| {
                            let id = b.id();
                            placed.push(id);
                            let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
                            let off = 1 + i % 40;
                            let price = if side == Side::Buy {
                                MID_TICKS - off
                            } else {
                                MID_TICKS + off
                            };
                            limit(id, USER, side, price, 1 + i % 50)
                        })
                        .collect();
                    let start = Instant::now();
                    for c in &cmds {
                        b.apply(black_box(c));
                    }
                    took += start.elapsed();
                    for id in &placed {
                        b.apply(&Command::Cancel {
                            account: AccountId(USER),
                            order: OrderId(*id),
                        });
                    }
                }
                took
            })
        });

        // Cancel: orders placed untimed, cancels timed (middle of FIFO lists and whole levels).
        group.bench_function(BenchmarkId::new("cancel", depth), |bencher| {
            bencher.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(BATCH);
                    left -= n;
                    let mut cancels = Vec::with_capacity(n as usize);
                    for i in 0..n {
                        let id = b.id();
                        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
                        let off = 1 + i % 40;
                        let price = if side == Side::Buy {
                            MID_TICKS - off
                        } else {
                            MID_TICKS + off
                        };
                        b.apply(&limit(id, USER, side, price, 1 + i % 50));
                        cancels.push(Command::Cancel {
                            account: AccountId(USER),
                            order: OrderId(id),
                        });
                    }
                    // Cancel in a scrambled order.
                    let k = cancels.len();
                    for i in 0..k {
                        cancels.swap(i, (i * 7919) % k);
                    }
                    let start = Instant::now();
                    for c in &cancels {
                        b.apply(black_box(c));
                    }
                    took += start.elapsed();
                }
                took
            })
        });

        // Cancel (cold): random orders of the deep book, each replaced untimed by a new order
        // at the same price so the depth stays constant. Prefill ids are 1..=depth.
        let mut live: Vec<u64> = (1..=depth as u64).collect();
        let mut rng = SplitMix::new(11);
        group.bench_function(BenchmarkId::new("cancel_random", depth), |bencher| {
            bencher.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                let mut left = iters;
                let mut batch = Vec::with_capacity(BATCH as usize);
                while left > 0 {
                    let n = left.min(BATCH).min(live.len() as u64);
                    left -= n;
                    batch.clear();
                    for _ in 0..n {
                        let k = rng.below(live.len() as u64) as usize;
                        let id = OrderId(live.swap_remove(k));
                        let (_, o) = b.e.resting_order(id).expect("a live order");
                        batch.push((id, o.account, o.side, o.price, o.remaining));
                    }
                    let cancels: Vec<Command> = batch
                        .iter()
                        .map(|&(order, account, ..)| Command::Cancel { account, order })
                        .collect();
                    let start = Instant::now();
                    for c in &cancels {
                        b.apply(black_box(c));
                    }
                    took += start.elapsed();
                    for &(_, account, side, price, lots) in &batch {
                        let id = b.id();
                        b.apply(&limit(id, account.0, side, price.0, lots));
                        live.push(id);
                    }
                }
                took
            })
        });

        // Match: one taker sweeping `levels` ask levels of 2 orders each (placed untimed).
        for levels in [1u64, 10, 40] {
            group.bench_function(
                BenchmarkId::new(format!("sweep_{levels}_levels"), depth),
                |bencher| {
                    bencher.iter_custom(|iters| {
                        let mut took = Duration::ZERO;
                        for _ in 0..iters {
                            for l in 0..levels {
                                for _ in 0..2 {
                                    let id = b.id();
                                    b.apply(&limit(id, USER, Side::Sell, MID_TICKS + 1 + l, 10));
                                }
                            }
                            let id = b.id();
                            let taker =
                                limit(id, USER + 1, Side::Buy, MID_TICKS + levels, 20 * levels);
                            let start = Instant::now();
                            b.apply(black_box(&taker));
                            took += start.elapsed();
                            debug_assert!(matches!(b.out.last(), Some(Event::Done { .. })));
                        }
                        took
                    })
                },
            );
        }
        assert_eq!(
            b.e.resting_orders(),
            depth,
            "the benches keep the depth constant"
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
