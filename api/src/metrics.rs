//! Prometheus text metrics: requests and latencies by route, plus the pipeline's counters.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::http::Method;
use engine::pipeline::PipelineStats;
use parking_lot::Mutex;

use crate::state::Shared;

/// Latency bucket upper bounds in microseconds.
const BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

#[derive(Debug, Default, Clone)]
struct RouteStats {
    count: u64,
    sum_us: u64,
    buckets: [u64; BUCKETS_US.len()],
}

/// The `method` label of a request: one of the methods the API knows, or `other`, so a
/// client sending made-up methods cannot add series without bound.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// One method of one route.
#[derive(Debug, Default, Clone)]
struct MethodStats {
    method: &'static str,
    /// Requests by status.
    statuses: Vec<(u16, u64)>,
    latency: RouteStats,
}

/// Request counters, by route then method (looked up without allocating).
#[derive(Debug, Default)]
pub struct Metrics {
    routes: Mutex<HashMap<String, Vec<MethodStats>>>,
    /// Connections the accept loop refused, by bound.
    pub refused: std::sync::Arc<crate::connections::RefusalCounts>,
}

impl Metrics {
    /// Counts one request; `route` is its matched route (a bounded set: `unmatched` for
    /// none) and the method is labelled by [`method_label`].
    pub fn record(&self, method: &Method, route: &str, status: u16, micros: u64) {
        let method = method_label(method);
        let mut routes = self.routes.lock();
        if !routes.contains_key(route) {
            routes.insert(route.to_string(), Vec::new());
        }
        let methods = routes.get_mut(route).expect("just inserted");
        let i = match methods.iter().position(|m| m.method == method) {
            Some(i) => i,
            None => {
                methods.push(MethodStats {
                    method,
                    ..Default::default()
                });
                methods.len() - 1
            }
        };
        let m = &mut methods[i];
        match m.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => m.statuses.push((status, 1)),
        }
        let s = &mut m.latency;
        s.count += 1;
        s.sum_us += micros;
        for (i, b) in BUCKETS_US.iter().enumerate() {
            if micros <= *b {
                s.buckets[i] += 1;
            }
        }
    }
}

/// The whole `/metrics` text; `stats` is the pipeline's, when there is one.
pub fn render(shared: &Shared, stats: Option<PipelineStats>) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "bourse_http_requests_total",
        "counter",
        "HTTP requests by route and status.",
    );
    let routes = shared.metrics.routes.lock().clone();
    for (r, methods) in &routes {
        for ms in methods {
            let m = &ms.method;
            for (s, n) in &ms.statuses {
                let _ = writeln!(
                    out,
                    "bourse_http_requests_total{{method=\"{m}\",route=\"{r}\",status=\"{s}\"}} {n}"
                );
            }
        }
    }
    family(
        &mut out,
        "bourse_http_request_duration_seconds",
        "histogram",
        "HTTP latency by route.",
    );
    for (r, ms, s) in routes
        .iter()
        .flat_map(|(r, v)| v.iter().map(move |m| (r, &m.method, &m.latency)))
    {
        let m = ms;
        for (i, b) in BUCKETS_US.iter().enumerate() {
            let _ = writeln!(
                out,
                "bourse_http_request_duration_seconds_bucket{{method=\"{m}\",route=\"{r}\",le=\"{}\"}} {}",
                secs_us(*b),
                s.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "bourse_http_request_duration_seconds_bucket{{method=\"{m}\",route=\"{r}\",le=\"+Inf\"}} {}",
            s.count
        );
        let _ = writeln!(
            out,
            "bourse_http_request_duration_seconds_sum{{method=\"{m}\",route=\"{r}\"}} {}",
            secs_us(s.sum_us)
        );
        let _ = writeln!(
            out,
            "bourse_http_request_duration_seconds_count{{method=\"{m}\",route=\"{r}\"}} {}",
            s.count
        );
    }
    let model = &shared.model;
    scalar(
        &mut out,
        "bourse_orders_total",
        "counter",
        "Orders accepted by the engine since start.",
        model.orders_total.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "bourse_auth_secret_verifications_total",
        "counter",
        "Argon2 client secret verifications (unknown clients included).",
        shared.secrets.verifications(),
    );
    family(
        &mut out,
        "bourse_connections_refused_total",
        "counter",
        "Connections refused at a connection bound (503 or closed), by bound.",
    );
    for (limit, n) in [
        ("global", &shared.metrics.refused.global),
        ("per_address", &shared.metrics.refused.per_address),
    ] {
        let _ = writeln!(
            out,
            "bourse_connections_refused_total{{limit=\"{limit}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    scalar(
        &mut out,
        "bourse_history_store_failed",
        "gauge",
        "1 once the history store has stopped (a write error, or its file damaged): history reads and sign-ins are refused until a restart, else 0.",
        u8::from(model.store_failed()),
    );
    scalar(
        &mut out,
        "bourse_history_store_damaged",
        "gauge",
        "1 once SQLite has reported the history store's file damaged (the next start sets it aside and rebuilds it from the journal), else 0.",
        u8::from(model.store_damaged()),
    );
    let (marketdata_stopped, marketdata_damaged) = shared.feed.store_health();
    scalar(
        &mut out,
        "bourse_marketdata_store_stopped",
        "gauge",
        "1 once the market data store's writer has stopped (a write error, or its file damaged): market data stays live in memory, the store no longer follows it, and the next start replays the journal into it, else 0.",
        u8::from(marketdata_stopped),
    );
    scalar(
        &mut out,
        "bourse_marketdata_store_damaged",
        "gauge",
        "1 once SQLite has reported the market data store's file damaged (the next start sets it aside and rebuilds it from the journal), else 0.",
        u8::from(marketdata_damaged),
    );
    scalar(
        &mut out,
        "bourse_trades_total",
        "counter",
        "Trades since start.",
        model.trades_total.load(Ordering::Relaxed),
    );
    if let Some(s) = stats {
        scalar(
            &mut out,
            "bourse_engine_failed",
            "gauge",
            "1 once the engine has stopped for good after a storage failure (restart the server), else 0.",
            u8::from(s.failed),
        );
        scalar(
            &mut out,
            "bourse_pipeline_commands_total",
            "counter",
            "Commands sequenced since start (replay not included).",
            s.commands,
        );
        scalar(
            &mut out,
            "bourse_pipeline_batches_total",
            "counter",
            "Batches handed to the journal writer since start.",
            s.batches,
        );
        scalar(
            &mut out,
            "bourse_pipeline_busy_rejections_total",
            "counter",
            "Submits refused because their ring was full (503).",
            s.busy_rejections,
        );
        scalar(
            &mut out,
            "bourse_pipeline_last_seq",
            "gauge",
            "Sequence number of the last command sequenced.",
            s.last_seq,
        );
        scalar(
            &mut out,
            "bourse_journal_bytes_total",
            "counter",
            "Journal bytes appended since start.",
            s.journal_bytes,
        );
        // One family after the other: a family's samples must not be interleaved with
        // another's (a parser takes the second run of samples for a new, untyped family).
        let ring = |r: &engine::pipeline::RingStats| {
            r.pair
                .map(|p| p.0.to_string())
                .unwrap_or_else(|| "control".into())
        };
        family(
            &mut out,
            "bourse_ring_occupancy",
            "gauge",
            "Commands queued per ring.",
        );
        for r in &s.rings {
            let _ = writeln!(
                out,
                "bourse_ring_occupancy{{ring=\"{}\"}} {}",
                ring(r),
                r.len
            );
        }
        family(
            &mut out,
            "bourse_ring_capacity",
            "gauge",
            "Command slots per ring.",
        );
        for r in &s.rings {
            let _ = writeln!(
                out,
                "bourse_ring_capacity{{ring=\"{}\"}} {}",
                ring(r),
                r.capacity
            );
        }
        family(
            &mut out,
            "bourse_journal_fsync_duration_seconds",
            "histogram",
            "Journal fsync latency.",
        );
        let mut cumulative = 0;
        for (i, n) in s.fsync_us_buckets.iter().enumerate() {
            cumulative += n;
            if i + 1 == s.fsync_us_buckets.len() {
                break;
            }
            let le = secs_us(1u64 << i);
            let _ = writeln!(
                out,
                "bourse_journal_fsync_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "bourse_journal_fsync_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            s.fsyncs
        );
        let _ = writeln!(
            out,
            "bourse_journal_fsync_duration_seconds_sum {}",
            secs_ns(s.fsync_ns_sum)
        );
        let _ = writeln!(
            out,
            "bourse_journal_fsync_duration_seconds_count {}",
            s.fsyncs
        );
        scalar(
            &mut out,
            "bourse_journal_fsync_max_seconds",
            "gauge",
            "Longest journal fsync since start.",
            secs_ns(s.fsync_ns_max),
        );
    }
    out
}

/// A metric family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A family of one unlabelled sample.
fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn secs_us(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

fn secs_ns(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}
