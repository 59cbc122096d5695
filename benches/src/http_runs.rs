//! `bourse bench http --runs N`: the spread of several runs of one setting.
//!
//! This machine's speed drifts from minute to minute (the same binary's creates/s move by
//! +-15 % and a p99 by more), so a figure is several runs: the lowest, median and highest
//! creates/s, create p99, `/health` answers/s and their ratio, the four numbers the HTTP
//! speed target is stated in. Each run's own report is printed before it; with `--json` the
//! reports and the spread make one document, `{"runs": [...], "spread": {...}}`.

use feed::bench::Spread;
use serde::Serialize;

use crate::http_bench::Report;

/// The spread of several runs (`--runs`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRunsSpread {
    pub runs: usize,
    pub creates_per_sec: Spread,
    pub create_ms_p99: Spread,
    /// Absent with `--no-health`.
    pub health_per_sec: Option<Spread>,
    /// Creates/s over `/health`/s of the same run; absent with `--no-health` or `--rate`.
    pub creates_to_health: Option<Spread>,
}

impl HttpRunsSpread {
    /// None for no reports.
    #[allow(clippy::float_arithmetic)]
    pub fn of(reports: &[Report]) -> Option<HttpRunsSpread> {
        let all = |f: &dyn Fn(&Report) -> Option<f64>| -> Option<Spread> {
            let v: Option<Vec<f64>> = reports.iter().map(f).collect();
            Spread::of(v?)
        };
        Some(HttpRunsSpread {
            runs: reports.len(),
            creates_per_sec: all(&|r| Some(r.creates_per_sec() as f64))?,
            create_ms_p99: all(&|r| Some(r.create_us_p99() as f64 / 1000.0))?,
            health_per_sec: all(&|r| r.health_per_sec().map(|h| h as f64)),
            creates_to_health: all(&|r| r.ratio_permille().map(|p| p as f64 / 1000.0)),
        })
    }

    /// The spread as table lines (with `--json` it goes into the one document instead).
    pub fn print_table(&self) {
        println!("bourse bench http, {} runs", self.runs);
        println!("{}", self.creates_per_sec.line("creates", 0, "/s"));
        println!("{}", self.create_ms_p99.line("create p99", 2, " ms"));
        if let Some(h) = &self.health_per_sec {
            println!("{}", h.line("health", 0, "/s"));
        }
        if let Some(r) = &self.creates_to_health {
            println!("{}", r.line("creates / health", 3, ""));
        }
    }
}
