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
    AccountId, Amount, ClientOrderId, Command, CurrencyId, CurrencySpec, Event, OrderId, OrderKind,
    PairId, PairSpec, PairStatus, PlaceOrder, Price, RequestId, RequestSpec, SelfTradePrevention,
    Side, TimeInForce,
};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::{Feed, FeedConfig};

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
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What the bench measured.
#[derive(Debug, Serialize)]
pub struct WsBenchReport {
    pub machine: String,
    pub cpus: usize,
    pub subscribers: usize,
    pub connected: usize,
    pub channels: String,
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
    pub clients_closed_early: u64,
    pub busy_retries: u64,
}

fn place(id: u64, account: u32, side: Side, price: u64, lots: u64) -> Command {
    Command::Place(PlaceOrder {
        id: OrderId(id),
        account: AccountId(account),
        pair: PairId(0),
        side,
        kind: OrderKind::Limit {
            price: Price(price),
            amount: Amount(lots),
            tif: TimeInForce::Gtc,
            post_only: false,
        },
        stp: SelfTradePrevention::None,
        client_id: ClientOrderId::NONE,
    })
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
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = FeedConfig {
        max_connections: args.subscribers + 16,
        max_subscriptions: 64,
        queue_bound: args.queue_bound,
        channel_capacity: 16_384,
        ..FeedConfig::default()
    };
    let feed = Feed::open(config, dir.path()).map_err(|e| e.to_string())?;
    let mut pc = PipelineConfig::new(dir.path().join("engine"));
    pc.durability = Durability::None;
    let pipeline = Arc::new(Pipeline::start(pc, feed.listener()).map_err(|e| e.to_string())?);
    for (code, d) in [("BTC", 8u8), ("SEK", 2u8)] {
        run_sync(
            &pipeline,
            Command::AddCurrency(CurrencySpec {
                code: code.into(),
                display_name: code.into(),
                decimals: d,
            }),
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
                Command::DepositCredited(RequestSpec {
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
                }),
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

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let total = args.trades_per_sec * args.seconds;
    let submit_ns: Arc<Vec<AtomicI64>> = Arc::new((0..total).map(|_| AtomicI64::new(0)).collect());
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let channels: Vec<String> = args
        .channels
        .split(',')
        .map(|c| {
            let c = c.trim();
            format!("{c}:BTC_SEK")
        })
        .collect();
    let (addr, clients) = rt.block_on(async {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = tcp.local_addr().map_err(|e| e.to_string())?;
        let router = feed.router();
        tokio::spawn(async move {
            let _ = axum::serve(tcp, router).await;
        });
        let mut clients = Vec::with_capacity(args.subscribers);
        for i in 0..args.subscribers {
            let url = format!("ws://{addr}/v1/ws");
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
                continue;
            };
            let sub = serde_json::json!({"op":"subscribe","id":1,"channels":channels});
            if ws.send(Message::text(sub.to_string())).await.is_err() {
                continue;
            }
            let sampled = i < args.latency_clients;
            let submit_ns = submit_ns.clone();
            let stop = stop.clone();
            clients.push(tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).ok();
                let mut count = 0u64;
                let mut closed = false;
                loop {
                    let m = tokio::select! {
                        m = ws.next() => m,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {
                            if stop.load(Ordering::Relaxed) { break; }
                            continue;
                        }
                    };
                    match m {
                        Some(Ok(Message::Text(t))) => {
                            count += 1;
                            let s = t.as_str();
                            if sampled
                                && s.starts_with("{\"channel\":\"trades:")
                                && let Some(pos) = s.find("\"id\":\"")
                            {
                                let digits: String = s[pos + 6..]
                                    .chars()
                                    .take_while(char::is_ascii_digit)
                                    .collect();
                                if let Ok(id) = digits.parse::<u64>()
                                    && id > base_id
                                    && let Some(sent) = submit_ns.get((id - base_id - 1) as usize)
                                {
                                    let now = epoch.elapsed().as_nanos() as i64;
                                    let lat_us = (now - sent.load(Ordering::Relaxed)) / 1000;
                                    if let Some(h) = hist.as_mut() {
                                        let _ = h.record(lat_us.max(1) as u64);
                                    }
                                }
                            }
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            closed = !stop.load(Ordering::Relaxed);
                            break;
                        }
                        Some(Ok(_)) => {}
                    }
                }
                (count, hist, closed)
            }));
        }
        Ok::<_, String>((addr, clients))
    })?;
    let _ = addr;
    let connected = clients.len();
    // Let the subscriptions settle.
    std::thread::sleep(Duration::from_millis(500));

    // The order flow: a resting sell and a crossing buy per trade, paced.
    let busy = Arc::new(AtomicU64::new(0));
    let flow_start = Instant::now();
    {
        let pipeline = pipeline.clone();
        let submit_ns = submit_ns.clone();
        let busy = busy.clone();
        let rate = args.trades_per_sec;
        std::thread::spawn(move || {
            let submit = |cmd: Command| loop {
                match pipeline.submit(cmd.clone(), Box::new(|_: &Processed<'_>| {})) {
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
                submit(place(id, 1, Side::Sell, 100_000, 1));
                submit_ns[k as usize].store(epoch.elapsed().as_nanos() as i64, Ordering::Relaxed);
                submit(place(id + 1, 2, Side::Buy, 100_000, 1));
            }
        })
        .join()
        .map_err(|_| "order flow thread panicked")?;
    }
    let flow_secs = flow_start.elapsed();
    // Drain: wait until the pipeline has delivered everything, then a little more.
    let target = pipeline.last_seq();
    while pipeline.last_seq() < target {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let deliver_secs = flow_start.elapsed().saturating_sub(Duration::from_secs(2));
    let results = rt.block_on(async {
        let mut out = Vec::new();
        for c in clients {
            if let Ok(r) = c.await {
                out.push(r);
            }
        }
        out
    });
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?;
    let mut delivered = 0u64;
    let mut closed = 0u64;
    for (count, h, was_closed) in &results {
        delivered += count;
        closed += u64::from(*was_closed);
        if let Some(h) = h {
            let _ = hist.add(h);
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
        clients_closed_early: closed,
        busy_retries: busy.load(Ordering::Relaxed),
    };
    drop(rt);
    if let Ok(p) = Arc::try_unwrap(pipeline) {
        let _ = p.shutdown();
    }
    Ok(report)
}

/// Prints a report as a table or JSON.
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
        "  subscribers {} (connected {}), channels {}, offered {} trades/s for {} s",
        report.subscribers,
        report.connected,
        report.channels,
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
    println!(
        "  clients closed early (slow consumer) {}, busy retries {}",
        report.clients_closed_early, report.busy_retries
    );
}
