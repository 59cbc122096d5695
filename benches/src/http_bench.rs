//! `bourse bench http`: load over the public REST API.
//!
//! Registers one account per client (`POST /v1/users`), funds it (admin direct deposit, or a
//! self-service deposit where the server auto-approves them), then each client places a resting
//! limit order and cancels it, again and again, over its own keep-alive connection. Buys rest
//! well below the market and sells well above, so the run measures the order path (auth,
//! validation, funds hold, journal fsync, book insert and removal) without depending on fills.
//!
//! Before the orders, the same connections send `GET /health` for the same duration
//! (closed loop): what the server answers when a request costs it nothing, run on the same
//! machine at the same moment. The report gives creates/s over health/s as the ratio the
//! speed target is stated in (`--no-health` skips it; `--no-cancel` places only).
//!
//! The load itself goes through a lean client ([`Conn`]): one raw keep-alive TCP connection
//! per client, requests written as bytes, responses parsed only as far as the status line,
//! `Content-Length` and the body. A general client (reqwest, hyper) costs several times
//! more CPU per request, and on a machine where the generator shares the cores with the
//! server that is CPU taken from the server: the bench would measure itself. Set-up
//! (registration, tokens, funding) still uses reqwest.
//!
//! Latency is kept in hdrhistogram microseconds. With `--rate` each request has a scheduled
//! send time and its latency is measured from that time, not from when it was actually sent:
//! a stalled server is charged for the queue it causes (no coordinated omission). The wait
//! for that time is tokio's timer (1 ms resolution), so the generator's own lateness is in
//! every figure too; the report gives it apart (`timer` line, `generatorTimerLateness`:
//! p50 ~0.9 ms, p99 ~2.4 ms at 20,000/s on the project's machine, session 13). A client
//! has one request in flight on its connection (HTTP/1.1), so a send whose time comes while
//! the previous answer is still awaited goes out late, behind it, and that wait is charged
//! too: the report counts those sends (`queued` line, `sendsBehindSchedule`). At 30,000/s
//! over 128 connections (a send per connection every 4.3 ms against answers of ~2 ms) that
//! was 23-28 % of the sends in session 14; over 512 connections 9-13 %, but the server's
//! cost per request rose with them and the tail with it (`docs/performance-log.md`).
//! Without a rate the clients run closed-loop and latency is plain service time.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use engine::units::format_units;
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http_runs::HttpRunsSpread;
use crate::proc_cpu::{self, CpuSnapshot};
use crate::spawned_server::SpawnedServer;

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
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Place orders only (they rest; the accounts are funded for it): creates/s alone,
    /// instead of place+cancel pairs. Each account's open orders grow: past the server's
    /// `max_open_orders_per_account` (100,000 by default; `--spawn-server` lifts it) the
    /// places are refused with 409s.
    #[arg(long)]
    pub no_cancel: bool,
    /// Skip the `GET /health` phase (and the ratio).
    #[arg(long)]
    pub no_health: bool,
    /// Process id of the server when it runs on this machine (Linux): the report then gives
    /// the CPU each phase cost the server per request, by thread, next to the load
    /// generator's own (from `/proc/PID/task/*/schedstat`).
    #[arg(long, conflicts_with = "spawn_server")]
    pub server_pid: Option<u32>,
    /// Start a fresh `bourse serve` for each run and stop it after (a free loopback port, a
    /// temporary data dir, the rate limit off, an admin of its own to fund the accounts):
    /// runs then start alike, and the CPU lines come with them. `--url` and `--server-pid`
    /// are the bench's own then.
    #[arg(long, conflicts_with = "url")]
    pub spawn_server: bool,
    /// With `--spawn-server`: the `bourse` executable to start (default: this one), to
    /// compare two builds under the same load generator.
    #[arg(long, requires = "spawn_server")]
    pub server_exe: Option<std::path::PathBuf>,
    /// With `--spawn-server`: the spawned server's `worker_threads` setting (default: the
    /// server's own, one per CPU).
    #[arg(long, requires = "spawn_server")]
    pub server_worker_threads: Option<usize>,
    /// Run the whole bench this many times and end with the spread of the runs (lowest,
    /// median and highest creates/s, create p99, `/health`/s and their ratio).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
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

/// Runs the bench (`--runs` times, each against a server of its own with `--spawn-server`)
/// and prints each report, then the spread of the runs.
pub fn run(args: HttpBenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let exe = match (&args.server_exe, args.spawn_server) {
        (Some(exe), _) => Some(exe.clone()),
        (None, true) => Some(std::env::current_exe().context("this executable, to spawn `serve`")?),
        (None, false) => None,
    };
    let mut reports = Vec::new();
    for _ in 0..args.runs {
        let report = match &exe {
            Some(exe) => {
                let server = SpawnedServer::start(exe, args.server_worker_threads)?;
                let mut on_it = args.clone();
                on_it.url = server.url();
                on_it.server_pid = Some(server.pid());
                on_it.admin_client_id = Some(server.admin_client_id.clone());
                on_it.admin_client_secret = Some(server.admin_client_secret.clone());
                let report = rt.block_on(run_async(&on_it));
                let stopped = server.stop();
                // A failed run's own error first; a server that then did not stop cleanly
                // makes the run's figures suspect too.
                let report = report?;
                stopped?;
                report
            }
            None => rt.block_on(run_async(&args))?,
        };
        // With `--json`, stdout is one document: the report, or with `--runs` over 1 every
        // run's report and their spread, printed once all have run.
        if args.json {
            if args.runs == 1 {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            }
        } else {
            print!("{}", report.table());
        }
        reports.push(report);
    }
    if reports.len() > 1
        && let Some(spread) = HttpRunsSpread::of(&reports)
    {
        if args.json {
            let runs: Vec<serde_json::Value> = reports.iter().map(Report::to_json).collect();
            let doc = serde_json::json!({ "runs": runs, "spread": spread });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            spread.print_table();
        }
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

/// How long the bench waits for a server that is still starting.
const READY_WAIT: Duration = Duration::from_secs(120);

/// Waits until `GET /ready` is 200: a server just started answers on its address while it
/// recovers (`/health` 200 "starting", everything else 503), so a script that starts one and
/// then this bench needs no wait of its own. A server that cannot be reached is an error at
/// once.
async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let url = format!("{base}/ready");
    let deadline = std::time::Instant::now() + READY_WAIT;
    loop {
        let res = http.get(&url).send().await.with_context(|| url.clone())?;
        if res.status().is_success() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!("GET {url}: HTTP {} for {READY_WAIT:?}", res.status());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

    // Enough for a thousand of the largest orders (place+cancel keeps at most one open), or
    // a million when they all rest, in each currency's minor units.
    let orders: u128 = if args.no_cancel { 1_000_000 } else { 1_000 };
    let base_minor =
        lots * orders * 10u128.pow(u32::from(base_dec - p.amount_decimals.min(base_dec)));
    let value_dec = u32::from(p.price_decimals) + u32::from(p.amount_decimals);
    let quote_value = plan.sell.1.max(plan.buy.1) * lots * orders;
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

// ------------------------------------------------------------------ the lean client

/// A minimal HTTP/1.1 keep-alive client over one TCP connection.
///
/// The load generator shares the cores with the server, so every cycle it spends is taken
/// from what it measures: requests are written as ready-made bytes and a response is parsed
/// only as far as the status line, `Content-Length` and the body (no header map, no
/// allocation per request once the buffers have grown). One request at a time per
/// connection, no pipelining, like a real keep-alive client.
struct Conn {
    addr: std::net::SocketAddr,
    stream: Option<tokio::net::TcpStream>,
    /// Received bytes: `buf[..filled]`; a response starts at 0.
    buf: Vec<u8>,
    filled: usize,
    /// The last response's body in `buf`, and the bytes it spans with its head.
    body: std::ops::Range<usize>,
    consumed: usize,
}

/// How a request failed on the wire.
#[derive(Debug, thiserror::Error)]
enum WireError {
    #[error("transport: {0}")]
    Io(#[from] std::io::Error),
    #[error("transport: connection closed")]
    Closed,
    #[error("transport: bad response ({0})")]
    Bad(&'static str),
}

/// Where `needle` starts in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a response head (`head` ends with the blank line): status and body length.
fn parse_head(head: &[u8]) -> Result<(u16, usize), WireError> {
    let status = head
        .get(9..12)
        .filter(|_| head.starts_with(b"HTTP/1."))
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse::<u16>().ok())
        .ok_or(WireError::Bad("status line"))?;
    let mut length = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        if name.eq_ignore_ascii_case(b"content-length") {
            length = std::str::from_utf8(&value[1..])
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(WireError::Bad("chunked body"));
        }
    }
    match length {
        Some(n) => Ok((status, n)),
        None if status == 204 || status == 304 || (100..200).contains(&status) => Ok((status, 0)),
        None => Err(WireError::Bad("no Content-Length")),
    }
}

impl Conn {
    async fn connect(addr: std::net::SocketAddr) -> Result<Conn, WireError> {
        let mut c = Conn {
            addr,
            stream: None,
            buf: vec![0; 16 * 1024],
            filled: 0,
            body: 0..0,
            consumed: 0,
        };
        c.reconnect().await?;
        Ok(c)
    }

    async fn reconnect(&mut self) -> Result<(), WireError> {
        self.stream = None;
        self.filled = 0;
        self.consumed = 0;
        let s = tokio::net::TcpStream::connect(self.addr).await?;
        s.set_nodelay(true)?;
        self.stream = Some(s);
        Ok(())
    }

    /// Sends `request` (complete bytes) and reads the response; the body is [`Conn::body`].
    /// A connection the server closed is reopened once before the request is sent.
    async fn send(&mut self, request: &[u8]) -> Result<u16, WireError> {
        use tokio::io::AsyncWriteExt;
        // Drop the previous response.
        if self.consumed > 0 {
            self.buf.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
        if self.stream.is_none() {
            self.reconnect().await?;
        }
        let stream = self.stream.as_mut().ok_or(WireError::Closed)?;
        if let Err(e) = stream.write_all(request).await {
            self.stream = None;
            return Err(e.into());
        }
        let result = self.read_response().await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn read_response(&mut self) -> Result<u16, WireError> {
        use tokio::io::AsyncReadExt;
        let stream = self.stream.as_mut().ok_or(WireError::Closed)?;
        let mut scanned: usize = 0;
        let (status, head_len, body_len) = loop {
            if let Some(i) = find(
                &self.buf[scanned.saturating_sub(3)..self.filled],
                b"\r\n\r\n",
            ) {
                let end = scanned.saturating_sub(3) + i + 4;
                let (status, n) = parse_head(&self.buf[..end])?;
                break (status, end, n);
            }
            scanned = self.filled;
            if self.filled == self.buf.len() {
                if self.buf.len() >= 1 << 20 {
                    return Err(WireError::Bad("head too large"));
                }
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = stream.read(&mut self.buf[self.filled..]).await?;
            if n == 0 {
                return Err(WireError::Closed);
            }
            self.filled += n;
        };
        let total = head_len + body_len;
        if self.buf.len() < total {
            self.buf.resize(total, 0);
        }
        while self.filled < total {
            let n = stream.read(&mut self.buf[self.filled..]).await?;
            if n == 0 {
                return Err(WireError::Closed);
            }
            self.filled += n;
        }
        self.body = head_len..total;
        self.consumed = total;
        Ok(status)
    }

    fn body(&self) -> &[u8] {
        &self.buf[self.body.clone()]
    }
}

/// The first `"key":"value"` string value in a JSON text (enough for the fields the bench
/// reads: the order's `id` and `status` come before its fills, a problem's `code`).
fn json_str<'a>(body: &'a [u8], key: &str) -> Option<&'a str> {
    let mut pat = Vec::with_capacity(key.len() + 4);
    pat.push(b'"');
    pat.extend_from_slice(key.as_bytes());
    pat.extend_from_slice(b"\":");
    let at = find(body, &pat)? + pat.len();
    let rest = &body[at..];
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// The problem `code` of an error response, or `HTTP_<status>`.
fn wire_code(status: u16, body: &[u8]) -> String {
    json_str(body, "code").map_or_else(|| format!("HTTP_{status}"), str::to_string)
}

/// `host:port` of an `http://` URL, resolved.
async fn socket_addr(url: &str) -> anyhow::Result<(std::net::SocketAddr, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let with_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = tokio::net::lookup_host(&with_port)
        .await?
        .next()
        .with_context(|| format!("{authority}: no address"))?;
    Ok((addr, authority.to_string()))
}

// ------------------------------------------------------------------ the load

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// One client's tallies.
struct Tally {
    place: Histogram<u64>,
    cancel: Histogram<u64>,
    health: Histogram<u64>,
    /// With `--rate`: how late the generator's own timer woke for a scheduled send (only
    /// waits that slept; a send already behind schedule is the server's lateness).
    late: Histogram<u64>,
    /// With `--rate`: sends whose scheduled time had passed before their connection was
    /// free, so they queued behind that connection's previous request.
    behind: u64,
    errors: Vec<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            place: histogram(),
            cancel: histogram(),
            health: histogram(),
            late: histogram(),
            behind: 0,
            errors: Vec::new(),
        }
    }
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

/// What a phase sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// `GET /health`, closed loop: what the server answers when a request costs nothing.
    Health,
    /// Place (and, unless `--no-cancel`, cancel) resting limit orders.
    Orders,
}

/// One client's share of a phase.
struct ClientRun {
    index: u32,
    clients: u32,
    phase: Phase,
    plan: Arc<Plan>,
    host: Arc<str>,
    token: String,
    deadline: Instant,
    start: Instant,
    interval: Option<Duration>,
    cancel: bool,
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
}

/// Appends a request with an optional bearer token and JSON body.
fn write_request(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    host: &str,
    bearer: Option<&str>,
    body: &[u8],
) {
    out.clear();
    let _ = write!(Bytes(out), "{method} {path} HTTP/1.1\r\nhost: {host}\r\n");
    if let Some(t) = bearer {
        let _ = write!(Bytes(out), "authorization: Bearer {t}\r\n");
    }
    if !body.is_empty() || method == "POST" {
        let _ = write!(
            Bytes(out),
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// `fmt::Write` into a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

async fn client_loop(run: ClientRun, conn: &mut Conn) -> anyhow::Result<Tally> {
    let mut tally = Tally::new();
    let plan = &run.plan;
    let mut rng =
        Xs(0x9e37_79b9_7f4a_7c15 ^ (u64::from(run.index) + 1).wrapping_mul(0xff51_afd7_ed55_8ccd));
    let mut seq: u64 = 0;
    // Health runs closed loop; orders follow `--rate` when given. Spread the clients'
    // schedules over one interval.
    let interval = if run.phase == Phase::Health {
        None
    } else {
        run.interval
    };
    let mut next_send = interval.map(|i| run.start + i * run.index / run.clients);
    let record = |h: &mut Histogram<u64>, scheduled: Instant| {
        let us = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX);
        h.saturating_record(us.max(1));
    };
    let mut req = Vec::with_capacity(512);
    let mut body = Vec::with_capacity(256);
    let mut path = String::with_capacity(64);
    let host = &*run.host;
    let token = run.token.as_str();
    // A client id unique per account across runs of this process (accounts are fresh).
    let tag = match run.phase {
        Phase::Health => 'h',
        Phase::Orders => 'b',
    };
    while Instant::now() < run.deadline && !run.stop.load(Ordering::Relaxed) {
        if run.phase == Phase::Health {
            let scheduled = Instant::now();
            write_request(&mut req, "GET", "/health", host, None, b"");
            let res = conn.send(&req).await;
            record(&mut tally.health, scheduled);
            run.live.ops.fetch_add(1, Ordering::Relaxed);
            match res {
                Ok(200) => {}
                Ok(status) => {
                    run.live.errors.fetch_add(1, Ordering::Relaxed);
                    tally
                        .errors
                        .push(format!("health {}", wire_code(status, conn.body())));
                }
                Err(e) => {
                    run.live.errors.fetch_add(1, Ordering::Relaxed);
                    tally.errors.push(format!("health {e}"));
                }
            }
            continue;
        }
        // Place.
        let scheduled = wait_turn(&mut next_send, interval, &mut tally).await;
        seq += 1;
        let buy = (seq + u64::from(run.index)).is_multiple_of(2);
        let (lo, hi) = if buy { plan.buy } else { plan.sell };
        let price = format_units(rng.in_range(lo, hi), plan.price_decimals);
        body.clear();
        let _ = write!(
            Bytes(&mut body),
            "{{\"pair\":\"{}\",\"side\":\"{}\",\"type\":\"limit\",\"price\":\"{price}\",\
             \"amount\":\"{}\",\"timeInForce\":\"GTC\",\"clientId\":\"{tag}{}-{seq}\"}}",
            plan.pair,
            if buy { "buy" } else { "sell" },
            plan.amount,
            run.index,
        );
        write_request(&mut req, "POST", "/v1/orders", host, Some(token), &body);
        let placed = conn.send(&req).await;
        record(&mut tally.place, scheduled);
        run.live.ops.fetch_add(1, Ordering::Relaxed);
        let id = match placed {
            Ok(201) => {
                let b = conn.body();
                match (json_str(b, "id"), json_str(b, "status")) {
                    (Some(id), Some("open")) => Some(id.to_string()),
                    _ => None,
                }
            }
            Ok(status) => {
                run.live.errors.fetch_add(1, Ordering::Relaxed);
                tally
                    .errors
                    .push(format!("place {}", wire_code(status, conn.body())));
                continue;
            }
            Err(e) => {
                run.live.errors.fetch_add(1, Ordering::Relaxed);
                tally.errors.push(format!("place {e}"));
                continue;
            }
        };
        let Some(id) = id else { continue };
        if !run.cancel {
            continue;
        }
        // Cancel. Past the deadline the order is still cancelled (leaving the book as found),
        // just not measured.
        path.clear();
        let _ = write!(path, "/v1/orders/{id}");
        write_request(&mut req, "DELETE", &path, host, Some(token), b"");
        if Instant::now() >= run.deadline {
            let _ = conn.send(&req).await;
            break;
        }
        let scheduled = wait_turn(&mut next_send, interval, &mut tally).await;
        let res = conn.send(&req).await;
        record(&mut tally.cancel, scheduled);
        run.live.ops.fetch_add(1, Ordering::Relaxed);
        let failed = match res {
            Ok(200) => None,
            Ok(status) => Some(wire_code(status, conn.body())),
            Err(e) => Some(e.to_string()),
        };
        if let Some(code) = failed {
            run.live.errors.fetch_add(1, Ordering::Relaxed);
            tally.errors.push(format!("cancel {code}"));
        }
    }
    Ok(tally)
}

/// Waits for the next scheduled send (open loop) and returns its time, recording in
/// `tally.late` how late the timer woke when the wait slept, and counting in `tally.behind`
/// a send already behind schedule (it queued behind its connection's previous request: the
/// server's lateness, not the timer's); closed loop: now, at once.
async fn wait_turn(
    next_send: &mut Option<Instant>,
    interval: Option<Duration>,
    tally: &mut Tally,
) -> Instant {
    match (next_send.as_mut(), interval) {
        (Some(t), Some(i)) => {
            let scheduled = *t;
            *t += i;
            if scheduled > Instant::now() {
                tokio::time::sleep_until(scheduled.into()).await;
                let us = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX);
                tally.late.saturating_record(us.max(1));
            } else {
                tally.behind += 1;
            }
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
    threads: usize,
    duration: Duration,
    rate: Option<u64>,
    cancel: bool,
    /// The order phase's wall time.
    elapsed: Duration,
    place: Histogram<u64>,
    cancel_h: Histogram<u64>,
    all: Histogram<u64>,
    /// The health phase (same connections, same duration), unless `--no-health`.
    health: Option<(Duration, Histogram<u64>)>,
    /// With `--rate`: the generator's timer lateness ([`Tally::late`]).
    late: Histogram<u64>,
    /// With `--rate`: sends that queued behind their connection ([`Tally::behind`]).
    behind: u64,
    errors: std::collections::BTreeMap<String, u64>,
    /// CPU used during the health phase and the order phase.
    health_cpu: Option<PhaseCpu>,
    orders_cpu: PhaseCpu,
}

/// The CPU a phase used, over its timed window: the server's (with `--server-pid`) and the
/// load generator's, by thread group.
#[derive(Debug, Clone, Default)]
struct PhaseCpu {
    window: Duration,
    server: Option<CpuSnapshot>,
    bench: CpuSnapshot,
}

impl PhaseCpu {
    /// One line: per-request CPU of the server by thread group, and of the load generator.
    fn line(&self, name: &str, requests: u64) -> String {
        let cores = |ns: u64| {
            let w = u64::try_from(self.window.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            fmt_permille(ns / w) // ns per µs = thousandths of a core
        };
        let us = |ns: u64| format!("{}.{}", ns / 1_000, (ns % 1_000) / 100);
        let mut s = format!("cpu       {name}: ");
        if let Some(server) = &self.server {
            let (total, groups) = proc_cpu::per_request(server, requests);
            let parts: Vec<String> = groups
                .iter()
                .map(|(g, ns)| format!("{g} {}", us(*ns)))
                .collect();
            let switches = server.total().switches.saturating_mul(100) / requests.max(1);
            let _ = write!(
                s,
                "server {} us/request on {} cores ({}; {}.{:02} context switches/request), ",
                us(total),
                cores(server.total().cpu_ns),
                parts.join(", "),
                switches / 100,
                switches % 100
            );
        }
        let (bench, _) = proc_cpu::per_request(&self.bench, requests);
        let _ = write!(
            s,
            "load generator {} us/request on {} cores",
            us(bench),
            cores(self.bench.total().cpu_ns)
        );
        s
    }

    fn to_json(&self, requests: u64) -> Value {
        let side = |snap: &CpuSnapshot| {
            let (total, groups) = proc_cpu::per_request(snap, requests);
            json!({
                "nsPerRequest": total,
                "cpuNs": snap.total().cpu_ns,
                "voluntaryContextSwitches": snap.total().switches,
                "threads": groups.into_iter().map(|(g, ns)| json!({"name": g, "nsPerRequest": ns})).collect::<Vec<_>>(),
            })
        };
        json!({
            "windowMs": u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX),
            "server": self.server.as_ref().map(side),
            "loadGenerator": side(&self.bench),
        })
    }
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

fn per_sec(n: u64, elapsed: Duration) -> u64 {
    let us = u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    n.saturating_mul(1_000_000) / us
}

/// `a / b` in thousandths (integers only).
fn permille(a: u64, b: u64) -> u64 {
    a.saturating_mul(1_000) / b.max(1)
}

/// `part` of `whole` as a percentage with one decimal ("0.0%" of nothing).
fn fmt_percent(part: u64, whole: u64) -> String {
    let tenths = part.saturating_mul(1_000) / whole.max(1);
    format!("{}.{}%", tenths / 10, tenths % 10)
}

fn fmt_permille(p: u64) -> String {
    format!("{}.{:03}", p / 1_000, p % 1_000)
}

impl Report {
    fn ops_per_sec(&self, n: u64) -> u64 {
        per_sec(n, self.elapsed)
    }

    /// Orders placed per second.
    pub(crate) fn creates_per_sec(&self) -> u64 {
        self.ops_per_sec(self.place.len())
    }

    /// The 99th percentile of a place's latency, microseconds.
    pub(crate) fn create_us_p99(&self) -> u64 {
        self.place.value_at_quantile(0.99)
    }

    pub(crate) fn health_per_sec(&self) -> Option<u64> {
        self.health.as_ref().map(|(e, h)| per_sec(h.len(), *e))
    }

    /// Creates per second over health answers per second, in thousandths; only closed
    /// loop (with `--rate` the creates are paced, so the quotient says nothing of capacity).
    pub(crate) fn ratio_permille(&self) -> Option<u64> {
        if self.rate.is_some() {
            return None;
        }
        self.health_per_sec()
            .map(|h| permille(self.ops_per_sec(self.place.len()), h))
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
            "settings  url={} pair={} clients={} threads={} duration={}s rate={} ({} of resting limit orders)",
            self.url,
            self.pair,
            self.clients,
            self.threads,
            self.duration.as_secs(),
            self.rate.map_or_else(
                || "closed-loop".to_string(),
                |r| format!("{r}/s (latency from scheduled send)")
            ),
            if self.cancel {
                "place+cancel"
            } else {
                "place only"
            },
        );
        let _ = writeln!(s, "elapsed   {} ms", self.elapsed.as_millis());
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<8} {:>9} {:>9} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            "op", "count", "ops/s", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        let mut rows = vec![
            ("place", &self.place, self.ops_per_sec(self.place.len())),
            (
                "cancel",
                &self.cancel_h,
                self.ops_per_sec(self.cancel_h.len()),
            ),
            ("all", &self.all, self.ops_per_sec(self.all.len())),
        ];
        if let Some((e, h)) = &self.health {
            rows.push(("health", h, per_sec(h.len(), *e)));
        }
        for (name, h, rate) in rows {
            let p = percentiles(h);
            let _ = writeln!(
                s,
                "{:<8} {:>9} {:>9} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
                name,
                h.len(),
                rate,
                fmt_us(p[0].1),
                fmt_us(p[1].1),
                fmt_us(p[2].1),
                fmt_us(p[3].1),
                fmt_us(p[4].1),
                fmt_us(p[5].1),
            );
        }
        if let (Some(h), Some(r)) = (self.health_per_sec(), self.ratio_permille()) {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "ratio     creates/s / health/s = {} / {} = {} (GET /health closed-loop, same connections and duration, run first)",
                self.ops_per_sec(self.place.len()),
                h,
                fmt_permille(r)
            );
        }
        if self.rate.is_some() && !self.late.is_empty() {
            let p = percentiles(&self.late);
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "timer     the load generator woke late for a scheduled send by p50 {}, p99 {}, max {} ({} waits; part of every latency above)",
                fmt_us(p[0].1),
                fmt_us(p[2].1),
                fmt_us(self.late.max()),
                self.late.len()
            );
        }
        if self.rate.is_some() {
            let sends = self.all.len();
            let _ = writeln!(
                s,
                "queued    {} of {} sends ({}) were behind schedule before their connection was free: each waited for its connection's previous answer (one request at a time per HTTP/1.1 connection), and that wait is in the latencies above",
                self.behind,
                sends,
                fmt_percent(self.behind, sends)
            );
        }
        let _ = writeln!(s);
        if let (Some(c), Some((_, h))) = (&self.health_cpu, &self.health) {
            let _ = writeln!(s, "{}", c.line("health", h.len()));
        }
        let _ = writeln!(s, "{}", self.orders_cpu.line("orders", self.all.len()));
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
        let lat = |h: &Histogram<u64>, rate: u64| {
            let mut m = serde_json::Map::new();
            m.insert("count".into(), json!(h.len()));
            m.insert("opsPerSec".into(), json!(rate));
            for (k, v) in percentiles(h) {
                m.insert(format!("latencyUs_{k}"), json!(v));
            }
            Value::Object(m)
        };
        let mut v = json!({
            "bench": "http",
            "machine": { "cores": self.machine.cores, "cpuModel": self.machine.cpu_model },
            "settings": {
                "url": self.url, "pair": self.pair, "clients": self.clients,
                "threads": self.threads,
                "durationSecs": self.duration.as_secs(), "rate": self.rate,
                "cancel": self.cancel,
                "coordinatedOmissionCorrected": self.rate.is_some(),
            },
            "elapsedMs": u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX),
            "place": lat(&self.place, self.ops_per_sec(self.place.len())),
            "cancel": lat(&self.cancel_h, self.ops_per_sec(self.cancel_h.len())),
            "all": lat(&self.all, self.ops_per_sec(self.all.len())),
            "errors": self.errors,
        });
        if let Some((e, h)) = &self.health {
            v["health"] = lat(h, per_sec(h.len(), *e));
            v["health"]["elapsedMs"] = json!(u64::try_from(e.as_millis()).unwrap_or(u64::MAX));
            if let Some(c) = &self.health_cpu {
                v["health"]["cpu"] = c.to_json(h.len());
            }
        }
        v["all"]["cpu"] = self.orders_cpu.to_json(self.all.len());
        if self.rate.is_some() {
            v["generatorTimerLateness"] = lat(&self.late, 0);
            v["sendsBehindSchedule"] = json!(self.behind);
        }
        if let Some(r) = self.ratio_permille() {
            v["createsToHealthPermille"] = json!(r);
            v["createsToHealth"] = json!(fmt_permille(r));
        }
        v
    }
}

/// Runs one phase over every connection, with a progress bar unless `quiet`.
#[allow(clippy::too_many_arguments)]
async fn run_phase(
    phase: Phase,
    args: &HttpBenchArgs,
    plan: &Arc<Plan>,
    host: &Arc<str>,
    clients: Vec<(String, Conn)>,
    interval: Option<Duration>,
    progress: bool,
) -> anyhow::Result<(Duration, Tally, Vec<(String, Conn)>, PhaseCpu)> {
    let live = Arc::new(Live::default());
    let server_pid = args.server_pid.map(|p| p.to_string());
    let cpu_at = || {
        (
            server_pid.as_deref().map(proc_cpu::snapshot),
            proc_cpu::snapshot("self"),
        )
    };
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut tasks = Vec::new();
    for (i, (token, conn)) in clients.into_iter().enumerate() {
        let run = ClientRun {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            clients: args.clients,
            phase,
            plan: plan.clone(),
            host: host.clone(),
            token: token.clone(),
            deadline,
            start,
            interval,
            cancel: !args.no_cancel,
            live: live.clone(),
            stop: stop.clone(),
        };
        tasks.push(tokio::spawn(async move {
            let mut conn = conn;
            let tally = client_loop(run, &mut conn).await;
            (token, conn, tally)
        }));
    }
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(args.duration.as_secs().max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix} [{elapsed_precise}] {bar:40} {pos}/{len}s {msg}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(match phase {
            Phase::Health => "GET /health",
            Phase::Orders => "orders",
        });
        Some(bar)
    } else {
        None
    };
    let cpu_start = (Instant::now(), cpu_at());
    let mut last = (Instant::now(), 0u64);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250).min(deadline - Instant::now())).await;
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
    let cpu_end = cpu_at();
    let cpu = PhaseCpu {
        window: cpu_start.0.elapsed(),
        server: match (&cpu_start.1.0, &cpu_end.0) {
            (Some(a), Some(b)) => Some(a.until(b)),
            _ => None,
        },
        bench: cpu_start.1.1.until(&cpu_end.1),
    };
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::new();
    let mut back = Vec::new();
    for t in tasks {
        let (token, conn, tally) = t.await?;
        let tally = tally?;
        total.place.add(&tally.place)?;
        total.cancel.add(&tally.cancel)?;
        total.health.add(&tally.health)?;
        total.late.add(&tally.late)?;
        total.behind += tally.behind;
        total.errors.extend(tally.errors);
        back.push((token, conn));
    }
    let elapsed = start.elapsed();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok((elapsed, total, back, cpu))
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
    let (addr, host) = socket_addr(args.url.trim_end_matches('/')).await?;
    wait_ready(&http, args.url.trim_end_matches('/')).await?;
    let (plan, accounts) = setup(args, &http).await?;
    let plan = Arc::new(plan);
    let host: Arc<str> = host.into();
    let interval = match args.rate {
        Some(0) => bail!("--rate must be positive"),
        Some(r) => Some(Duration::from_nanos(
            (1_000_000_000u64 * u64::from(args.clients)) / r,
        )),
        None => None,
    };
    let mut clients = Vec::new();
    for a in accounts {
        clients.push((a.token, Conn::connect(addr).await?));
    }
    let mut errors = std::collections::BTreeMap::new();
    let (health, health_cpu) = if args.no_health {
        (None, None)
    } else {
        let (elapsed, tally, back, cpu) =
            run_phase(Phase::Health, args, &plan, &host, clients, None, progress).await?;
        clients = back;
        for e in tally.errors {
            *errors.entry(e).or_insert(0) += 1;
        }
        (Some((elapsed, tally.health)), Some(cpu))
    };
    let (elapsed, tally, _, orders_cpu) = run_phase(
        Phase::Orders,
        args,
        &plan,
        &host,
        clients,
        interval,
        progress,
    )
    .await?;
    for e in tally.errors {
        *errors.entry(e).or_insert(0) += 1;
    }
    let mut all = histogram();
    all.add(&tally.place)?;
    all.add(&tally.cancel)?;
    Ok(Report {
        machine: Machine::detect(),
        url: args.url.clone(),
        pair: args.pair.clone(),
        clients: args.clients,
        threads: args.threads,
        duration: args.duration,
        rate: args.rate,
        cancel: !args.no_cancel,
        elapsed,
        place: tally.place,
        cancel_h: tally.cancel,
        all,
        health,
        late: tally.late,
        behind: tally.behind,
        errors,
        health_cpu,
        orders_cpu,
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

    #[test]
    fn response_heads_parse() {
        let head =
            b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nContent-Length: 17\r\n\r\n";
        assert_eq!(parse_head(head).ok(), Some((201, 17)));
        let head = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_head(head).ok(), Some((204, 0)));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn json_strings_are_found() {
        let body = br#"{"id":"42","clientId":"b1-1","status":"open","fills":[{"orderId":"42"}]}"#;
        assert_eq!(json_str(body, "id"), Some("42"));
        assert_eq!(json_str(body, "status"), Some("open"));
        assert_eq!(json_str(body, "code"), None);
        assert_eq!(
            wire_code(409, br#"{"code": "DUPLICATE_CLIENT_ID"}"#),
            "DUPLICATE_CLIENT_ID"
        );
        assert_eq!(wire_code(502, b""), "HTTP_502");
        assert_eq!(permille(15_000, 60_000), 250);
        assert_eq!(fmt_permille(1_005), "1.005");
    }
}
