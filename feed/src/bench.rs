//! `bourse bench ws`: N WebSocket subscribers on one pair while orders flow through the real
//! pipeline (journal without fsync) into the feed. Reports messages/s delivered and
//! trade-to-client latency percentiles (hdrhistogram): from submitting the crossing order to
//! a subscriber receiving the trade message, measured on a sample of the clients.
//!
//! Clients and server share the machine, so the figures are a lower bound of what the
//! server alone can do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engine::pipeline::{Durability, Pipeline, PipelineConfig, Processed, Reply};
use engine::{
    AccountId, Amount, Command, CurrencyId, CurrencySpec, Event, OrderId, PairId, PairSpec,
    PairStatus, PlaceOrder, Price, RequestId, RequestSpec, Side,
};
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Stdio};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{Feed, FeedConfig};

mod client;
pub mod threads;

/// Set in the child process that holds the clients the parent has no descriptors for:
/// `ADDR;COUNT`.
const CHILD_ENV: &str = "BOURSE_WS_BENCH_CHILD";

fn client_runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("ws-clients")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn subscribe_text(channels: &str) -> String {
    let channels: Vec<String> = channels
        .split(',')
        .map(|c| format!("{}:BTC_SEK", c.trim()))
        .collect();
    serde_json::json!({"op":"subscribe","id":1,"channels":channels}).to_string()
}

/// Connects `n` clients (the first `sampled` record latency) and starts their read loops.
fn connect_all(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    subscribe: &str,
    n: usize,
    sampled: usize,
    stop: &Arc<AtomicBool>,
    sampling: Option<&Arc<client::Sampling>>,
) -> Vec<Arc<client::ClientStats>> {
    rt.block_on(async {
        let mut all = Vec::with_capacity(n);
        let mut i = 0;
        while i < n {
            let chunk = (n - i).min(200);
            let conns =
                futures::future::join_all((0..chunk).map(|_| client::connect(addr, subscribe)))
                    .await;
            for c in conns {
                let Ok(s) = c else {
                    continue;
                };
                let stats = Arc::new(client::ClientStats::default());
                let sm = if all.len() < sampled {
                    sampling.cloned()
                } else {
                    None
                };
                tokio::spawn(client::read_loop(s, stats.clone(), stop.clone(), sm));
                all.push(stats);
            }
            i += chunk;
        }
        all
    })
}

/// The child process side: connect, report, count until told to stop.
fn child_main(args: &WsBenchArgs, spec: &str) -> ! {
    let mut parts = spec.split(';');
    let addr = parts.next().and_then(|a| a.parse().ok());
    let n: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let (Some(addr), Ok(rt)) = (addr, client_runtime(args.client_threads)) else {
        std::process::exit(2);
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stats = connect_all(
        &rt,
        addr,
        &subscribe_text(&args.channels),
        n,
        0,
        &stop,
        None,
    );
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready {}", stats.len());
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "stop" {
            stop.store(true, Ordering::Relaxed);
        }
        let m: u64 = stats
            .iter()
            .map(|s| s.messages.load(Ordering::Relaxed))
            .sum();
        let c = stats
            .iter()
            .filter(|s| s.closed.load(Ordering::Relaxed))
            .count();
        let _ = writeln!(out, "stat {m} {c}");
        let _ = out.flush();
        if line.trim() == "stop" {
            break;
        }
    }
    std::process::exit(0);
}

/// The parent's handle on the child process.
struct Child {
    proc: std::process::Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Child {
    fn spawn(addr: std::net::SocketAddr, n: usize) -> Result<Child, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut proc = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(CHILD_ENV, format!("{addr};{n}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("client process: {e}"))?;
        let stdin = proc.stdin.take().ok_or("client process stdin")?;
        let stdout = BufReader::new(proc.stdout.take().ok_or("client process stdout")?);
        Ok(Child {
            proc,
            stdin,
            stdout,
        })
    }

    fn line(&mut self) -> Result<String, String> {
        let mut l = String::new();
        self.stdout.read_line(&mut l).map_err(|e| e.to_string())?;
        Ok(l)
    }

    fn ready(&mut self) -> Result<usize, String> {
        let l = self.line()?;
        l.strip_prefix("ready ")
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("client process: {l:?}"))
    }

    fn stat(&mut self) -> Result<(u64, u64), String> {
        writeln!(self.stdin, "stat").map_err(|e| e.to_string())?;
        let l = self.line()?;
        let mut it = l.split_whitespace().skip(1).map(|x| x.parse::<u64>());
        match (it.next(), it.next()) {
            (Some(Ok(m)), Some(Ok(c))) => Ok((m, c)),
            _ => Err(format!("client process: {l:?}")),
        }
    }

    fn finish(mut self) {
        let _ = writeln!(self.stdin, "stop");
        let _ = self.line();
        let _ = self.proc.wait();
    }
}

/// Journal durability for a bench's pipeline (`--durability`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurabilityArg {
    /// fdatasync once per group of batches before anything of them is released, as
    /// `bourse serve` does by default.
    Fsync,
    /// Written to the OS only.
    None,
}

impl From<DurabilityArg> for Durability {
    fn from(d: DurabilityArg) -> Durability {
        match d {
            DurabilityArg::Fsync => Durability::Fsync,
            DurabilityArg::None => Durability::None,
        }
    }
}

/// Settings of `bourse bench ws`.
#[derive(clap::Args, Debug, Clone)]
pub struct WsBenchArgs {
    /// WebSocket subscribers.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Channels each subscriber takes on BTC_SEK (comma-separated: book, trades, ticker,
    /// candles:1m).
    #[arg(long, default_value = "book,trades,ticker")]
    pub channels: String,
    /// Offered trade rate.
    #[arg(long, default_value_t = 10_000)]
    pub trades_per_sec: u64,
    /// Duration of the order flow.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Subscribers that record latency (the rest only count).
    #[arg(long, default_value_t = 100)]
    pub latency_clients: usize,
    /// Per-connection outbound queue bound.
    #[arg(long, default_value_t = 4096)]
    pub queue_bound: usize,
    /// `FeedConfig::min_write_interval`, microseconds (0: write on every wake-up).
    #[arg(long, default_value_t = 2000)]
    pub min_write_interval_us: u64,
    /// `FeedConfig::max_writes_per_sec` (0: no floor on the write interval).
    #[arg(long, default_value_t = FeedConfig::default().max_writes_per_sec)]
    pub max_writes_per_sec: u32,
    /// `FeedConfig::book_interval`, microseconds (0: one book update per pipeline batch).
    #[arg(long, default_value_t = 5000)]
    pub book_interval_us: u64,
    /// Worker threads of the clients' runtime.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Worker threads of the server's runtime (`bourse serve`'s `worker_threads`).
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// 0: every client in this process; 1: all but the latency-sampled clients in a child
    /// process. Default: a child only when the descriptors would not suffice.
    #[arg(long)]
    pub client_processes: Option<usize>,
    /// The journal's durability. `none` (the default, as every figure of this bench so far)
    /// leaves the journal's fdatasync out of the latency; `fsync` is `bourse serve`'s
    /// default, where a trade reaches the feed only once its group is on disk.
    #[arg(long, value_enum, default_value = "none")]
    pub durability: DurabilityArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run the whole bench this many times, a fresh server each time, and end with the
    /// spread of the runs (lowest, median and highest p50, p99 and messages/s): this
    /// machine's speed drifts from minute to minute, so one run says little.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,
}

/// Lowest, median and highest of one figure over several runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// One line of a spread table: `name`, then the median, lowest and highest with
    /// `places` decimals and `unit`.
    pub fn line(&self, name: &str, places: usize, unit: &str) -> String {
        format!(
            "  {name:<20} median {:.places$}{unit}  lowest {:.places$}{unit}  highest {:.places$}{unit}",
            self.median, self.min, self.max
        )
    }

    /// The spread of `values` (None when there are none); the median of an even count is
    /// the mean of the middle two.
    #[allow(clippy::float_arithmetic)]
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        let (first, last) = (*v.first()?, *v.last()?);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Spread {
            min: first,
            median,
            max: last,
        })
    }
}

/// The spread of several runs of one setting (`--runs`).
#[derive(Debug, Serialize)]
pub struct WsRunsSpread {
    pub runs: usize,
    pub latency_ms_p50: Spread,
    pub latency_ms_p99: Spread,
    /// The fan-out's part of the p99 ([`WsBenchReport::fanout_ms`]).
    pub fanout_ms_p99: Spread,
    pub messages_per_sec: Spread,
}

impl WsRunsSpread {
    /// None for no reports.
    pub fn of(reports: &[WsBenchReport]) -> Option<WsRunsSpread> {
        Some(WsRunsSpread {
            runs: reports.len(),
            latency_ms_p50: Spread::of(reports.iter().map(|r| r.latency_ms_p50))?,
            latency_ms_p99: Spread::of(reports.iter().map(|r| r.latency_ms_p99))?,
            fanout_ms_p99: Spread::of(reports.iter().map(|r| r.fanout_ms[1]))?,
            messages_per_sec: Spread::of(reports.iter().map(|r| r.messages_per_sec))?,
        })
    }

    /// Prints the spread as table lines (with `--json` it goes into the one document the
    /// bench prints instead).
    pub fn print_table(&self) {
        println!("bourse bench ws, {} runs", self.runs);
        println!("{}", self.latency_ms_p50.line("latency p50", 2, " ms"));
        println!("{}", self.latency_ms_p99.line("latency p99", 2, " ms"));
        println!("{}", self.fanout_ms_p99.line("fan-out p99", 2, " ms"));
        println!(
            "{}",
            self.messages_per_sec.line("messages delivered", 0, "/s")
        );
    }
}

/// What the bench measured.
#[derive(Debug, Serialize)]
pub struct WsBenchReport {
    pub machine: String,
    pub cpus: usize,
    pub subscribers: usize,
    pub connected: usize,
    pub channels: String,
    /// The journal's durability (`fsync` or `none`).
    pub durability: String,
    pub trades_offered_per_sec: u64,
    pub seconds: u64,
    pub trades: u64,
    pub trades_per_sec: f64,
    pub messages_delivered: u64,
    pub messages_per_sec: f64,
    pub trade_messages_sampled: u64,
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_p999: f64,
    pub latency_ms_max: f64,
    /// The pipeline's part of that latency: from submitting the crossing order to the
    /// engine thread having handed its batch to the feed (the order's reply), ms:
    /// p50, p99, max.
    pub published_ms: [f64; 3],
    /// The fan-out's part: from the batch reaching the feed to the sampled client reading
    /// the trade message (the feed, the connection's write schedule, loopback TCP and the
    /// clients' thread), ms: p50, p99, max. Compare with the machine's floor for the same
    /// writes, `cargo run --release -p bourse-feed --example loopback_floor`. "Reaching the
    /// feed" is stamped by the crossing order's reply, which runs just after the feed has
    /// taken the batch (tens of microseconds later): a trade read before that stamp is left
    /// out of this histogram (never of the whole latency's), so the fastest few are missing
    /// here, which matters at p50 at most, not in the tail.
    pub fanout_ms: [f64; 3],
    pub clients_closed_early: u64,
    pub busy_retries: u64,
    pub client_threads: usize,
    pub clients_in_child_process: usize,
    pub nofile_limit: u64,
    /// CPUs (CPU seconds per second of order flow) used by the server's runtime, the
    /// in-process clients and the pipeline's and feed's threads, and the time each spent
    /// runnable but waiting for a CPU (same unit): `[server, clients, pipeline]`.
    pub cpus_used: [f64; 3],
    pub cpus_waited: [f64; 3],
    /// Server WebSocket writes per second during the flow, and bytes per write.
    pub server_writes_per_sec: f64,
    pub server_bytes_per_write: f64,
    /// The busy connections' write interval the settings ask for, ms.
    pub write_interval_ms: f64,
    /// 1-minute load average at the end of the flow.
    pub load_1m: String,
}

fn place(id: u64, account: u32, side: Side, price: u64, lots: u64) -> Command {
    Command::Place(PlaceOrder::limit(
        OrderId(id),
        AccountId(account),
        PairId(0),
        side,
        Price(price),
        Amount(lots),
    ))
}

fn run_sync(p: &Pipeline, cmd: Command) -> Vec<Event> {
    let (tx, rx) = std::sync::mpsc::channel();
    let reply: Reply = Box::new(move |pr: &Processed<'_>| {
        let _ = tx.send(pr.events.to_vec());
    });
    p.submit(cmd, reply).expect("submit");
    rx.recv().expect("reply")
}

#[allow(clippy::float_arithmetic)]
fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Runs the bench and prints its report.
#[allow(clippy::float_arithmetic)]
pub fn run(args: WsBenchArgs) -> Result<WsBenchReport, String> {
    let nofile = crate::raise_nofile_limit();
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_main(&args, &spec);
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = FeedConfig {
        max_connections: args.subscribers + 16,
        max_subscriptions: 64,
        queue_bound: args.queue_bound,
        min_write_interval: Duration::from_micros(args.min_write_interval_us),
        book_interval: Duration::from_micros(args.book_interval_us),
        max_writes_per_sec: args.max_writes_per_sec,
        ..FeedConfig::default()
    };
    let feed = Feed::open(config, dir.path()).map_err(|e| e.to_string())?;
    let mut pc = PipelineConfig::new(dir.path().join("engine"));
    pc.durability = args.durability.into();
    let pipeline = Arc::new(Pipeline::start(pc, feed.listener()).map_err(|e| e.to_string())?);
    for (code, d) in [("BTC", 8u8), ("SEK", 2u8)] {
        run_sync(
            &pipeline,
            Command::AddCurrency(Box::new(CurrencySpec {
                code: code.into(),
                display_name: code.into(),
                decimals: d,
            })),
        );
    }
    run_sync(
        &pipeline,
        Command::AddPair(PairSpec {
            base: CurrencyId(0),
            quote: CurrencyId(1),
            price_decimals: 2,
            amount_decimals: 4,
            min_amount: Amount(1),
            maker_fee_ppm: 1000,
            taker_fee_ppm: 2000,
            status: PairStatus::Active,
        }),
    );
    for a in 1..=2u32 {
        for c in 0..2u16 {
            run_sync(
                &pipeline,
                Command::DepositCredited(Box::new(RequestSpec {
                    request: RequestId(u64::from(a) * 10 + u64::from(c)),
                    account: AccountId(a),
                    currency: CurrencyId(c),
                    amount: if c == 0 {
                        1_000_000_000_000_000
                    } else {
                        100_000_000_000_000
                    },
                    external_id: format!("d{a}{c}"),
                    destination: String::new(),
                })),
            );
        }
    }
    // A warm-up trade names the first trade id.
    run_sync(&pipeline, place(1, 1, Side::Sell, 100_000, 1));
    let base_id = run_sync(&pipeline, place(2, 2, Side::Buy, 100_000, 1))
        .iter()
        .find_map(|e| match e {
            Event::Trade(t) => Some(t.id.0),
            _ => None,
        })
        .ok_or("warm-up did not trade")?;

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .thread_name("ws-server")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client_rt = client_runtime(args.client_threads)?;
    let total = args.trades_per_sec * args.seconds;
    let submit_ns: Arc<Vec<AtomicI64>> = Arc::new((0..total).map(|_| AtomicI64::new(0)).collect());
    let published_ns: Arc<Vec<AtomicI64>> =
        Arc::new((0..total).map(|_| AtomicI64::new(0)).collect());
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let subscribe = subscribe_text(&args.channels);
    let addr = server_rt.block_on(async {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = tcp.local_addr().map_err(|e| e.to_string())?;
        let router = feed.router();
        tokio::spawn(async move {
            // As `bourse serve` should: no Nagle delay on small frames.
            let tcp = axum::serve::ListenerExt::tap_io(tcp, |s: &mut tokio::net::TcpStream| {
                let _ = s.set_nodelay(true);
            });
            let _ = axum::serve(tcp, router).await;
        });
        Ok::<_, String>(addr)
    })?;
    // Clients beyond what this process's descriptors allow (each connection costs two
    // here: the client's and the server's) go to a child process.
    let in_process = match args.client_processes {
        Some(0) => args.subscribers,
        Some(_) => args.latency_clients.min(args.subscribers),
        None if 2 * args.subscribers + 256 > nofile as usize => {
            args.latency_clients.min(args.subscribers)
        }
        None => args.subscribers,
    };
    let remote = args.subscribers - in_process;
    let mut child = if remote > 0 {
        Some(Child::spawn(addr, remote)?)
    } else {
        None
    };
    let sampling = Arc::new(client::Sampling {
        epoch,
        base_id,
        submit_ns: submit_ns.clone(),
        published_ns: published_ns.clone(),
        hist: parking_lot::Mutex::new(
            Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?,
        ),
        fanout: parking_lot::Mutex::new(
            Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?,
        ),
    });
    let stats = connect_all(
        &client_rt,
        addr,
        &subscribe,
        in_process,
        args.latency_clients,
        &stop,
        Some(&sampling),
    );
    let remote_connected = match child.as_mut() {
        Some(c) => c.ready()?,
        None => 0,
    };
    let connected = stats.len() + remote_connected;
    // Let the subscriptions settle.
    std::thread::sleep(Duration::from_millis(500));
    let delivered_now = |child: &mut Option<Child>| -> (u64, u64) {
        let local: u64 = stats
            .iter()
            .map(|s| s.messages.load(Ordering::Relaxed))
            .sum();
        let closed = stats
            .iter()
            .filter(|s| s.closed.load(Ordering::Relaxed))
            .count() as u64;
        let (rm, rc) = child.as_mut().and_then(|c| c.stat().ok()).unwrap_or((0, 0));
        (local + rm, closed + rc)
    };
    let (delivered_before, _) = delivered_now(&mut child);

    // The order flow: a resting sell and a crossing buy per trade, paced.
    let busy = Arc::new(AtomicU64::new(0));
    let threads_before = threads::snapshot();
    let writes_before = feed.ws_write_totals();
    let flow_start = Instant::now();
    {
        let pipeline = pipeline.clone();
        let submit_ns = submit_ns.clone();
        let published_ns = published_ns.clone();
        let busy = busy.clone();
        let rate = args.trades_per_sec;
        std::thread::spawn(move || {
            let submit = |cmd: Command, published: Option<usize>| loop {
                // Only the crossing order notes when its batch reached the feed.
                let reply: Reply = match published {
                    Some(k) => {
                        let published_ns = published_ns.clone();
                        Box::new(move |_: &Processed<'_>| {
                            published_ns[k]
                                .store(epoch.elapsed().as_nanos() as i64, Ordering::Relaxed);
                        })
                    }
                    None => Box::new(|_: &Processed<'_>| {}),
                };
                match pipeline.submit(cmd.clone(), reply) {
                    Ok(()) => return,
                    Err(engine::pipeline::SubmitError::Busy) => {
                        busy.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err(_) => return,
                }
            };
            for k in 0..total {
                let due = Duration::from_nanos(k * 1_000_000_000 / rate);
                let now = flow_start.elapsed();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let id = 10 + 2 * k;
                submit(place(id, 1, Side::Sell, 100_000, 1), None);
                submit_ns[k as usize].store(epoch.elapsed().as_nanos() as i64, Ordering::Relaxed);
                submit(place(id + 1, 2, Side::Buy, 100_000, 1), Some(k as usize));
            }
        })
        .join()
        .map_err(|_| "order flow thread panicked")?;
    }
    let flow_secs = flow_start.elapsed();
    let threads_used = threads::between(&threads_before, &threads::snapshot());
    let writes_after = feed.ws_write_totals();
    let load_1m = threads::load_1m();
    // Drain: until the pipeline has delivered everything and the clients' counts stop
    // moving for a second (at most 30 s).
    let target = pipeline.last_seq();
    while pipeline.last_seq() < target {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (mut last, mut closed) = delivered_now(&mut child);
    let mut last_change = Instant::now();
    while last_change.elapsed() < Duration::from_secs(1)
        && flow_start.elapsed() < flow_secs + Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(50));
        let (d, c) = delivered_now(&mut child);
        closed = c;
        if d != last {
            last = d;
            last_change = Instant::now();
        }
    }
    let deliver_secs = last_change.duration_since(flow_start);
    stop.store(true, Ordering::Relaxed);
    let delivered = last - delivered_before;
    if let Some(c) = child.take() {
        c.finish();
    }
    let hist = sampling.hist.lock().clone();
    let fanout = sampling.fanout.lock().clone();
    let mut published =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?;
    for (s, p) in submit_ns.iter().zip(published_ns.iter()) {
        let (s, p) = (s.load(Ordering::Relaxed), p.load(Ordering::Relaxed));
        if p > 0 {
            let _ = published.record(((p - s).max(0) / 1000) as u64);
        }
    }
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let report = WsBenchReport {
        machine,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        subscribers: args.subscribers,
        connected,
        channels: args.channels.clone(),
        durability: format!("{:?}", args.durability).to_lowercase(),
        trades_offered_per_sec: args.trades_per_sec,
        seconds: args.seconds,
        trades: total,
        trades_per_sec: total as f64 / flow_secs.as_secs_f64(),
        messages_delivered: delivered,
        messages_per_sec: delivered as f64 / deliver_secs.as_secs_f64(),
        trade_messages_sampled: hist.len(),
        latency_ms_p50: ms(&hist, 0.5),
        latency_ms_p90: ms(&hist, 0.9),
        latency_ms_p99: ms(&hist, 0.99),
        latency_ms_p999: ms(&hist, 0.999),
        latency_ms_max: hist.max() as f64 / 1000.0,
        published_ms: [
            ms(&published, 0.5),
            ms(&published, 0.99),
            published.max() as f64 / 1000.0,
        ],
        fanout_ms: [
            ms(&fanout, 0.5),
            ms(&fanout, 0.99),
            fanout.max() as f64 / 1000.0,
        ],
        clients_closed_early: closed,
        busy_retries: busy.load(Ordering::Relaxed),
        client_threads: args.client_threads,
        clients_in_child_process: remote,
        nofile_limit: nofile,
        cpus_used: threads_used.map(|(cpu, _)| cpu as f64 / 1e9 / flow_secs.as_secs_f64()),
        cpus_waited: threads_used.map(|(_, wait)| wait as f64 / 1e9 / flow_secs.as_secs_f64()),
        server_writes_per_sec: (writes_after.writes - writes_before.writes) as f64
            / flow_secs.as_secs_f64(),
        server_bytes_per_write: (writes_after.bytes - writes_before.bytes) as f64
            / (writes_after.writes - writes_before.writes).max(1) as f64,
        write_interval_ms: feed.config().write_interval(connected).as_secs_f64() * 1000.0,
        load_1m,
    };
    drop(client_rt);
    drop(server_rt);
    if let Ok(p) = Arc::try_unwrap(pipeline) {
        let _ = p.shutdown();
    }
    Ok(report)
}

/// Prints a report as a table or JSON.
#[allow(clippy::float_arithmetic)]
pub fn print(report: &WsBenchReport, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
        return;
    }
    println!(
        "bourse bench ws  ({}, {} cpus)",
        report.machine, report.cpus
    );
    println!(
        "  subscribers {} (connected {}), channels {}, journal {}, offered {} trades/s for {} s",
        report.subscribers,
        report.connected,
        report.channels,
        report.durability,
        report.trades_offered_per_sec,
        report.seconds
    );
    println!(
        "  trades {} ({:.0}/s achieved), messages delivered {} ({:.0}/s)",
        report.trades, report.trades_per_sec, report.messages_delivered, report.messages_per_sec
    );
    println!(
        "  trade-to-client latency ms (submit -> client, {} samples): p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        report.trade_messages_sampled,
        report.latency_ms_p50,
        report.latency_ms_p90,
        report.latency_ms_p99,
        report.latency_ms_p999,
        report.latency_ms_max
    );
    let [pp50, pp99, pmax] = report.published_ms;
    println!(
        "  of which the pipeline (submit -> published to the feed): p50 {pp50:.2}  p99 {pp99:.2}  max {pmax:.2}"
    );
    let [fp50, fp99, fmax] = report.fanout_ms;
    println!(
        "  and the fan-out (published -> client): p50 {fp50:.2}  p99 {fp99:.2}  max {fmax:.2}"
    );
    println!(
        "  clients closed early (slow consumer) {}, busy retries {}",
        report.clients_closed_early, report.busy_retries
    );
    println!(
        "  client threads {}, clients in a child process {}, open-file limit {}",
        report.client_threads, report.clients_in_child_process, report.nofile_limit
    );
    let [us, uc, up] = report.cpus_used;
    let [ws, wc, wp] = report.cpus_waited;
    println!(
        "  CPUs used (waiting for a CPU) during the flow: server {us:.2} ({ws:.2}), clients {uc:.2} ({wc:.2}), pipeline {up:.2} ({wp:.2}); load {}",
        report.load_1m
    );
    println!(
        "  server writes {:.0}/s, {:.0} bytes each (interval {:.1} ms asked: {:.0}/s per busy connection)",
        report.server_writes_per_sec,
        report.server_bytes_per_write,
        report.write_interval_ms,
        1000.0 / report.write_interval_ms.max(0.001)
    );
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn a_spread_has_the_lowest_median_and_highest() {
        assert_eq!(Spread::of([]), None);
        let odd = Spread::of([29.9, 15.7, 48.8]).expect("values");
        assert_eq!(
            odd,
            Spread {
                min: 15.7,
                median: 29.9,
                max: 48.8
            }
        );
        let even = Spread::of([4.0, 1.0, 3.0, 2.0]).expect("values");
        assert_eq!(
            even,
            Spread {
                min: 1.0,
                median: 2.5,
                max: 4.0
            }
        );
    }
}
