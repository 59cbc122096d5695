//! `bourse bench engine`: replays a command stream through one book and reports throughput
//! and latency percentiles.
//!
//! Method: the stream is read (or generated) and turned into engine commands first, then
//! every repeat runs on a fresh engine with its currencies, pair, funded users and optional
//! pre-filled book set up untimed. Throughput is one `Instant` around the whole pass (no
//! per-command timer); latency is a second pass on another fresh engine timing each command
//! into an HDR histogram, so timer cost doesn't distort the throughput figure.
//!
//! The generated mix (seeded, so runs are comparable): adds around a drifting mid (~50 %),
//! cancels of live orders (~40 %), crossing limit orders (~5 %) and market orders (~5 %).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use engine::{
    AccountId, Amount, ClientOrderId, Command, CurrencyId, CurrencySpec, Engine, EngineLimits,
    Event, MarketSize, OrderId, OrderKind, PairId, PairSpec, PairStatus, PlaceOrder, Price,
    RequestId, RequestSpec, SelfTradePrevention, Side, TimeInForce,
};
use hdrhistogram::Histogram;

/// Options of `bourse bench engine`.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineBenchArgs {
    /// CSV command stream (`op,id,user,side,price,amount`); generated when absent.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Replays, each on a fresh book.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Commands to generate (without --input).
    #[arg(long, default_value_t = 2_000_000)]
    pub commands: usize,
    /// Resting orders placed (untimed) before each replay, away from the mid.
    #[arg(long, default_value_t = 0)]
    pub resting: usize,
    /// Seed of the generated mix.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Write the generated stream to this CSV file (to replay it with --input).
    #[arg(long)]
    pub save: Option<PathBuf>,
}

/// The figures `--json` prints.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineBenchReport {
    pub commands: u64,
    pub seconds: f64,
    pub commands_per_second: f64,
    pub ns_per_command: f64,
    pub trades: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// One line of the stream, as in the CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchOp {
    Limit {
        id: u64,
        user: u32,
        side: Side,
        price: u64,
        amount: u64,
    },
    Market {
        id: u64,
        user: u32,
        side: Side,
        amount: u64,
    },
    Cancel {
        id: u64,
    },
}

pub const MID_TICKS: u64 = 1_000_000;
pub const PAIR: PairId = PairId(0);
const BASE: CurrencyId = CurrencyId(0);
const QUOTE: CurrencyId = CurrencyId(1);
/// Users of the pre-filled book (the stream's users are 1..=n).
pub const PREFILL_USERS: u32 = 64;

/// splitmix64: a tiny seeded generator, so the mix is the same on every machine.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The seeded realistic mix: `n` operations by `users` users.
pub fn generate(n: usize, users: u32, seed: u64) -> Vec<BenchOp> {
    let mut rng = SplitMix::new(seed);
    let mut ops = Vec::with_capacity(n);
    let mut live: Vec<u64> = Vec::new();
    let mut mid = MID_TICKS;
    let mut next_id = 1u64;
    for i in 0..n {
        if i % 64 == 0 {
            // The mid drifts by a tick now and then.
            match rng.below(3) {
                0 => mid -= 1,
                1 => mid += 1,
                _ => {}
            }
        }
        let user = 1 + rng.below(u64::from(users)) as u32;
        let side = if rng.below(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        };
        let roll = rng.below(100);
        if roll < 40 && !live.is_empty() {
            // Cancel a live-looking order (it may have been filled meanwhile: a reject).
            let k = rng.below(live.len() as u64) as usize;
            ops.push(BenchOp::Cancel {
                id: live.swap_remove(k),
            });
            continue;
        }
        let id = next_id;
        next_id += 1;
        if roll < 90 {
            // Passive: 1 to ~40 ticks away, nearer more likely.
            let offset = 1 + rng.below(8) * rng.below(6);
            let price = match side {
                Side::Buy => mid - offset,
                Side::Sell => mid + offset,
            };
            live.push(id);
            ops.push(BenchOp::Limit {
                id,
                user,
                side,
                price,
                amount: 1 + rng.below(100),
            });
        } else if roll < 95 {
            // Crossing limit: through the spread by a few ticks, remainder rests.
            let through = rng.below(4);
            let price = match side {
                Side::Buy => mid + through,
                Side::Sell => mid - through,
            };
            live.push(id);
            ops.push(BenchOp::Limit {
                id,
                user,
                side,
                price,
                amount: 1 + rng.below(200),
            });
        } else {
            ops.push(BenchOp::Market {
                id,
                user,
                side,
                amount: 1 + rng.below(150),
            });
        }
    }
    ops
}

/// Parses the CSV stream (header `op,id,user,side,price,amount`).
pub fn parse_csv(text: &str) -> anyhow::Result<Vec<BenchOp>> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h))
            if h.trim()
                .eq_ignore_ascii_case("op,id,user,side,price,amount") => {}
        other => bail!("expected the header op,id,user,side,price,amount, got {other:?}"),
    }
    let mut ops = Vec::new();
    for (n, line) in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let at = || format!("line {}: {line}", n + 1);
        let field = |i: usize| f.get(i).copied().unwrap_or("");
        let int = |i: usize| -> anyhow::Result<u64> { field(i).parse::<u64>().with_context(at) };
        let side = || -> anyhow::Result<Side> {
            match field(3) {
                "buy" => Ok(Side::Buy),
                "sell" => Ok(Side::Sell),
                s => bail!("{}: side {s:?}", at()),
            }
        };
        let user = || -> anyhow::Result<u32> { u32::try_from(int(2)?).with_context(at) };
        ops.push(match field(0) {
            "limit" => BenchOp::Limit {
                id: int(1)?,
                user: user()?,
                side: side()?,
                price: int(4)?,
                amount: int(5)?,
            },
            "market" => BenchOp::Market {
                id: int(1)?,
                user: user()?,
                side: side()?,
                amount: int(5)?,
            },
            "cancel" => BenchOp::Cancel { id: int(1)? },
            op => bail!("{}: op {op:?}", at()),
        });
    }
    Ok(ops)
}

/// Writes ops as CSV.
pub fn to_csv(ops: &[BenchOp]) -> String {
    let mut s = String::from("op,id,user,side,price,amount\n");
    let side = |s: Side| if s == Side::Buy { "buy" } else { "sell" };
    for op in ops {
        let line = match *op {
            BenchOp::Limit {
                id,
                user,
                side: sd,
                price,
                amount,
            } => format!("limit,{id},{user},{},{price},{amount}\n", side(sd)),
            BenchOp::Market {
                id,
                user,
                side: sd,
                amount,
            } => format!("market,{id},{user},{},,{amount}\n", side(sd)),
            BenchOp::Cancel { id } => format!("cancel,{id},,,,\n"),
        };
        s.push_str(&line);
    }
    s
}

/// The stream as engine commands, plus how many users it has (mapped to 1..=n).
pub struct Prepared {
    pub commands: Vec<Command>,
    pub users: u32,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("commands", &self.commands.len())
            .field("users", &self.users)
            .finish()
    }
}

fn place(id: u64, user: AccountId, side: Side, kind: OrderKind) -> Command {
    Command::Place(PlaceOrder {
        id: OrderId(id),
        account: user,
        pair: PAIR,
        side,
        kind,
        stp: SelfTradePrevention::None,
        client_id: ClientOrderId::NONE,
    })
}

fn limit(price: u64, amount: u64, tif: TimeInForce) -> OrderKind {
    OrderKind::Limit {
        price: Price(price),
        amount: Amount(amount),
        tif,
        post_only: false,
    }
}

/// Maps users to dense account ids after the pre-fill users, order ids after the
/// pre-fill's, and cancels to their order's owner.
pub fn prepare(ops: &[BenchOp], id_offset: u64) -> Prepared {
    let mut users: HashMap<u32, AccountId> = HashMap::new();
    let mut owner: HashMap<u64, AccountId> = HashMap::new();
    let account = |u: u32, users: &mut HashMap<u32, AccountId>| {
        let n = users.len() as u32;
        *users.entry(u).or_insert(AccountId(PREFILL_USERS + 1 + n))
    };
    let mut commands = Vec::with_capacity(ops.len());
    for op in ops {
        commands.push(match *op {
            BenchOp::Limit {
                id,
                user,
                side,
                price,
                amount,
            } => {
                let a = account(user, &mut users);
                owner.insert(id, a);
                place(
                    id + id_offset,
                    a,
                    side,
                    limit(price, amount, TimeInForce::Gtc),
                )
            }
            BenchOp::Market {
                id,
                user,
                side,
                amount,
            } => {
                let a = account(user, &mut users);
                let kind = OrderKind::Market {
                    size: MarketSize::Base(Amount(amount)),
                };
                place(id + id_offset, a, side, kind)
            }
            BenchOp::Cancel { id } => Command::Cancel {
                account: owner
                    .get(&id)
                    .copied()
                    .unwrap_or(AccountId(PREFILL_USERS + 1)),
                order: OrderId(id + id_offset),
            },
        });
    }
    Prepared {
        commands,
        users: users.len() as u32,
    }
}

/// A fresh engine: the pair, every user funded, and `resting` orders 50 to ~2 000 ticks away
/// from the mid on both sides (a deep book the stream rarely reaches).
pub fn fresh_engine(users: u32, resting: usize, reserve: usize) -> Engine {
    let mut e = Engine::new(EngineLimits {
        reserve_orders_per_book: reserve,
        ..EngineLimits::default()
    });
    let mut out = Vec::new();
    let currency = |code: &str| CurrencySpec {
        code: code.into(),
        display_name: code.into(),
        decimals: 0,
    };
    let mut setup = vec![
        Command::AddCurrency(Box::new(currency("BASE"))),
        Command::AddCurrency(Box::new(currency("QUOTE"))),
        Command::AddPair(PairSpec {
            base: BASE,
            quote: QUOTE,
            price_decimals: 0,
            amount_decimals: 0,
            min_amount: Amount(1),
            maker_fee_ppm: 1_000,
            taker_fee_ppm: 2_000,
            status: PairStatus::Active,
        }),
    ];
    let accounts = PREFILL_USERS + users;
    // Each currency's supply is bounded at 2^62 minor units: share it.
    let each = (1u64 << 61) / u64::from(accounts);
    let mut request = 0u64;
    for a in 1..=accounts {
        for c in [BASE, QUOTE] {
            request += 1;
            setup.push(Command::DepositCredited(Box::new(RequestSpec {
                request: RequestId(request),
                account: AccountId(a),
                currency: c,
                amount: each,
                external_id: String::new(),
                destination: String::new(),
            })));
        }
    }
    for c in &setup {
        e.apply(c, &mut out);
    }
    let mut rng = SplitMix::new(7);
    for i in 0..resting {
        out.clear();
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        let offset = 50 + rng.below(2_000);
        let price = match side {
            Side::Buy => MID_TICKS - offset,
            Side::Sell => MID_TICKS + offset,
        };
        let user = AccountId(1 + (i as u32 % PREFILL_USERS));
        e.apply(
            &place(
                i as u64 + 1,
                user,
                side,
                limit(price, 1 + rng.below(100), TimeInForce::Gtc),
            ),
            &mut out,
        );
    }
    e
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {model}")
}

/// One timed pass: the whole stream, one clock read at each end. Never inlined, so a
/// profiler can count exactly this pass (`valgrind --tool=callgrind
/// --toggle-collect='*throughput_pass*'`).
#[inline(never)]
fn throughput_pass(engine: &mut Engine, commands: &[Command], out: &mut Vec<Event>) -> Duration {
    let start = Instant::now();
    for c in commands {
        out.clear();
        engine.apply(c, out);
    }
    start.elapsed()
}

/// One latency pass: each command timed on its own.
fn latency_pass(
    engine: &mut Engine,
    commands: &[Command],
    out: &mut Vec<Event>,
    hist: &mut Histogram<u64>,
) {
    for c in commands {
        out.clear();
        let start = Instant::now();
        engine.apply(c, out);
        let ns = start.elapsed().as_nanos() as u64;
        hist.saturating_record(ns.max(1));
    }
}

/// Runs the bench and returns its figures.
pub fn measure(
    args: &EngineBenchArgs,
    log: &mut dyn FnMut(String),
) -> anyhow::Result<EngineBenchReport> {
    let ops = match &args.input {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            parse_csv(&text)?
        }
        None => generate(args.commands, 1_000, args.seed),
    };
    if let Some(path) = &args.save {
        std::fs::write(path, to_csv(&ops))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let prepared = prepare(&ops, args.resting as u64);
    let reserve = args.resting + prepared.commands.len() / 2 + 1024;
    let mut out: Vec<Event> = Vec::with_capacity(4096);
    let mut total = Duration::ZERO;
    let mut trades = 0u64;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for r in 0..args.repeat.max(1) {
        let mut e = fresh_engine(prepared.users, args.resting, reserve);
        let before = e.next_trade_id().0;
        let took = throughput_pass(&mut e, &prepared.commands, &mut out);
        let pass_trades = e.next_trade_id().0 - before;
        trades += pass_trades;
        total += took;
        log(format!(
            "  repeat {}: {:.1} ns/command, {} trades, {} resting at the end",
            r + 1,
            ns_per(took, prepared.commands.len() as u64),
            pass_trades,
            e.resting_orders()
        ));
        drop(e);
        let mut e = fresh_engine(prepared.users, args.resting, reserve);
        latency_pass(&mut e, &prepared.commands, &mut out, &mut hist);
    }
    let commands = prepared.commands.len() as u64 * u64::from(args.repeat.max(1));
    let seconds = total.as_secs_f64();
    Ok(EngineBenchReport {
        commands,
        seconds,
        commands_per_second: per_second(commands, total),
        ns_per_command: ns_per(total, commands),
        trades,
        p50_ns: hist.value_at_quantile(0.50),
        p99_ns: hist.value_at_quantile(0.99),
        p999_ns: hist.value_at_quantile(0.999),
        max_ns: hist.max(),
    })
}

#[allow(clippy::float_arithmetic)]
fn per_second(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-12)
}

#[allow(clippy::float_arithmetic)]
fn ns_per(d: Duration, n: u64) -> f64 {
    d.as_nanos() as f64 / n.max(1) as f64
}

/// `bourse bench engine`.
pub fn run(args: EngineBenchArgs) -> anyhow::Result<()> {
    let json = args.json;
    let header = format!(
        "bourse bench engine\n  machine: {}\n  input: {}\n  repeat: {}, resting before each run: {}, seed: {}\n  \
         pair: 0.1 % maker / 0.2 % taker fees, STP none, one book on one thread",
        machine(),
        args.input
            .as_ref()
            .map_or(format!("generated mix, {} commands", args.commands), |p| p
                .display()
                .to_string()),
        args.repeat,
        args.resting,
        args.seed
    );
    // In JSON mode the human lines go to stderr so stdout is one object.
    let mut log = |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    log(header);
    let r = measure(&args, &mut log)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "  throughput: {} commands in {:.3} s = {:.0} commands/s, {:.1} ns/command, {} trades",
            r.commands, r.seconds, r.commands_per_second, r.ns_per_command, r.trades
        );
        println!(
            "  latency (separate pass, per command): p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
            r.p50_ns, r.p99_ns, r.p999_ns, r.max_ns
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_and_cancels_find_their_owner() {
        let ops = generate(2_000, 10, 1);
        let parsed = parse_csv(&to_csv(&ops)).unwrap();
        assert_eq!(parsed, ops);
        let p = prepare(&parsed, 0);
        for c in &p.commands {
            if let Command::Cancel { account, .. } = c {
                assert!(account.0 > PREFILL_USERS);
            }
        }
    }

    #[test]
    fn generated_mix_has_the_advertised_shape() {
        let ops = generate(100_000, 100, 3);
        let cancels = ops
            .iter()
            .filter(|o| matches!(o, BenchOp::Cancel { .. }))
            .count();
        let markets = ops
            .iter()
            .filter(|o| matches!(o, BenchOp::Market { .. }))
            .count();
        assert!((35_000..45_000).contains(&cancels), "{cancels}");
        assert!((4_000..6_000).contains(&markets), "{markets}");
    }

    #[test]
    fn a_small_run_trades_and_keeps_the_engine_consistent() {
        let args = EngineBenchArgs {
            input: None,
            repeat: 1,
            json: true,
            commands: 20_000,
            resting: 1_000,
            seed: 9,
            save: None,
        };
        let r = measure(&args, &mut |_| {}).unwrap();
        assert_eq!(r.commands, 20_000);
        assert!(r.trades > 100);
        assert!(r.p50_ns > 0 && r.p50_ns <= r.p99_ns && r.p99_ns <= r.max_ns);
        let ops = generate(20_000, 1_000, 9);
        let p = prepare(&ops, 1_000);
        let mut e = fresh_engine(p.users, 1_000, 0);
        let mut out = Vec::new();
        for c in &p.commands {
            out.clear();
            e.apply(c, &mut out);
            assert!(
                !out.iter().any(|ev| matches!(ev, Event::Rejected { .. })),
                "{c:?} {out:?}"
            );
        }
        e.check_invariants().unwrap();
    }
}
