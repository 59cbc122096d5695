//! The machine's floor for `bourse bench ws`: the same fan-out with nothing of ours in it.
//!
//! `bourse bench ws --subscribers N --trades-per-sec R` has N WebSocket clients read every
//! trade while the server writes each connection at most every `N / max_writes_per_sec`
//! (12.5 ms at 1000 connections). On a small machine with the clients in the same box, most
//! of that run is the kernel's loopback TCP: a write of ~20 KB costs the writer ~7-10 us and
//! the reader ~5 us, whoever sends it. This program does only that part, with raw sockets:
//! N loopback connections, trades generated at R/s as fixed records of `--record-bytes`
//! (the bench's mean message size on the wire), `--writer-threads` threads (the server's
//! runtime has 2) each writing its connections every interval everything generated since
//! their last write, and one reader thread (the bench's `--client-threads 1`) that reads
//! every connection through epoll. No pipeline, no journal, no WebSocket framing, no async
//! runtime. The latency of a trade is from its generation to its reading, sampled on the
//! first `--latency-clients` connections, as in the bench.
//!
//! What the bench measures above this floor is ours (the pipeline, the journal's group
//! commit, the feed and the runtime); what the floor itself shows is the machine's.
//!
//! `cargo run --release -p bourse-feed --example loopback_floor -- --runs 5`

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

#[derive(Debug, Parser)]
#[command(about = "Loopback TCP fan-out with raw sockets: the floor under `bourse bench ws`")]
struct Args {
    /// Connections (the bench's subscribers).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Trades generated per second; every connection gets every trade.
    #[arg(long, default_value_t = 10_000)]
    trades_per_sec: u64,
    /// Bytes per trade on the wire (the bench's book, trades and ticker channels average
    /// ~156 bytes per message, frame header included).
    #[arg(long, default_value_t = 156)]
    record_bytes: usize,
    /// Writes per second over all connections, as `FeedConfig::max_writes_per_sec`: each
    /// connection writes at most every `subscribers / max_writes_per_sec`.
    #[arg(long, default_value_t = 80_000)]
    max_writes_per_sec: u64,
    /// Threads writing (the bench's server runtime has 2 workers).
    #[arg(long, default_value_t = 2)]
    writer_threads: usize,
    /// Connections whose reads are timed.
    #[arg(long, default_value_t = 100)]
    latency_clients: usize,
    /// Seconds of generation per run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Permille of a CPU that one more thread keeps busy meanwhile, in bursts within each
    /// millisecond: a stand-in for the bench's pipeline (the engine thread, the journal's
    /// syncs, the feed's derivation), which takes ~250 of the same two CPUs.
    #[arg(long, default_value_t = 0)]
    background_permille: u32,
    /// Runs; with more than one, ends with the median of p50, p99 and CPU.
    #[arg(long, default_value_t = 1)]
    runs: usize,
}

/// What one run measured.
#[derive(Debug)]
struct Run {
    writes_per_sec: f64,
    bytes_per_write: f64,
    writer_cpus: f64,
    reader_cpus: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

/// This thread's time on a CPU, ns (`/proc/thread-self/schedstat`; 0 where unreadable).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[allow(clippy::float_arithmetic)]
fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Generation times of the trades, by index, in ns since `epoch`.
struct Trades {
    epoch: Instant,
    generated_ns: Vec<AtomicI64>,
    /// How many have been generated.
    count: AtomicU64,
}

#[allow(clippy::float_arithmetic)]
fn run(args: &Args) -> std::io::Result<Run> {
    let total = (args.trades_per_sec * args.seconds) as usize;
    let record = args.record_bytes.max(8);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut servers = Vec::with_capacity(args.subscribers);
    let mut clients = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let client = TcpStream::connect(addr)?;
        let (server, _) = listener.accept()?;
        server.set_nodelay(true)?;
        server.set_nonblocking(true)?;
        client.set_nonblocking(true)?;
        servers.push(server);
        clients.push(client);
    }
    let trades = Arc::new(Trades {
        epoch: Instant::now(),
        generated_ns: (0..total).map(|_| AtomicI64::new(0)).collect(),
        count: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (trades, stop) = (trades.clone(), stop.clone());
        let sampled = args.latency_clients;
        std::thread::spawn(move || read_all(clients, &trades, &stop, record, sampled))
    };
    let background = (args.background_permille > 0).then(|| {
        let stop = stop.clone();
        let busy = Duration::from_micros(u64::from(args.background_permille.min(1000)));
        std::thread::spawn(move || busy_bursts(&stop, busy))
    });
    let interval = Duration::from_nanos(
        (args.subscribers as u64 * 1_000_000_000) / args.max_writes_per_sec.max(1),
    );
    let per_thread = args.subscribers.div_ceil(args.writer_threads.max(1));
    let mut writers = Vec::new();
    while !servers.is_empty() {
        let mine: Vec<TcpStream> = servers.drain(..per_thread.min(servers.len())).collect();
        let (trades, stop) = (trades.clone(), stop.clone());
        writers.push(std::thread::spawn(move || {
            write_all(mine, &trades, &stop, record, interval)
        }));
    }
    // Generation, paced as the bench's order flow.
    let start = Instant::now();
    for k in 0..total {
        let due = Duration::from_nanos(k as u64 * 1_000_000_000 / args.trades_per_sec.max(1));
        let now = start.elapsed();
        if due > now {
            std::thread::sleep(due - now);
        }
        trades.generated_ns[k].store(trades.epoch.elapsed().as_nanos() as i64, Ordering::Relaxed);
        trades.count.store(k as u64 + 1, Ordering::Release);
    }
    let flow = start.elapsed().as_secs_f64();
    // Every write of the last trades is due within one interval; give them a few.
    std::thread::sleep(interval * 4 + Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let (mut writer_ns, mut writes, mut bytes) = (0u64, 0u64, 0u64);
    for w in writers {
        let (cpu, n, b) = w
            .join()
            .map_err(|_| std::io::Error::other("writer panicked"))?;
        writer_ns += cpu;
        writes += n;
        bytes += b;
    }
    if let Some(b) = background {
        let _ = b.join();
    }
    let (reader_ns, hist) = reader
        .join()
        .map_err(|_| std::io::Error::other("reader panicked"))?;
    Ok(Run {
        writes_per_sec: writes as f64 / flow,
        bytes_per_write: bytes as f64 / writes.max(1) as f64,
        writer_cpus: writer_ns as f64 / 1e9 / flow,
        reader_cpus: reader_ns as f64 / 1e9 / flow,
        p50_ms: ms(&hist, 0.5),
        p90_ms: ms(&hist, 0.9),
        p99_ms: ms(&hist, 0.99),
        p999_ms: ms(&hist, 0.999),
        max_ms: hist.max() as f64 / 1000.0,
    })
}

/// Until `stop`: in every millisecond, keeps a CPU busy for `busy`, then sleeps.
fn busy_bursts(stop: &AtomicBool, busy: Duration) {
    let period = Duration::from_millis(1);
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        while start.elapsed() < busy {
            std::hint::spin_loop();
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

/// Writes each connection every `interval` the bytes of the records generated since its
/// last write (at most `MAX_WRITE` at once, as the feed caps a write). A connection's stream
/// is its records end to end, so the reader knows from its byte count which records it has;
/// the bytes themselves are filler. Returns CPU ns, writes and bytes.
fn write_all(
    conns: Vec<TcpStream>,
    trades: &Trades,
    stop: &AtomicBool,
    record: usize,
    interval: Duration,
) -> (u64, u64, u64) {
    const MAX_WRITE: usize = 256 * 1024;
    let cpu0 = thread_cpu_ns();
    let n = conns.len() as u32;
    // First deadlines spread over one interval, as connections that subscribed at
    // different moments.
    let mut next: Vec<Instant> = (0..n)
        .map(|i| Instant::now() + interval / n.max(1) * i)
        .collect();
    let mut written = vec![0u64; conns.len()];
    let filler = vec![b'x'; MAX_WRITE];
    let (mut writes, mut bytes) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let mut soonest = now + interval;
        for (i, conn) in conns.iter().enumerate() {
            if next[i] <= now {
                let upto = trades.count.load(Ordering::Acquire) * record as u64;
                if upto > written[i] {
                    let len = ((upto - written[i]) as usize).min(MAX_WRITE);
                    if let Ok(m) = (&*conn).write(&filler[..len]) {
                        writes += 1;
                        bytes += m as u64;
                        written[i] += m as u64;
                    }
                }
                next[i] = now + interval;
            }
            soonest = soonest.min(next[i]);
        }
        let now = Instant::now();
        if soonest > now {
            std::thread::sleep(soonest - now);
        }
    }
    (thread_cpu_ns().saturating_sub(cpu0), writes, bytes)
}

/// Reads every connection through epoll until `stop`; times the records of the first
/// `sampled` connections. Returns CPU ns and the latency histogram (us).
fn read_all(
    conns: Vec<TcpStream>,
    trades: &Trades,
    stop: &AtomicBool,
    record: usize,
    sampled: usize,
) -> (u64, Histogram<u64>) {
    let cpu0 = thread_cpu_ns();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
    let Ok(mut poll) = Poll::new() else {
        return (0, hist);
    };
    let mut conns: Vec<mio::net::TcpStream> = conns
        .into_iter()
        .map(mio::net::TcpStream::from_std)
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        if poll
            .registry()
            .register(c, Token(i), Interest::READABLE)
            .is_err()
        {
            return (0, hist);
        }
    }
    // Bytes of each connection's stream read so far.
    let mut read = vec![0u64; conns.len()];
    let mut buf = vec![0u8; 256 * 1024];
    let mut events = Events::with_capacity(256);
    while !stop.load(Ordering::Relaxed) {
        if poll
            .poll(&mut events, Some(Duration::from_millis(50)))
            .is_err()
        {
            break;
        }
        for ev in events.iter() {
            let i = ev.token().0;
            loop {
                match conns[i].read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if i < sampled {
                            let now = trades.epoch.elapsed().as_nanos() as i64;
                            // Every record that ends within this read arrived now.
                            let (from, to) = (read[i], read[i] + n as u64);
                            let rec = record as u64;
                            // Records k (1-based) whose last byte, k * rec, is in (from, to].
                            for k in from / rec + 1..=to / rec {
                                if let Some(g) = trades.generated_ns.get((k - 1) as usize) {
                                    let g = g.load(Ordering::Relaxed);
                                    let _ = hist.record(((now - g) / 1000).max(1) as u64);
                                }
                            }
                        }
                        read[i] += n as u64;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }
    (thread_cpu_ns().saturating_sub(cpu0), hist)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut runs = Vec::new();
    for _ in 0..args.runs.max(1) {
        let r = run(&args)?;
        println!(
            "loopback floor: {} connections, {} trades/s of {} bytes, {} writer threads: \
             {:.0} writes/s of {:.0} bytes, CPUs writers {:.2} reader {:.2}; \
             latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
            args.subscribers,
            args.trades_per_sec,
            args.record_bytes,
            args.writer_threads,
            r.writes_per_sec,
            r.bytes_per_write,
            r.writer_cpus,
            r.reader_cpus,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms
        );
        runs.push(r);
    }
    if runs.len() > 1 {
        println!(
            "median of {} runs: p50 {:.2} ms, p99 {:.2} ms, CPUs writers {:.2} reader {:.2}",
            runs.len(),
            median(runs.iter().map(|r| r.p50_ms).collect()),
            median(runs.iter().map(|r| r.p99_ms).collect()),
            median(runs.iter().map(|r| r.writer_cpus).collect()),
            median(runs.iter().map(|r| r.reader_cpus).collect()),
        );
    }
    Ok(())
}
