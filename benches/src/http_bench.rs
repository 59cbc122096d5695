//! `bourse bench http`: load over the public REST API.
//!
//! Registers one account per client (`POST /v1/users`), funds it (admin direct deposit, or a
//! self-service deposit where the server auto-approves them), then each client places a resting
//! limit order and cancels it, again and again, over its own keep-alive connection. Buys rest
//! well below the market and sells well above, so the run measures the order path (auth,
//! validation, funds hold, journal fsync, book insert and removal) without depending on fills.
//!
//! Latency is kept in hdrhistogram microseconds. With `--rate` each request has a scheduled
//! send time and its latency is measured from that time, not from when it was actually sent:
//! a stalled server is charged for the queue it causes (no coordinated omission). Without a
//! rate the clients run closed-loop and latency is plain service time.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Value, json};

/// Arguments of `bourse bench http`.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpBenchArgs {
    /// Base URL of a running server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Concurrent clients, each with its own account and keep-alive connection.
    #[arg(long, default_value_t = 8)]
    pub clients: u32,
    /// How long to run: `30s`, `2m`, `500ms` or plain seconds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Target requests per second over all clients (open loop, coordinated-omission corrected).
    /// Without it the clients run closed-loop as fast as the server answers.
    #[arg(long)]
    pub rate: Option<u64>,
    /// The pair to trade.
    #[arg(long, default_value = "BTC_SEK")]
    pub pair: String,
    /// Admin client id, for funding the accounts by direct deposit.
    #[arg(long, env = "BOURSE_ADMIN_CLIENT_ID")]
    pub admin_client_id: Option<String>,
    /// Admin client secret.
    #[arg(long, env = "BOURSE_ADMIN_CLIENT_SECRET", hide_env_values = true)]
    pub admin_client_secret: Option<String>,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses `30s`, `2m`, `500ms`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m, h)")),
    };
    if d.is_zero() {
        return Err("duration must be positive".into());
    }
    Ok(d)
}

/// Runs the bench and prints its report.
pub fn run(args: HttpBenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(run_async(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

// ------------------------------------------------------------------ the machine

/// Cores and CPU model of this machine, for the report.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine { cores, cpu_model }
    }
}

// ------------------------------------------------------------------ REST plumbing

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PairInfo {
    pair: String,
    base: String,
    quote: String,
    price_decimals: u8,
    amount_decimals: u8,
    min_amount: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CurrencyInfo {
    currency: String,
    minor_amount_decimals: u8,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Registered {
    user_id: String,
    client_id: String,
    client_secret: String,
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?)
}

async fn get_json<T: for<'de> Deserialize<'de>>(
    http: &reqwest::Client,
    url: String,
) -> anyhow::Result<T> {
    let res = http.get(&url).send().await.with_context(|| url.clone())?;
    let status = res.status();
    if !status.is_success() {
        bail!("GET {url}: HTTP {status}");
    }
    Ok(res.json().await?)
}

async fn token(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    secret: &str,
    scope: Option<&str>,
) -> anyhow::Result<String> {
    let mut form = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
    if let Some(scope) = scope {
        let _ = write!(form, "&scope={scope}");
    }
    let res = http
        .post(format!("{base}/v1/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("token: HTTP {status} {body}");
    }
    body["access_token"]
        .as_str()
        .map(str::to_string)
        .context("token: no access_token")
}

/// Posts JSON with a bearer token; the problem `code` (or the status) on failure.
async fn post_json(
    http: &reqwest::Client,
    url: &str,
    bearer: &str,
    body: &Value,
) -> Result<Value, String> {
    let res = http
        .post(url)
        .bearer_auth(bearer)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = res.status();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(v)
    } else {
        Err(problem_code(status.as_u16(), &v))
    }
}

fn problem_code(status: u16, v: &Value) -> String {
    v["code"]
        .as_str()
        .map_or_else(|| format!("HTTP_{status}"), str::to_string)
}

// ------------------------------------------------------------------ decimals

fn parse_units(s: &str, decimals: u8) -> Option<u128> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > usize::from(decimals) {
        return None;
    }
    let digits = format!("{int}{frac:0<width$}", width = usize::from(decimals));
    digits.parse().ok()
}

fn format_units(v: u128, decimals: u8) -> String {
    if decimals == 0 {
        return v.to_string();
    }
    let s = format!("{v:0>width$}", width = usize::from(decimals) + 1);
    let (a, b) = s.split_at(s.len() - usize::from(decimals));
    format!("{a}.{b}")
}

/// Microseconds as `1.234 ms` (integers only).
fn fmt_us(us: u64) -> String {
    if us >= 1_000 {
        format!("{}.{:03} ms", us / 1_000, us % 1_000)
    } else {
        format!("{us} us")
    }
}

// ------------------------------------------------------------------ setup

/// Everything a client needs to trade.
struct Plan {
    base: String,
    pair: String,
    amount: String,
    /// Price ranges (ticks) that rest without crossing: buys in `buy_lo..buy_hi`, sells in
    /// `sell_lo..sell_hi`.
    buy: (u128, u128),
    sell: (u128, u128),
    price_decimals: u8,
}

struct Account {
    token: String,
}

async fn setup(
    args: &HttpBenchArgs,
    http: &reqwest::Client,
) -> anyhow::Result<(Plan, Vec<Account>)> {
    let base = args.url.trim_end_matches('/').to_string();
    let pairs: Vec<PairInfo> = get_json(http, format!("{base}/v1/pairs")).await?;
    let currencies: Vec<CurrencyInfo> = get_json(http, format!("{base}/v1/currencies")).await?;
    let p = pairs
        .into_iter()
        .find(|p| p.pair == args.pair)
        .with_context(|| format!("pair {} not listed by the server", args.pair))?;
    let decimals_of = |c: &str| {
        currencies
            .iter()
            .find(|x| x.currency == c)
            .map(|x| x.minor_amount_decimals)
            .with_context(|| format!("currency {c} not listed"))
    };
    let (base_dec, quote_dec) = (decimals_of(&p.base)?, decimals_of(&p.quote)?);
    let ticker: Value = get_json(http, format!("{base}/v1/pairs/{}/ticker", p.pair)).await?;
    let tick = |k: &str| {
        ticker[k]
            .as_str()
            .and_then(|s| parse_units(s, p.price_decimals))
    };
    // Rest far from the market: buys at 50-90 % of the mid (below the best ask), sells at
    // 110-150 % (above the best bid); with an empty book around 100 quote units.
    let fallback = 100 * 10u128.pow(u32::from(p.price_decimals));
    let ask = tick("bestAsk")
        .or(tick("lastPrice"))
        .unwrap_or(fallback)
        .max(20);
    let bid = tick("bestBid")
        .or(tick("lastPrice"))
        .unwrap_or(fallback)
        .max(20);
    let reference = (ask + bid) / 2;
    let plan = Plan {
        base: base.clone(),
        pair: p.pair.clone(),
        amount: p.min_amount.clone(),
        // Disjoint from each other and from the book, so the bench's own orders never cross.
        buy: (reference / 2, (reference * 9 / 10).min(ask - 1)),
        sell: (
            (reference * 11 / 10).max(bid + 1),
            (reference * 3 / 2).max(bid + 2),
        ),
        price_decimals: p.price_decimals,
    };
    let lots = parse_units(&p.min_amount, p.amount_decimals).context("bad minAmount")?;

    // Enough for a thousand of the largest orders, in each currency's minor units.
    let base_minor =
        lots * 1_000 * 10u128.pow(u32::from(base_dec - p.amount_decimals.min(base_dec)));
    let value_dec = u32::from(p.price_decimals) + u32::from(p.amount_decimals);
    let quote_value = plan.sell.1.max(plan.buy.1) * lots * 1_000;
    let quote_minor = quote_value / 10u128.pow(value_dec.saturating_sub(u32::from(quote_dec))) + 1;
    let funding = [
        (p.base.clone(), format_units(base_minor, base_dec)),
        (p.quote.clone(), format_units(quote_minor, quote_dec)),
    ];

    let admin = match (&args.admin_client_id, &args.admin_client_secret) {
        (Some(id), Some(secret)) => Some(token(http, &base, id, secret, Some("admin")).await?),
        _ => None,
    };
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut accounts = Vec::new();
    for i in 0..args.clients {
        let res = http
            .post(format!("{base}/v1/users"))
            .json(&json!({ "name": format!("bench-{run_id}-{i}") }))
            .send()
            .await?;
        let status = res.status();
        if !status.is_success() {
            bail!(
                "POST /v1/users: HTTP {status} {}",
                res.text().await.unwrap_or_default()
            );
        }
        let r: Registered = res.json().await?;
        let t = token(http, &base, &r.client_id, &r.client_secret, None).await?;
        for (currency, amount) in &funding {
            let external_id = format!("bench-{run_id}-{i}-{currency}");
            let status = match &admin {
                Some(admin) => post_json(
                    http,
                    &format!("{base}/v1/admin/deposits"),
                    admin,
                    &json!({ "userId": r.user_id, "currency": currency, "amount": amount, "externalId": external_id }),
                )
                .await,
                None => post_json(
                    http,
                    &format!("{base}/v1/wallet/deposits"),
                    &t,
                    &json!({ "currency": currency, "amount": amount, "externalId": external_id }),
                )
                .await,
            }
            .map_err(|code| anyhow::anyhow!("funding {currency}: {code}"))?;
            if status["status"] != "completed" {
                bail!(
                    "the deposit is {} (not completed): give admin credentials \
                     (--admin-client-id/--admin-client-secret or BOURSE_ADMIN_CLIENT_ID/SECRET), \
                     or run the server with deposit auto-approval",
                    status["status"]
                );
            }
        }
        accounts.push(Account { token: t });
    }
    Ok((plan, accounts))
}

// ------------------------------------------------------------------ the load

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// One client's tallies.
struct Tally {
    place: Histogram<u64>,
    cancel: Histogram<u64>,
    errors: Vec<String>,
}

#[derive(Default)]
struct Live {
    ops: AtomicU64,
    errors: AtomicU64,
}

/// A tiny xorshift for prices: deterministic per client, no dependency.
struct Xs(u64);

impl Xs {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn in_range(&mut self, lo: u128, hi: u128) -> u128 {
        if hi <= lo {
            return lo;
        }
        lo + u128::from(self.next()) % (hi - lo)
    }
}

#[allow(clippy::too_many_arguments)]
async fn client_loop(
    index: u32,
    clients: u32,
    plan: Arc<Plan>,
    account: Account,
    deadline: Instant,
    start: Instant,
    interval: Option<Duration>,
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Tally> {
    let http = http_client()?;
    let orders_url = format!("{}/v1/orders", plan.base);
    let mut tally = Tally {
        place: histogram(),
        cancel: histogram(),
        errors: Vec::new(),
    };
    let mut rng =
        Xs(0x9e37_79b9_7f4a_7c15 ^ (u64::from(index) + 1).wrapping_mul(0xff51_afd7_ed55_8ccd));
    let mut seq: u64 = 0;
    // Spread the clients' schedules over one interval.
    let mut next_send = interval.map(|i| start + i * index / clients);
    let record = |h: &mut Histogram<u64>, scheduled: Instant| {
        let us = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX);
        h.saturating_record(us.max(1));
    };
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        // Place.
        let scheduled = wait_turn(&mut next_send, interval).await;
        seq += 1;
        let buy = (seq + u64::from(index)).is_multiple_of(2);
        let (lo, hi) = if buy { plan.buy } else { plan.sell };
        let price = format_units(rng.in_range(lo, hi), plan.price_decimals);
        let body = json!({
            "pair": plan.pair,
            "side": if buy { "buy" } else { "sell" },
            "type": "limit",
            "price": price,
            "amount": plan.amount,
            "timeInForce": "GTC",
            // Accounts are fresh each run, so a per-client counter is unique per account.
            "clientId": format!("b{index}-{seq}"),
        });
        let placed = post_json(&http, &orders_url, &account.token, &body).await;
        record(&mut tally.place, scheduled);
        live.ops.fetch_add(1, Ordering::Relaxed);
        let order = match placed {
            Ok(o) => o,
            Err(code) => {
                live.errors.fetch_add(1, Ordering::Relaxed);
                tally.errors.push(format!("place {code}"));
                continue;
            }
        };
        let Some(id) = order["id"].as_str() else {
            continue;
        };
        if order["status"] != "open" {
            continue;
        }
        // Cancel. Past the deadline the order is still cancelled (leaving the book as found),
        // just not measured.
        if Instant::now() >= deadline {
            let _ = http
                .delete(format!("{orders_url}/{id}"))
                .bearer_auth(&account.token)
                .send()
                .await;
            break;
        }
        let scheduled = wait_turn(&mut next_send, interval).await;
        let res = http
            .delete(format!("{orders_url}/{id}"))
            .bearer_auth(&account.token)
            .send()
            .await;
        let ok = match res {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                Ok(())
            }
            Ok(r) => {
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                Err(problem_code(status, &v))
            }
            Err(e) => Err(format!("transport: {e}")),
        };
        record(&mut tally.cancel, scheduled);
        live.ops.fetch_add(1, Ordering::Relaxed);
        if let Err(code) = ok {
            live.errors.fetch_add(1, Ordering::Relaxed);
            tally.errors.push(format!("cancel {code}"));
        }
    }
    Ok(tally)
}

/// Waits for the next scheduled send time (open loop) and returns the time the latency is
/// measured from; closed loop returns now.
async fn wait_turn(next_send: &mut Option<Instant>, interval: Option<Duration>) -> Instant {
    match (next_send.as_mut(), interval) {
        (Some(t), Some(i)) => {
            let scheduled = *t;
            *t += i;
            tokio::time::sleep_until(scheduled.into()).await;
            scheduled
        }
        _ => Instant::now(),
    }
}

// ------------------------------------------------------------------ report

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    machine: Machine,
    url: String,
    pair: String,
    clients: u32,
    duration: Duration,
    rate: Option<u64>,
    elapsed: Duration,
    place: Histogram<u64>,
    cancel: Histogram<u64>,
    all: Histogram<u64>,
    errors: std::collections::BTreeMap<String, u64>,
}

fn percentiles(h: &Histogram<u64>) -> [(&'static str, u64); 6] {
    [
        ("p50", h.value_at_quantile(0.5)),
        ("p90", h.value_at_quantile(0.9)),
        ("p99", h.value_at_quantile(0.99)),
        ("p99.9", h.value_at_quantile(0.999)),
        ("p99.99", h.value_at_quantile(0.9999)),
        ("max", h.max()),
    ]
}

impl Report {
    fn ops_per_sec(&self, n: u64) -> u64 {
        let us = u64::try_from(self.elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        n.saturating_mul(1_000_000) / us
    }

    /// The human report.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "bourse bench http");
        let _ = writeln!(
            s,
            "machine   {} cores, {}",
            self.machine.cores, self.machine.cpu_model
        );
        let _ = writeln!(
            s,
            "settings  url={} pair={} clients={} duration={}s rate={} (place+cancel of resting limit orders)",
            self.url,
            self.pair,
            self.clients,
            self.duration.as_secs(),
            self.rate.map_or_else(
                || "closed-loop".to_string(),
                |r| format!("{r}/s (latency from scheduled send)")
            )
        );
        let _ = writeln!(s, "elapsed   {} ms", self.elapsed.as_millis());
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<8} {:>9} {:>9} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            "op", "count", "ops/s", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for (name, h) in [
            ("place", &self.place),
            ("cancel", &self.cancel),
            ("all", &self.all),
        ] {
            let p = percentiles(h);
            let _ = writeln!(
                s,
                "{:<8} {:>9} {:>9} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
                name,
                h.len(),
                self.ops_per_sec(h.len()),
                fmt_us(p[0].1),
                fmt_us(p[1].1),
                fmt_us(p[2].1),
                fmt_us(p[3].1),
                fmt_us(p[4].1),
                fmt_us(p[5].1),
            );
        }
        let total_errors: u64 = self.errors.values().sum();
        let _ = writeln!(s);
        let _ = writeln!(s, "errors    {total_errors}");
        for (code, n) in &self.errors {
            let _ = writeln!(s, "  {code}: {n}");
        }
        s
    }

    /// The machine-readable report.
    pub fn to_json(&self) -> Value {
        let lat = |h: &Histogram<u64>| {
            let mut m = serde_json::Map::new();
            m.insert("count".into(), json!(h.len()));
            m.insert("opsPerSec".into(), json!(self.ops_per_sec(h.len())));
            for (k, v) in percentiles(h) {
                m.insert(format!("latencyUs_{k}"), json!(v));
            }
            Value::Object(m)
        };
        json!({
            "bench": "http",
            "machine": { "cores": self.machine.cores, "cpuModel": self.machine.cpu_model },
            "settings": {
                "url": self.url, "pair": self.pair, "clients": self.clients,
                "durationSecs": self.duration.as_secs(), "rate": self.rate,
                "coordinatedOmissionCorrected": self.rate.is_some(),
            },
            "elapsedMs": u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX),
            "place": lat(&self.place),
            "cancel": lat(&self.cancel),
            "all": lat(&self.all),
            "errors": self.errors,
        })
    }
}

/// Sets up the accounts, runs the load and gathers the report.
pub async fn run_async(args: &HttpBenchArgs) -> anyhow::Result<Report> {
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let http = http_client()?;
    let progress = !args.json;
    if progress {
        eprintln!(
            "registering and funding {} accounts on {} ...",
            args.clients, args.url
        );
    }
    let (plan, accounts) = setup(args, &http).await?;
    let plan = Arc::new(plan);
    let interval = match args.rate {
        Some(0) => bail!("--rate must be positive"),
        Some(r) => Some(Duration::from_nanos(
            (1_000_000_000u64 * u64::from(args.clients)) / r,
        )),
        None => None,
    };
    let live = Arc::new(Live::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut tasks = Vec::new();
    for (i, account) in accounts.into_iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        tasks.push(tokio::spawn(client_loop(
            index,
            args.clients,
            plan.clone(),
            account,
            deadline,
            start,
            interval,
            live.clone(),
            stop.clone(),
        )));
    }

    let bar = if progress {
        let bar = indicatif::ProgressBar::new(args.duration.as_secs().max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len}s {msg}",
            )
            .expect("valid template"),
        );
        Some(bar)
    } else {
        None
    };
    let mut last = (Instant::now(), 0u64);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(bar) = &bar {
            let ops = live.ops.load(Ordering::Relaxed);
            let dt = u64::try_from(last.0.elapsed().as_micros())
                .unwrap_or(1)
                .max(1);
            let rate = (ops - last.1) * 1_000_000 / dt;
            last = (Instant::now(), ops);
            bar.set_position(start.elapsed().as_secs());
            bar.set_message(format!(
                "{ops} requests, {rate}/s, {} errors",
                live.errors.load(Ordering::Relaxed)
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut place = histogram();
    let mut cancel = histogram();
    let mut errors = std::collections::BTreeMap::new();
    for t in tasks {
        let tally = t.await??;
        place.add(&tally.place)?;
        cancel.add(&tally.cancel)?;
        for e in tally.errors {
            *errors.entry(e).or_insert(0) += 1;
        }
    }
    let elapsed = start.elapsed();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut all = histogram();
    all.add(&place)?;
    all.add(&cancel)?;
    Ok(Report {
        machine: Machine::detect(),
        url: args.url.clone(),
        pair: args.pair.clone(),
        clients: args.clients,
        duration: args.duration,
        rate: args.rate,
        elapsed,
        place,
        cancel,
        all,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("3x").is_err());
    }

    #[test]
    fn units_round_trip() {
        assert_eq!(parse_units("0.0001", 8), Some(10_000));
        assert_eq!(parse_units("12", 2), Some(1_200));
        assert_eq!(parse_units("1.234", 2), None);
        assert_eq!(format_units(10_000, 8), "0.00010000");
        assert_eq!(fmt_us(1_234), "1.234 ms");
        assert_eq!(fmt_us(999), "999 us");
    }
}
