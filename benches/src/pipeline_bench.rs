//! `bourse bench pipeline`: commands through the whole durable pipeline (rings, sequencer,
//! engine, journal with group commit, replies), from a few submitting threads.
//!
//! Each submitter keeps at most `--window` commands in flight (a closed loop, like clients
//! waiting for their answers), so the acknowledgement latency measures the pipeline and not
//! an ever-growing queue. The acknowledgement is the reply closure, which the engine thread
//! runs after the batch is durable; latency is from just before `submit` to the reply.
//!
//! With `--rate R` the submitters offer R commands/s in all (an open loop, still capped by the
//! window): each command has a scheduled time and its latency is measured from that time, so
//! a stall counts against every command it delays (no coordinated omission). This answers
//! "what is the p99 acknowledgement at 300,000 durable commands/s", which the closed loop,
//! whose latency is set by the window (Little's law), does not.
//!
//! `--replay` then restarts from the journal alone (snapshots removed) and reports the replay
//! speed and the restart time: run it with `--commands 10000000` for the 10-million restart
//! figure.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engine::pipeline::{NullListener, Pipeline, PipelineConfig, Processed, SubmitError};
use engine::{
    AccountId, Amount, Command, CurrencyId, CurrencySpec, OrderId, PairId, PairSpec, PairStatus,
    PlaceOrder, Price, RequestId, RequestSpec, Side,
};
use feed::bench::DurabilityArg;
use hdrhistogram::Histogram;
use std::sync::Mutex;

/// Options of `bourse bench pipeline`.
#[derive(clap::Args, Debug, Clone)]
pub struct PipelineBenchArgs {
    #[arg(long, value_enum, default_value = "fsync")]
    pub durability: DurabilityArg,
    /// Commands to run (orders and cancels), after the setup.
    #[arg(long, default_value_t = 2_000_000)]
    pub commands: u64,
    /// Submitting threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Most commands in flight per submitting thread.
    #[arg(long, default_value_t = 8192)]
    pub window: u64,
    /// Offered load in commands/s over all submitters (0: a closed loop, as fast as the window
    /// allows). Latency is then measured from each command's scheduled time.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Most commands per group-commit batch.
    #[arg(long, default_value_t = 4096)]
    pub batch_max: usize,
    /// Slots per ring.
    #[arg(long, default_value_t = 65_536)]
    pub ring_capacity: usize,
    /// Snapshot every N commands (0: only at shutdown).
    #[arg(long, default_value_t = 0)]
    pub snapshot_every: u64,
    /// Pairs to spread orders over.
    #[arg(long, default_value_t = 2)]
    pub pairs: u16,
    /// Where the journal goes (default: a fresh directory under the temp dir, removed after).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the data directory.
    #[arg(long)]
    pub keep: bool,
    /// Afterwards, restart from the journal alone and measure replay and restart time.
    #[arg(long)]
    pub replay: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

const ACCOUNTS: u32 = 1000;

struct Sink {
    latency_ns: Mutex<Histogram<u64>>,
    done: Vec<AtomicU64>,
}

fn rng_next(s: &mut u64) -> u64 {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn setup_commands(pairs: u16) -> Vec<Command> {
    let mut v = Vec::new();
    let currencies = pairs + 1;
    for c in 0..currencies {
        v.push(Command::AddCurrency(Box::new(CurrencySpec {
            code: format!("C{c}"),
            display_name: format!("Currency {c}"),
            decimals: 8,
        })));
    }
    for p in 0..pairs {
        v.push(Command::AddPair(PairSpec {
            base: CurrencyId(p + 1),
            quote: CurrencyId(0),
            price_decimals: 2,
            amount_decimals: 4,
            min_amount: Amount(1),
            maker_fee_ppm: 1000,
            taker_fee_ppm: 2000,
            status: PairStatus::Active,
        }));
    }
    let mut request = 1;
    for a in 1..=ACCOUNTS {
        for c in 0..currencies {
            v.push(Command::DepositCredited(Box::new(RequestSpec {
                request: RequestId(request),
                account: AccountId(a),
                currency: CurrencyId(c),
                amount: 1 << 52,
                external_id: format!("bench-{request}"),
                destination: String::new(),
            })));
            request += 1;
        }
    }
    v
}

/// The `i`-th command of submitter `t`: limit orders around a fixed mid (half of them
/// crossing, so books stay small) and cancels of its own recent orders.
fn command(t: u64, threads: u64, i: u64, rng: &mut u64, pairs: u16) -> Command {
    let r = rng_next(rng);
    let account = AccountId(1 + (r % u64::from(ACCOUNTS)) as u32);
    if i > 16 && r.is_multiple_of(10) {
        let back = 1 + (r >> 20) % 16;
        return Command::Cancel {
            account,
            order: OrderId((i - back) * threads + t + 1),
        };
    }
    let side = if (r >> 8) & 1 == 0 {
        Side::Buy
    } else {
        Side::Sell
    };
    let offset = (r >> 10) % 100;
    let price = 1_000_000 - 50 + offset;
    Command::Place(PlaceOrder::limit(
        OrderId(i * threads + t + 1),
        account,
        PairId(((r >> 32) % u64::from(pairs)) as u16),
        side,
        Price(price),
        Amount(1 + (r >> 40) % 100),
    ))
}

/// Submits a command whose outcome nobody waits for (setup), retrying while busy.
fn submit_retrying(p: &Pipeline, c: Command, busy: &mut u64) {
    loop {
        match p.submit(c.clone(), Box::new(|_: &Processed<'_>| {})) {
            Ok(()) => return,
            Err(SubmitError::Busy) => {
                *busy += 1;
                std::thread::yield_now();
            }
            Err(SubmitError::Stopped) => panic!("pipeline stopped"),
        }
    }
}

/// Waits until `at` by sleeping. A sleep oversleeps by some tens of microseconds; the commands
/// that came due meanwhile are then submitted back to back, and their latency still counts
/// from their scheduled times. Spinning or yielding instead would keep both submitters on the
/// two cores and starve the pipeline threads the bench is measuring.
fn wait_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

fn machine() -> (usize, String) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    (cores, model)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn per_s(n: u64, d: Duration) -> u64 {
    (u128::from(n) * 1_000_000 / d.as_micros().max(1)) as u64
}

/// Runs the bench and prints its report.
pub fn run(args: PipelineBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.threads >= 1 && args.pairs >= 1,
        "threads and pairs must be >= 1"
    );
    let dir = args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("bourse-bench-pipeline-{}", std::process::id()))
    });
    if dir.exists() && args.data_dir.is_none() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let mut config = PipelineConfig::new(&dir);
    config.durability = args.durability.into();
    config.batch_max = args.batch_max;
    config.ring_capacity = args.ring_capacity;
    config.snapshot_every = args.snapshot_every;
    let load_before = loadavg();
    let p = Pipeline::start(config.clone(), Box::new(NullListener))?;
    let mut busy = 0u64;
    let setup = setup_commands(args.pairs);
    let setup_len = setup.len() as u64;
    for c in setup {
        submit_retrying(&p, c, &mut busy);
    }
    while p.last_seq() < setup_len {
        std::thread::sleep(Duration::from_millis(1));
    }

    // Leaked on purpose: the reply closures borrow it for 'static without a refcount.
    let sink: &'static Sink = Box::leak(Box::new(Sink {
        latency_ns: Mutex::new(Histogram::new_with_bounds(1, 60_000_000_000, 3)?),
        done: (0..args.threads).map(|_| AtomicU64::new(0)).collect(),
    }));
    let threads = args.threads as u64;
    let per_thread = args.commands / threads;
    let total = per_thread * threads;
    // Per-thread spacing of scheduled commands with --rate.
    let interval_ns =
        (args.rate > 0).then(|| u128::from(threads) * 1_000_000_000 / u128::from(args.rate));
    let started = Instant::now();
    let busy_total = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let p = &p;
                let window = args.window;
                let pairs = args.pairs;
                s.spawn(move || {
                    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                    let mut busy = 0u64;
                    let done = &sink.done[t as usize];
                    for i in 0..per_thread {
                        while i - done.load(Ordering::Acquire) >= window {
                            std::thread::yield_now();
                        }
                        let scheduled = interval_ns
                            .map(|ns| started + Duration::from_nanos((u128::from(i) * ns) as u64));
                        if let Some(at) = scheduled {
                            wait_until(at);
                        }
                        let mut c = command(t, threads, i, &mut rng, pairs);
                        loop {
                            let at = scheduled.unwrap_or_else(Instant::now);
                            let reply = Box::new(move |_: &Processed<'_>| {
                                let ns = at.elapsed().as_nanos() as u64;
                                let _ =
                                    sink.latency_ns.lock().expect("histogram").record(ns.max(1));
                                done.fetch_add(1, Ordering::Release);
                            });
                            let retry = c.clone();
                            match p.submit(c, reply) {
                                Ok(()) => break,
                                Err(SubmitError::Busy) => {
                                    busy += 1;
                                    std::thread::yield_now();
                                    c = retry;
                                }
                                Err(SubmitError::Stopped) => panic!("pipeline stopped"),
                            }
                        }
                    }
                    while done.load(Ordering::Acquire) < per_thread {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    busy
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("submitter"))
            .sum::<u64>()
    });
    let elapsed = started.elapsed();
    let stats = p.stats();
    let shutdown_started = Instant::now();
    p.shutdown()?;
    let shutdown = shutdown_started.elapsed();
    let load_after = loadavg();
    let journal_bytes = dir_size(&dir.join("journal"));

    let h = sink.latency_ns.lock().expect("histogram");
    let us = |q: f64| h.value_at_quantile(q) / 1000;
    let (cores, model) = machine();
    let mut report = serde_json::json!({
        "bench": "pipeline",
        "machine": { "cores": cores, "cpu": model, "loadavg_before": load_before, "loadavg_after": load_after },
        "settings": {
            "durability": format!("{:?}", args.durability).to_lowercase(),
            "commands": total, "threads": args.threads, "window": args.window,
            "rate": args.rate,
            "batch_max": args.batch_max, "ring_capacity": args.ring_capacity,
            "pairs": args.pairs, "snapshot_every": args.snapshot_every,
            "data_dir": dir.display().to_string(),
        },
        "commands_per_s": per_s(total, elapsed),
        "elapsed_ms": elapsed.as_millis() as u64,
        "ack_latency_us": {
            "p50": us(0.5), "p90": us(0.9), "p99": us(0.99), "p999": us(0.999),
            "max": h.max() / 1000,
        },
        "busy_retries": busy_total,
        "batches": stats.batches,
        "avg_batch": stats.commands / stats.batches.max(1),
        "fsyncs": stats.fsyncs,
        "fsync_us_mean": stats.fsync_ns_sum / stats.fsyncs.max(1) / 1000,
        "fsync_us_max": stats.fsync_ns_max / 1000,
        "journal_bytes": journal_bytes,
        "shutdown_ms": shutdown.as_millis() as u64,
    });
    drop(h);

    if args.replay {
        // Journal only: remove the snapshots so every record is read and applied.
        let snaps = dir.join("snapshots");
        if snaps.exists() {
            std::fs::remove_dir_all(&snaps)?;
        }
        let t = Instant::now();
        let p = Pipeline::start(config, Box::new(NullListener))?;
        let restart = t.elapsed();
        let r = p.recovery_report().clone();
        let hash_ok = p.state_hash().is_ok();
        // Leave the snapshot so the next start would be quick; not measured.
        p.shutdown()?;
        report["replay"] = serde_json::json!({
            "records": r.records_replayed,
            "segments": r.segments_read,
            "recovery_ms": r.elapsed.as_millis() as u64,
            "commands_per_s": r.replay_commands_per_s(),
            "restart_ms": restart.as_millis() as u64,
            "engine_answered": hash_ok,
        });
    }
    if !args.keep && args.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }

    if args.json {
        println!("{report}");
    } else {
        print_text(&report);
    }
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn print_text(r: &serde_json::Value) {
    let s = &r["settings"];
    let m = &r["machine"];
    let offered = match s["rate"].as_u64() {
        Some(r) if r > 0 => format!("offered {r} commands/s"),
        _ => "closed loop".to_string(),
    };
    println!(
        "pipeline bench: {} commands, durability {}, {} submitting threads (window {}, {offered}), batch_max {}, {} pairs",
        s["commands"], s["durability"], s["threads"], s["window"], s["batch_max"], s["pairs"]
    );
    println!(
        "machine: {} cores, {}, load {} -> {}",
        m["cores"], m["cpu"], m["loadavg_before"], m["loadavg_after"]
    );
    println!(
        "throughput: {} commands/s ({} ms); {} batches, {} commands/batch on average; {} busy retries",
        r["commands_per_s"], r["elapsed_ms"], r["batches"], r["avg_batch"], r["busy_retries"]
    );
    let l = &r["ack_latency_us"];
    println!(
        "ack latency us: p50 {} p90 {} p99 {} p99.9 {} max {}",
        l["p50"], l["p90"], l["p99"], l["p999"], l["max"]
    );
    println!(
        "fsync: {} calls, mean {} us, max {} us; journal {} bytes; shutdown {} ms",
        r["fsyncs"], r["fsync_us_mean"], r["fsync_us_max"], r["journal_bytes"], r["shutdown_ms"]
    );
    if let Some(rep) = r.get("replay") {
        println!(
            "replay (journal only): {} records from {} segments in {} ms = {} commands/s; restart {} ms",
            rep["records"],
            rep["segments"],
            rep["recovery_ms"],
            rep["commands_per_s"],
            rep["restart_ms"]
        );
    }
}
