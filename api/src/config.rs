//! Server settings: defaults, an optional TOML file, then environment overrides.
//!
//! The markets listed here are created only on an empty data directory (by journaled
//! `AddCurrency`/`AddPair` commands); afterwards the journal is the truth.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A currency to create on first start.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrencyConfig {
    pub code: String,
    pub decimals: u8,
    pub display_name: String,
}

/// A pair to create on first start. Rates and minimum are decimal strings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairConfig {
    pub base: String,
    pub quote: String,
    pub price_decimals: u8,
    pub amount_decimals: u8,
    pub min_amount: String,
    pub maker_fee_rate: String,
    pub taker_fee_rate: String,
}

impl PairConfig {
    /// The engine's spec of this pair (active), checked against the currencies in `m`.
    pub fn spec(&self, m: &engine::markets::Markets) -> crate::error::ApiResult<engine::PairSpec> {
        crate::routes::admin::pair_spec(
            m,
            &self.base,
            &self.quote,
            self.price_decimals,
            self.amount_decimals,
            &self.min_amount,
            &self.maker_fee_rate,
            &self.taker_fee_rate,
            engine::PairStatus::Active,
        )
    }
}

/// Who may call `POST /v1/users`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    #[default]
    Open,
    Admin,
}

/// Whether the journal syncs before a command is acknowledged (`durability`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fdatasync once per group of batches before any reply (the default).
    #[default]
    Fsync,
    /// Write to the OS only: survives a process crash, not a power loss. For benchmarks.
    None,
}

impl Durability {
    /// The setting's value as the file spells it (`fsync`, `none`), for the start-up log.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::None => "none",
        }
    }
}

impl From<Durability> for engine::pipeline::Durability {
    fn from(d: Durability) -> Self {
        match d {
            Durability::Fsync => engine::pipeline::Durability::Fsync,
            Durability::None => engine::pipeline::Durability::None,
        }
    }
}

/// A setting the server refuses to start with; the message names the setting and what it
/// accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The config file cannot be read (`reason` is the system's).
    #[error("reading {}: {reason}", .path.display())]
    Read { path: PathBuf, reason: String },
    /// The config file is not TOML of the settings (a wrong type, an unknown key; `reason`
    /// is the parser's, with the line).
    #[error("parsing {}: {reason}", .path.display())]
    Parse { path: PathBuf, reason: String },
    /// An environment variable holds a value its setting does not accept.
    #[error("{var}={value}: expected {expected}")]
    Env {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    /// Only one of the admin client's id and secret is set (it would be ignored).
    #[error(
        "{set} is set but {missing} is not: set both, or neither (the first start then \
         creates an admin client and prints its credentials)"
    )]
    AdminHalf {
        set: &'static str,
        missing: &'static str,
    },
    /// A number outside its setting's range ([`Config::validate`] says why each range).
    #[error("{setting} = {value}: expected {min} to {max}")]
    OutOfRange {
        setting: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    /// A `[ws]` setting outside what it accepts (`rule` says what that is).
    #[error("ws.{setting} = {value}: {rule}")]
    Ws {
        setting: &'static str,
        value: u64,
        rule: String,
    },
    /// Argon2 refuses these costs for client secrets.
    #[error(
        "argon2_memory_kib = {memory_kib}, argon2_iterations = {iterations}: {reason} \
         (expected argon2_iterations of at least 1 and argon2_memory_kib of at least 8)"
    )]
    Argon2 {
        memory_kib: u32,
        iterations: u32,
        reason: String,
    },
}

/// WebSocket limits and timings (`[ws]` in the file, `BOURSE_WS_*` in the environment),
/// handed to the feed as its [`feed::FeedConfig`]; each field is the feed's field of the
/// same name, durations in whole seconds or milliseconds as the name says. What happens at
/// each limit is in `feed/README.md` ("Limits", "Slow consumers").
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// Concurrent WebSocket connections; the next upgrade gets a 503 problem.
    pub max_connections: usize,
    /// Subscriptions per connection; more get a `LIMIT_EXCEEDED` error message.
    pub max_subscriptions: usize,
    /// Inbound messages per second per connection; more get `RATE_LIMITED`, 10x closes 1008.
    pub max_inbound_per_sec: u32,
    /// Largest inbound message in bytes; larger gets `PAYLOAD_TOO_LARGE`.
    pub max_message_bytes: usize,
    /// Outbound messages a connection may have unread before it counts as slow (at most
    /// [`MAX_QUEUE_BOUND`]). A connection's queue is its backlog in the channels' shared
    /// rings, so this also sizes every ring: at least the feed's default capacity, and
    /// never less than this bound (a ring smaller than it would lose the messages the
    /// bound allows a connection to be behind).
    pub queue_bound: usize,
    /// Bytes of control frames (replies, book snapshots, pings) a connection may hold queued
    /// before it counts as slow and is closed with 1008 ([`MIN_CONTROL_QUEUE_BYTES`] to
    /// [`MAX_CONTROL_QUEUE_BYTES`]); one frame of any size is always accepted, so the queue
    /// holds at most this plus one snapshot.
    pub control_queue_bytes: usize,
    /// Writes per second all connections together aim to stay under (0: no floor).
    pub max_writes_per_sec: u32,
    /// Server ping period.
    pub ping_interval_secs: u64,
    /// A peer silent this long (no frame, no pong) is closed.
    pub idle_timeout_secs: u64,
    /// A connection whose queue stays full this long is closed with 1008.
    pub stall_timeout_secs: u64,
    /// Book changes are merged into one update at most this often (0: one per batch).
    pub book_interval_ms: u64,
}

impl Default for WsConfig {
    fn default() -> Self {
        let f = feed::FeedConfig::default();
        WsConfig {
            max_connections: f.max_connections,
            max_subscriptions: f.max_subscriptions,
            max_inbound_per_sec: f.max_inbound_per_sec,
            max_message_bytes: f.max_message_bytes,
            queue_bound: f.queue_bound,
            control_queue_bytes: f.control_queue_bytes,
            max_writes_per_sec: f.max_writes_per_sec,
            ping_interval_secs: f.ping_interval.as_secs(),
            idle_timeout_secs: f.idle_timeout.as_secs(),
            stall_timeout_secs: f.stall_timeout.as_secs(),
            book_interval_ms: f.book_interval.as_millis() as u64,
        }
    }
}

/// The largest `ws.queue_bound`. Every channel's ring holds its last `queue_bound`
/// messages (an index of 24 bytes per message allocated up front for each ring, public and
/// private, plus the frames themselves), so the bound is memory on every channel whether or
/// not a client is slow. 65,536 is 16 times the default: 1.5 MiB of index per ring, and
/// over 6 s of backlog on a channel carrying 10,000 messages/s.
pub const MAX_QUEUE_BOUND: usize = 65_536;

/// The smallest `ws.control_queue_bytes`: room for the replies and errors of a burst of
/// requests from a client that reads a little late (a bound of a few bytes would close a
/// connection whose subscribe reply is still queued when its snapshot comes).
pub const MIN_CONTROL_QUEUE_BYTES: usize = 64 * 1024;

/// The largest `ws.control_queue_bytes`: the bound is memory per connection, and 1 GiB per
/// slow client is no bound at all on a server holding thousands.
pub const MAX_CONTROL_QUEUE_BYTES: usize = 1 << 30;

impl WsConfig {
    /// The feed's settings, or what is wrong with these: every limit must admit at least one
    /// (a zero would refuse every connection, subscription or message), the queue bound at
    /// most [`MAX_QUEUE_BOUND`], pings must come before the idle timeout closes a quiet but
    /// live peer, and a message must fit one subscribe request.
    pub fn feed_config(&self) -> Result<feed::FeedConfig, ConfigError> {
        let refuse = |setting: &'static str, value: u64, rule: String| {
            Err(ConfigError::Ws {
                setting,
                value,
                rule,
            })
        };
        let positive = [
            ("max_connections", self.max_connections as u64),
            ("max_subscriptions", self.max_subscriptions as u64),
            ("max_inbound_per_sec", u64::from(self.max_inbound_per_sec)),
            ("queue_bound", self.queue_bound as u64),
            ("ping_interval_secs", self.ping_interval_secs),
            ("stall_timeout_secs", self.stall_timeout_secs),
        ];
        for (name, v) in positive {
            if v == 0 {
                return refuse(name, v, "expected at least 1".into());
            }
        }
        if self.queue_bound > MAX_QUEUE_BOUND {
            return refuse(
                "queue_bound",
                self.queue_bound as u64,
                format!("expected at most {MAX_QUEUE_BOUND}"),
            );
        }
        if !(MIN_CONTROL_QUEUE_BYTES..=MAX_CONTROL_QUEUE_BYTES).contains(&self.control_queue_bytes)
        {
            return refuse(
                "control_queue_bytes",
                self.control_queue_bytes as u64,
                format!("expected {MIN_CONTROL_QUEUE_BYTES} to {MAX_CONTROL_QUEUE_BYTES}"),
            );
        }
        if self.max_message_bytes < 256 {
            return refuse(
                "max_message_bytes",
                self.max_message_bytes as u64,
                "expected at least 256".into(),
            );
        }
        if self.idle_timeout_secs <= self.ping_interval_secs {
            return refuse(
                "idle_timeout_secs",
                self.idle_timeout_secs,
                format!(
                    "expected longer than ws.ping_interval_secs ({})",
                    self.ping_interval_secs
                ),
            );
        }
        let secs = std::time::Duration::from_secs;
        Ok(feed::FeedConfig {
            max_connections: self.max_connections,
            max_subscriptions: self.max_subscriptions,
            max_inbound_per_sec: self.max_inbound_per_sec,
            max_message_bytes: self.max_message_bytes,
            queue_bound: self.queue_bound,
            control_queue_bytes: self.control_queue_bytes,
            // The rings then hold at least `queue_bound` (`FeedConfig::ring_capacity`).
            max_writes_per_sec: self.max_writes_per_sec,
            ping_interval: secs(self.ping_interval_secs),
            idle_timeout: secs(self.idle_timeout_secs),
            stall_timeout: secs(self.stall_timeout_secs),
            book_interval: std::time::Duration::from_millis(self.book_interval_ms),
            ..feed::FeedConfig::default()
        })
    }
}

/// Every setting of the server.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// `fsync` (default) or `none`.
    pub durability: Durability,
    pub deposit_auto_approve: bool,
    pub registration: Registration,
    pub token_ttl_secs: u64,
    /// Requests per second per client ([`crate::rate_limit`]: an authenticated request's
    /// account, otherwise, and for the token endpoint always, the peer address); 0 disables
    /// the limit.
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    /// Argon2 memory cost for client secrets (KiB).
    pub argon2_memory_kib: u32,
    /// Argon2 time cost (passes) for client secrets.
    pub argon2_iterations: u32,
    /// Most argon2 runs (token requests, registrations) admitted at once, running (one per
    /// CPU) or waiting; past it a 503 ([`crate::auth::argon2`]).
    pub argon2_max_pending: u32,
    /// Slots of each of the engine's command rings (one per pair plus one); a full ring is
    /// a 503. At least 1.
    pub ring_capacity: usize,
    /// Threads of the async runtime that serves HTTP and the WebSockets (0: one per CPU,
    /// the default; at most [`MAX_WORKER_THREADS`]). On a machine whose cores the engine
    /// thread, the history store and a load generator share, one worker makes an order
    /// placed cheaper (no wake-ups and task moves between workers) at the cost of the
    /// WebSocket fan-out's second core (README, Configuration).
    pub worker_threads: usize,
    /// Most resting orders one book may hold (1 to [`engine::MAX_ORDERS_PER_BOOK`]); a GTC
    /// order that would rest whole on a full book (it does not cross) is refused with a 503
    /// (matching rules version 2 and later; start-up moves the engine to the newest). Applied at start by
    /// a journaled command when it differs from the engine's (so a replay of the journal
    /// meets every order under the bound its live run met).
    pub max_orders_per_book: u32,
    /// Most open orders one account may hold over all pairs (1 to
    /// [`engine::MAX_ORDERS_PER_BOOK`]); a GTC order past it is a 409
    /// `TOO_MANY_OPEN_ORDERS`, before it is journaled ([`crate::open_counts`]).
    pub max_open_orders_per_account: u32,
    /// Longest a paginated history list (orders, fills, transactions, requests) may query
    /// the store, in milliseconds; past it the client gets a 503 ([`crate::store`]).
    pub history_query_timeout_ms: u64,
    /// Whether the start runs SQLite's `PRAGMA quick_check` over the whole history store
    /// before opening it, and sets a store that fails it aside to be rebuilt from the
    /// journal (off by default: it reads every page, 0.8-0.9 s for a million orders with
    /// the file cached, growing with the history; [`crate::store_damage`]).
    pub history_check_on_start: bool,
    /// Most HTTP connections open at once, WebSockets included; one more is answered a 503
    /// and closed ([`crate::connections`]).
    pub max_connections: u32,
    /// Most HTTP connections open at once from one client address (an IPv6 client by its
    /// /64), WebSockets included; one more from that address is answered a 503 and closed,
    /// so that one client cannot take every one of the `max_connections` slots
    /// ([`crate::connections`]). A value of `max_connections` or more lifts it.
    pub max_connections_per_address: u32,
    /// Longest the server waits for a request head, on a new connection or a kept-alive one
    /// after its last response, in seconds; then it closes the connection.
    pub header_timeout_secs: u64,
    /// Longest a request body may take to arrive once its head has, in seconds; past it a
    /// 408 `REQUEST_TIMEOUT` and the connection closes ([`crate::extract::body_bytes`]).
    pub body_timeout_secs: u64,
    /// Admin client credentials (also `BOURSE_ADMIN_CLIENT_ID` / `BOURSE_ADMIN_CLIENT_SECRET`).
    pub admin_client_id: Option<String>,
    pub admin_client_secret: Option<String>,
    pub currencies: Vec<CurrencyConfig>,
    pub pairs: Vec<PairConfig>,
    /// WebSocket limits and timings.
    pub ws: WsConfig,
}

fn cur(code: &str, decimals: u8, name: &str) -> CurrencyConfig {
    CurrencyConfig {
        code: code.into(),
        decimals,
        display_name: name.into(),
    }
}

fn pair(base: &str, quote: &str, pd: u8, ad: u8, min: &str) -> PairConfig {
    PairConfig {
        base: base.into(),
        quote: quote.into(),
        price_decimals: pd,
        amount_decimals: ad,
        min_amount: min.into(),
        maker_fee_rate: "0.001".into(),
        taker_fee_rate: "0.002".into(),
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:8080".parse().expect("valid address"),
            data_dir: PathBuf::from("./data"),
            durability: Durability::Fsync,
            deposit_auto_approve: false,
            registration: Registration::Open,
            token_ttl_secs: 3600,
            rate_limit_per_sec: 2000,
            rate_limit_burst: 4000,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_max_pending: 64,
            worker_threads: 0,
            ring_capacity: 65_536,
            max_orders_per_book: DEFAULT_MAX_ORDERS_PER_BOOK,
            max_open_orders_per_account: DEFAULT_MAX_OPEN_ORDERS_PER_ACCOUNT,
            history_query_timeout_ms: 5_000,
            history_check_on_start: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            header_timeout_secs: 30,
            body_timeout_secs: 30,
            admin_client_id: None,
            admin_client_secret: None,
            currencies: vec![
                cur("BTC", 8, "Bitcoin"),
                cur("ETH", 8, "Ether"),
                cur("USDC", 6, "USD Coin"),
                cur("SEK", 2, "Swedish krona"),
                cur("EUR", 2, "Euro"),
            ],
            pairs: vec![
                pair("BTC", "SEK", 2, 8, "0.0001"),
                pair("ETH", "SEK", 2, 8, "0.001"),
                pair("BTC", "USDC", 2, 8, "0.0001"),
                pair("ETH", "BTC", 6, 4, "0.001"),
            ],
            ws: WsConfig::default(),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The engine's default bound (10,000,000), what an engine that never got a
/// `SetMaxOrdersPerBook` command holds.
pub const DEFAULT_MAX_ORDERS_PER_BOOK: u32 = 10_000_000;
/// The default bound on one account's open orders: a hundredth of a book, so that no one
/// account can fill one (market makers quote hundreds to thousands of orders).
pub const DEFAULT_MAX_OPEN_ORDERS_PER_ACCOUNT: u32 = 100_000;
/// The largest `ring_capacity`: a million commands per engine ring (one ring per pair plus
/// one, each allocated whole).
pub const MAX_RING_CAPACITY: usize = 1 << 20;
/// The default `max_connections`: room for the feed's default 20,000 WebSockets and the
/// HTTP clients beside them.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 25_000;
/// The default `max_connections_per_address`: 1,024, about a 24th of
/// [`DEFAULT_MAX_CONNECTIONS`], so at least 25 addresses are needed to fill the server and
/// one address can never lock the others out; still room for a busy client (a trading
/// firm's pool of keep-alive connections and its WebSockets) or a few hundred users behind
/// one NAT or proxy. The benches, which open thousands of connections from loopback, lift it.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: u32 = 1_024;
// Under the global default, or it would bound nothing by default.
const _: () = assert!(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS < DEFAULT_MAX_CONNECTIONS);
/// The largest `worker_threads`.
pub const MAX_WORKER_THREADS: usize = 256;
/// The largest `argon2_max_pending`.
pub const MAX_ARGON2_PENDING: u64 = 65_536;
/// The largest `header_timeout_secs` and `body_timeout_secs` (an hour).
pub const MAX_HEADER_TIMEOUT_SECS: u64 = 3_600;
/// The largest `history_query_timeout_ms` (an hour).
pub const MAX_HISTORY_QUERY_TIMEOUT_MS: u64 = 3_600_000;
/// The largest `token_ttl_secs` (ten years). A token's expiry is Unix nanoseconds in an
/// i64: from 2^63 seconds on the lifetime wrapped negative and every token was issued
/// already expired, as it was with a lifetime of 0.
pub const MAX_TOKEN_TTL_SECS: u64 = 315_360_000;
const _: () = assert!(DEFAULT_MAX_ORDERS_PER_BOOK as usize <= engine::MAX_ORDERS_PER_BOOK);

const U32_RANGE: &str = "a whole number from 0 to 4294967295";
const WHOLE_NUMBER: &str = "a whole number";
// What a variable of a ranged setting accepts, as Config::validate checks it (the test
// `an_unparsable_ranged_variable_names_the_settings_range` keeps the two in step).
const TOKEN_TTL_RANGE: &str = "a whole number from 1 to 315360000";
const HISTORY_TIMEOUT_RANGE: &str = "a whole number from 1 to 3600000";
const RING_CAPACITY_RANGE: &str = "a whole number from 1 to 1048576";
const WORKER_THREADS_RANGE: &str = "a whole number from 0 to 256";
const BURST_RANGE: &str = "a whole number from 1 to 4294967295";
const MAX_CONNECTIONS_RANGE: &str = BURST_RANGE;
const HEADER_TIMEOUT_RANGE: &str = "a whole number from 1 to 3600";
const ARGON2_PENDING_RANGE: &str = "a whole number from 1 to 65536";

/// `value` of the variable `var` as a `T`, or an error naming both and what was `expected`.
fn parse_var<T: std::str::FromStr>(
    var: &'static str,
    value: String,
    expected: &'static str,
) -> Result<T, ConfigError> {
    match value.parse() {
        Ok(v) => Ok(v),
        Err(_) => Err(ConfigError::Env {
            var,
            value,
            expected,
        }),
    }
}

/// One of a setting's named values (exactly as the file spells them).
fn parse_choice<T: Copy>(
    var: &'static str,
    value: String,
    choices: &[(&str, T)],
    expected: &'static str,
) -> Result<T, ConfigError> {
    match choices.iter().find(|(name, _)| *name == value) {
        Some((_, v)) => Ok(*v),
        None => Err(ConfigError::Env {
            var,
            value,
            expected,
        }),
    }
}

/// A switch: `true`/`false` and the usual spellings, in any case.
fn parse_bool(var: &'static str, value: String) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Env {
            var,
            value,
            expected: "true|false|1|0|yes|no|on|off",
        }),
    }
}

impl Config {
    /// Loads the file (when given), then applies `BOURSE_*` environment overrides, then
    /// checks the result ([`Config::validate`]).
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        config.apply_env()?;
        config.validate()?;
        Ok(config)
    }

    /// What no single value shows: settings that only work together, and costs argon2
    /// refuses. [`crate::server::start`] checks it too (tests and the demo build a
    /// `Config` without [`Config::load`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.admin_client_id, &self.admin_client_secret) {
            (Some(_), None) => {
                return Err(ConfigError::AdminHalf {
                    set: "admin_client_id (BOURSE_ADMIN_CLIENT_ID)",
                    missing: "admin_client_secret (BOURSE_ADMIN_CLIENT_SECRET)",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::AdminHalf {
                    set: "admin_client_secret (BOURSE_ADMIN_CLIENT_SECRET)",
                    missing: "admin_client_id (BOURSE_ADMIN_CLIENT_ID)",
                });
            }
            _ => {}
        }
        // (setting, value, min, max). The engine accepts no larger bound on resting orders;
        // a zero timeout would fail every list, and an hour is past any client's patience;
        // a ring of 0 could queue no command, and each ring is allocated whole when its
        // pair first trades; a token lifetime of 0 (or one past i64 nanoseconds) issues
        // tokens that are expired before their first use.
        let ranges = [
            ("token_ttl_secs", self.token_ttl_secs, 1, MAX_TOKEN_TTL_SECS),
            (
                "max_orders_per_book",
                u64::from(self.max_orders_per_book),
                1,
                engine::MAX_ORDERS_PER_BOOK as u64,
            ),
            (
                "max_open_orders_per_account",
                u64::from(self.max_open_orders_per_account),
                1,
                engine::MAX_ORDERS_PER_BOOK as u64,
            ),
            (
                "history_query_timeout_ms",
                self.history_query_timeout_ms,
                1,
                MAX_HISTORY_QUERY_TIMEOUT_MS,
            ),
            (
                "ring_capacity",
                self.ring_capacity as u64,
                1,
                MAX_RING_CAPACITY as u64,
            ),
            (
                "worker_threads",
                self.worker_threads as u64,
                0,
                MAX_WORKER_THREADS as u64,
            ),
            // No argon2 run would refuse every sign-in; past 65,536 waiting, the last
            // would wait minutes.
            (
                "argon2_max_pending",
                u64::from(self.argon2_max_pending),
                1,
                MAX_ARGON2_PENDING,
            ),
            // No connection, or no time for a request head, would refuse every request.
            (
                "max_connections",
                u64::from(self.max_connections),
                1,
                u64::from(u32::MAX),
            ),
            (
                "max_connections_per_address",
                u64::from(self.max_connections_per_address),
                1,
                u64::from(u32::MAX),
            ),
            (
                "header_timeout_secs",
                self.header_timeout_secs,
                1,
                MAX_HEADER_TIMEOUT_SECS,
            ),
            (
                "body_timeout_secs",
                self.body_timeout_secs,
                1,
                MAX_HEADER_TIMEOUT_SECS,
            ),
            // A burst of 0 would refuse every request while the limit is on.
            (
                "rate_limit_burst",
                u64::from(self.rate_limit_burst),
                1,
                u64::from(u32::MAX),
            ),
        ];
        for (setting, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::OutOfRange {
                    setting,
                    value,
                    min,
                    max,
                });
            }
        }
        crate::auth::argon2_params(self.argon2_memory_kib, self.argon2_iterations)?;
        Ok(())
    }

    /// Environment overrides (`BOURSE_BIND`, `BOURSE_DATA_DIR`, ...).
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        self.apply_vars(env)?;
        // Checked here too, so a bad value stops the start with its name.
        self.ws.feed_config()?;
        Ok(())
    }

    /// The `BOURSE_*` variables of `vars` that no setting reads (nor `BOURSE_CONFIG`, nor
    /// the bench's and tests' own): a misspelt one (`BOURSE_DURABLITY=none`) was ignored
    /// without a word, and the server started with the default. The names read are those
    /// [`Config::apply_vars`] asks for, so the list cannot drift from it.
    pub fn unknown_vars(vars: impl IntoIterator<Item = String>) -> Vec<String> {
        let asked = std::cell::RefCell::new(std::collections::HashSet::new());
        let _ = Config::default().apply_vars(|name| {
            asked.borrow_mut().insert(name.to_string());
            None
        });
        let asked = asked.into_inner();
        let others = [
            "BOURSE_CONFIG",
            "BOURSE_WS_BENCH_CHILD",
            "BOURSE_REQUIRE_BROWSER",
        ];
        let mut unknown: Vec<String> = vars
            .into_iter()
            .filter(|v| v.starts_with("BOURSE_"))
            .filter(|v| !asked.contains(v) && !others.contains(&v.as_str()))
            .collect();
        unknown.sort();
        unknown
    }

    /// The overrides of every setting but the market lists (`[ws]` as `BOURSE_WS_*`, its control queue's bytes included), read
    /// through `var` (the environment, or a table in tests); an empty value counts as unset. A value the
    /// setting does not accept is an error naming the variable and what it accepts, never
    /// a silent default.
    pub fn apply_vars(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = var("BOURSE_BIND") {
            self.bind = parse_var("BOURSE_BIND", v, "an address such as 127.0.0.1:8080")?;
        }
        if let Some(v) = var("BOURSE_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = var("BOURSE_DURABILITY") {
            self.durability = parse_choice(
                "BOURSE_DURABILITY",
                v,
                &[("fsync", Durability::Fsync), ("none", Durability::None)],
                "fsync|none",
            )?;
        }
        if let Some(v) = var("BOURSE_DEPOSIT_AUTO_APPROVE") {
            self.deposit_auto_approve = parse_bool("BOURSE_DEPOSIT_AUTO_APPROVE", v)?;
        }
        if let Some(v) = var("BOURSE_REGISTRATION") {
            self.registration = parse_choice(
                "BOURSE_REGISTRATION",
                v,
                &[("open", Registration::Open), ("admin", Registration::Admin)],
                "open|admin",
            )?;
        }
        if let Some(v) = var("BOURSE_TOKEN_TTL_SECS") {
            self.token_ttl_secs = parse_var("BOURSE_TOKEN_TTL_SECS", v, TOKEN_TTL_RANGE)?;
        }
        if let Some(v) = var("BOURSE_ARGON2_MEMORY_KIB") {
            self.argon2_memory_kib = parse_var("BOURSE_ARGON2_MEMORY_KIB", v, U32_RANGE)?;
        }
        if let Some(v) = var("BOURSE_ARGON2_ITERATIONS") {
            self.argon2_iterations = parse_var("BOURSE_ARGON2_ITERATIONS", v, U32_RANGE)?;
        }
        if let Some(v) = var("BOURSE_ARGON2_MAX_PENDING") {
            self.argon2_max_pending =
                parse_var("BOURSE_ARGON2_MAX_PENDING", v, ARGON2_PENDING_RANGE)?;
        }
        if let Some(v) = var("BOURSE_RING_CAPACITY") {
            self.ring_capacity = parse_var("BOURSE_RING_CAPACITY", v, RING_CAPACITY_RANGE)?;
        }
        if let Some(v) = var("BOURSE_WORKER_THREADS") {
            self.worker_threads = parse_var("BOURSE_WORKER_THREADS", v, WORKER_THREADS_RANGE)?;
        }
        if let Some(v) = var("BOURSE_ADMIN_CLIENT_ID") {
            self.admin_client_id = Some(v);
        }
        if let Some(v) = var("BOURSE_ADMIN_CLIENT_SECRET") {
            self.admin_client_secret = Some(v);
        }
        if let Some(v) = var("BOURSE_RATE_LIMIT_PER_SEC") {
            self.rate_limit_per_sec = parse_var("BOURSE_RATE_LIMIT_PER_SEC", v, U32_RANGE)?;
        }
        if let Some(v) = var("BOURSE_RATE_LIMIT_BURST") {
            self.rate_limit_burst = parse_var("BOURSE_RATE_LIMIT_BURST", v, BURST_RANGE)?;
        }
        if let Some(v) = var("BOURSE_MAX_ORDERS_PER_BOOK") {
            self.max_orders_per_book = parse_var(
                "BOURSE_MAX_ORDERS_PER_BOOK",
                v,
                "a whole number from 1 to 16777215",
            )?;
        }
        if let Some(v) = var("BOURSE_MAX_OPEN_ORDERS_PER_ACCOUNT") {
            self.max_open_orders_per_account = parse_var(
                "BOURSE_MAX_OPEN_ORDERS_PER_ACCOUNT",
                v,
                "a whole number from 1 to 16777215",
            )?;
        }
        if let Some(v) = var("BOURSE_HISTORY_QUERY_TIMEOUT_MS") {
            self.history_query_timeout_ms =
                parse_var("BOURSE_HISTORY_QUERY_TIMEOUT_MS", v, HISTORY_TIMEOUT_RANGE)?;
        }
        if let Some(v) = var("BOURSE_HISTORY_CHECK_ON_START") {
            self.history_check_on_start = parse_bool("BOURSE_HISTORY_CHECK_ON_START", v)?;
        }
        if let Some(v) = var("BOURSE_MAX_CONNECTIONS") {
            self.max_connections = parse_var("BOURSE_MAX_CONNECTIONS", v, MAX_CONNECTIONS_RANGE)?;
        }
        if let Some(v) = var("BOURSE_MAX_CONNECTIONS_PER_ADDRESS") {
            self.max_connections_per_address = parse_var(
                "BOURSE_MAX_CONNECTIONS_PER_ADDRESS",
                v,
                MAX_CONNECTIONS_RANGE,
            )?;
        }
        if let Some(v) = var("BOURSE_HEADER_TIMEOUT_SECS") {
            self.header_timeout_secs =
                parse_var("BOURSE_HEADER_TIMEOUT_SECS", v, HEADER_TIMEOUT_RANGE)?;
        }
        if let Some(v) = var("BOURSE_BODY_TIMEOUT_SECS") {
            self.body_timeout_secs =
                parse_var("BOURSE_BODY_TIMEOUT_SECS", v, HEADER_TIMEOUT_RANGE)?;
        }
        if let Some(v) = var("BOURSE_WS_MAX_CONNECTIONS") {
            self.ws.max_connections = parse_var("BOURSE_WS_MAX_CONNECTIONS", v, WHOLE_NUMBER)?;
        }
        if let Some(v) = var("BOURSE_WS_MAX_SUBSCRIPTIONS") {
            self.ws.max_subscriptions = parse_var("BOURSE_WS_MAX_SUBSCRIPTIONS", v, WHOLE_NUMBER)?;
        }
        if let Some(v) = var("BOURSE_WS_MAX_INBOUND_PER_SEC") {
            self.ws.max_inbound_per_sec =
                parse_var("BOURSE_WS_MAX_INBOUND_PER_SEC", v, WHOLE_NUMBER)?;
        }
        if let Some(v) = var("BOURSE_WS_MAX_MESSAGE_BYTES") {
            self.ws.max_message_bytes = parse_var("BOURSE_WS_MAX_MESSAGE_BYTES", v, WHOLE_NUMBER)?;
        }
        if let Some(v) = var("BOURSE_WS_CONTROL_QUEUE_BYTES") {
            self.ws.control_queue_bytes =
                parse_var("BOURSE_WS_CONTROL_QUEUE_BYTES", v, WHOLE_NUMBER)?;
        }
        if let Some(v) = var("BOURSE_WS_QUEUE_BOUND") {
            self.ws.queue_bound = parse_var("BOURSE_WS_QUEUE_BOUND", v, WHOLE_NUMBER)?;
        }
        if let Some(v) = var("BOURSE_WS_MAX_WRITES_PER_SEC") {
            self.ws.max_writes_per_sec =
                parse_var("BOURSE_WS_MAX_WRITES_PER_SEC", v, WHOLE_NUMBER)?;
        }
        if let Some(v) = var("BOURSE_WS_PING_INTERVAL_SECS") {
            self.ws.ping_interval_secs =
                parse_var("BOURSE_WS_PING_INTERVAL_SECS", v, WHOLE_NUMBER)?;
        }
        if let Some(v) = var("BOURSE_WS_IDLE_TIMEOUT_SECS") {
            self.ws.idle_timeout_secs = parse_var("BOURSE_WS_IDLE_TIMEOUT_SECS", v, WHOLE_NUMBER)?;
        }
        if let Some(v) = var("BOURSE_WS_STALL_TIMEOUT_SECS") {
            self.ws.stall_timeout_secs =
                parse_var("BOURSE_WS_STALL_TIMEOUT_SECS", v, WHOLE_NUMBER)?;
        }
        if let Some(v) = var("BOURSE_WS_BOOK_INTERVAL_MS") {
            self.ws.book_interval_ms = parse_var("BOURSE_WS_BOOK_INTERVAL_MS", v, WHOLE_NUMBER)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that cannot be read, or is not the settings' TOML, is an error naming the
    /// file (and, from the parser, the key), before any variable is read.
    #[test]
    fn a_bad_config_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.toml");
        match Config::load(Some(&missing)) {
            Err(ConfigError::Read { path, reason }) => {
                assert_eq!(path, missing);
                assert!(!reason.is_empty());
            }
            other => panic!("{other:?}"),
        }
        for (text, key) in [
            ("bind = 5\n", "bind"),
            ("no_such_setting = 1\n", "no_such_setting"),
        ] {
            let file = dir.path().join("bad.toml");
            std::fs::write(&file, text).expect("write");
            let err = Config::load(Some(&file)).expect_err(text);
            assert!(
                matches!(&err, ConfigError::Parse { path, reason } if *path == file && reason.contains(key)),
                "{err:?}"
            );
            assert!(
                err.to_string().contains(&file.display().to_string()),
                "{err}"
            );
        }
    }

    /// `Config::default()` with `vars` applied as the environment.
    fn with_vars(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        c.apply_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
                .filter(|v| !v.is_empty())
        })?;
        c.validate()?;
        Ok(c)
    }

    fn refused(vars: &[(&str, &str)]) -> String {
        with_vars(vars).expect_err("refused").to_string()
    }
    /// `worker_threads`: 0 (one per CPU) by default, a count from the variable or the file,
    /// and a count past the bound or not a number refused with the setting's range.
    #[test]
    fn worker_threads_default_to_one_per_cpu_and_are_bounded() {
        assert_eq!(Config::default().worker_threads, 0);
        let c = with_vars(&[("BOURSE_WORKER_THREADS", "1")]).expect("accepted");
        assert_eq!(c.worker_threads, 1);
        let c: Config = toml::from_str("worker_threads = 3\n").expect("parses");
        assert_eq!(c.worker_threads, 3);
        for bad in ["257", "-1", "two"] {
            let e = refused(&[("BOURSE_WORKER_THREADS", bad)]);
            assert!(
                e.contains("BOURSE_WORKER_THREADS") || e.contains("worker_threads"),
                "{e}"
            );
            assert!(e.contains("256"), "{e}");
        }
    }

    /// A ranged setting's variable that does not parse names the setting's own range (what
    /// `validate` checks), not its type's; and a burst of 0, which would refuse every
    /// request, is refused rather than taken as 1.
    #[test]
    fn an_unparsable_ranged_variable_names_the_settings_range() {
        for (var, setting, max) in [
            (
                "BOURSE_TOKEN_TTL_SECS",
                "token_ttl_secs",
                MAX_TOKEN_TTL_SECS,
            ),
            (
                "BOURSE_HISTORY_QUERY_TIMEOUT_MS",
                "history_query_timeout_ms",
                MAX_HISTORY_QUERY_TIMEOUT_MS,
            ),
            (
                "BOURSE_RING_CAPACITY",
                "ring_capacity",
                MAX_RING_CAPACITY as u64,
            ),
            (
                "BOURSE_RATE_LIMIT_BURST",
                "rate_limit_burst",
                u64::from(u32::MAX),
            ),
            (
                "BOURSE_MAX_CONNECTIONS",
                "max_connections",
                u64::from(u32::MAX),
            ),
            (
                "BOURSE_MAX_CONNECTIONS_PER_ADDRESS",
                "max_connections_per_address",
                u64::from(u32::MAX),
            ),
            (
                "BOURSE_HEADER_TIMEOUT_SECS",
                "header_timeout_secs",
                MAX_HEADER_TIMEOUT_SECS,
            ),
            (
                "BOURSE_BODY_TIMEOUT_SECS",
                "body_timeout_secs",
                MAX_HEADER_TIMEOUT_SECS,
            ),
            (
                "BOURSE_ARGON2_MAX_PENDING",
                "argon2_max_pending",
                MAX_ARGON2_PENDING,
            ),
        ] {
            let e = refused(&[(var, "abc")]);
            assert!(
                e.contains(&format!("a whole number from 1 to {max}")),
                "{e}"
            );
            // The same range as validate's.
            let e = refused(&[(var, "0")]);
            assert!(e.contains(setting) && e.contains(&max.to_string()), "{e}");
        }
    }

    #[test]
    fn env_values_are_applied() {
        let c = with_vars(&[
            ("BOURSE_BIND", "0.0.0.0:9000"),
            ("BOURSE_DURABILITY", "none"),
            ("BOURSE_DEPOSIT_AUTO_APPROVE", "TRUE"),
            ("BOURSE_REGISTRATION", "admin"),
            ("BOURSE_TOKEN_TTL_SECS", "60"),
            ("BOURSE_RATE_LIMIT_PER_SEC", "0"),
            ("BOURSE_ADMIN_CLIENT_ID", "ops"),
            ("BOURSE_ADMIN_CLIENT_SECRET", "s3cret"),
            ("BOURSE_WS_MAX_CONNECTIONS", "7"),
            ("BOURSE_WS_CONTROL_QUEUE_BYTES", "1048576"),
            ("BOURSE_ARGON2_MEMORY_KIB", "64"),
            ("BOURSE_ARGON2_ITERATIONS", "3"),
            ("BOURSE_RING_CAPACITY", "1024"),
            ("BOURSE_HISTORY_CHECK_ON_START", "on"),
        ])
        .expect("valid");
        assert_eq!(c.ws.max_connections, 7);
        assert_eq!(c.ws.control_queue_bytes, 1_048_576);
        assert_eq!(
            c.ws.feed_config().expect("valid").control_queue_bytes,
            1_048_576
        );
        assert_eq!((c.argon2_memory_kib, c.argon2_iterations), (64, 3));
        assert_eq!(c.ring_capacity, 1024);
        assert_eq!(c.bind.port(), 9000);
        assert_eq!(c.durability, Durability::None);
        assert!(c.deposit_auto_approve);
        assert!(c.history_check_on_start);
        assert!(!Config::default().history_check_on_start);
        assert_eq!(c.registration, Registration::Admin);
        assert_eq!(c.token_ttl_secs, 60);
        assert_eq!(c.rate_limit_per_sec, 0);
        assert_eq!(c.admin_client_id.as_deref(), Some("ops"));
        for off in ["false", "0", "no", "Off"] {
            let c = with_vars(&[("BOURSE_DEPOSIT_AUTO_APPROVE", off)]).expect("valid");
            assert!(!c.deposit_auto_approve, "{off}");
        }
        // Empty is unset.
        let c = with_vars(&[("BOURSE_REGISTRATION", "")]).expect("valid");
        assert_eq!(c.registration, Registration::Open);
    }

    /// `max_connections_per_address`: 1,024 by default, from the file's top-level key or
    /// its variable (a known one, not warned about as misspelt), and 0 refused.
    #[test]
    fn max_connections_per_address_is_read_and_bounded() {
        assert_eq!(
            Config::default().max_connections_per_address,
            DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
        );
        let c = with_vars(&[("BOURSE_MAX_CONNECTIONS_PER_ADDRESS", "16")]).expect("valid");
        assert_eq!(c.max_connections_per_address, 16);
        let c: Config = toml::from_str("max_connections_per_address = 9\n").expect("parses");
        assert_eq!(c.max_connections_per_address, 9);
        let e = refused(&[("BOURSE_MAX_CONNECTIONS_PER_ADDRESS", "0")]);
        assert!(e.contains("max_connections_per_address"), "{e}");
        assert!(
            Config::unknown_vars(["BOURSE_MAX_CONNECTIONS_PER_ADDRESS".to_string()]).is_empty()
        );
    }

    /// Unknown values once fell back to a default without a word (`ADMIN` registration
    /// was open, `fsynk` durability was fsync, `maybe` auto-approval was off).
    #[test]
    fn unknown_env_values_stop_the_start_naming_the_variable_and_the_choices() {
        assert_eq!(
            refused(&[("BOURSE_REGISTRATION", "ADMIN")]),
            "BOURSE_REGISTRATION=ADMIN: expected open|admin"
        );
        assert_eq!(
            refused(&[("BOURSE_REGISTRATION", "closed")]),
            "BOURSE_REGISTRATION=closed: expected open|admin"
        );
        assert_eq!(
            refused(&[("BOURSE_DURABILITY", "fsynk")]),
            "BOURSE_DURABILITY=fsynk: expected fsync|none"
        );
        assert_eq!(
            refused(&[("BOURSE_DEPOSIT_AUTO_APPROVE", "maybe")]),
            "BOURSE_DEPOSIT_AUTO_APPROVE=maybe: expected true|false|1|0|yes|no|on|off"
        );
    }

    #[test]
    fn bad_numbers_and_addresses_name_the_variable() {
        for (var, value) in [
            ("BOURSE_TOKEN_TTL_SECS", "1h"),
            ("BOURSE_ARGON2_MEMORY_KIB", "19MiB"),
            ("BOURSE_RATE_LIMIT_PER_SEC", "-1"),
            ("BOURSE_RATE_LIMIT_BURST", "4294967296"),
            ("BOURSE_BIND", "localhost"),
            ("BOURSE_WS_MAX_MESSAGE_BYTES", "64k"),
            ("BOURSE_WS_CONTROL_QUEUE_BYTES", "8MiB"),
            ("BOURSE_ARGON2_ITERATIONS", "two"),
            ("BOURSE_RING_CAPACITY", "-1"),
            ("BOURSE_WS_QUEUE_BOUND", "4k"),
            ("BOURSE_WS_MAX_WRITES_PER_SEC", "4294967296"),
            ("BOURSE_WS_PING_INTERVAL_SECS", "15s"),
            ("BOURSE_WS_IDLE_TIMEOUT_SECS", "1.5"),
            ("BOURSE_WS_STALL_TIMEOUT_SECS", " 10"),
            ("BOURSE_WS_BOOK_INTERVAL_MS", "-5"),
        ] {
            let e = refused(&[(var, value)]);
            assert!(e.starts_with(&format!("{var}={value}: expected ")), "{e}");
        }
        assert!(refused(&[("BOURSE_RATE_LIMIT_PER_SEC", "x")]).ends_with("from 0 to 4294967295"));
    }

    /// Every file setting has its variable: the argon2 time cost, the engine's ring size and
    /// the `[ws]` timings and ring bound once had none. Values reach the feed's settings, and
    /// the checks of the file apply to them (by the setting's name).
    #[test]
    fn argon2_ring_and_ws_variables_are_applied_and_checked() {
        let c = with_vars(&[
            ("BOURSE_WS_QUEUE_BOUND", "10000"),
            ("BOURSE_WS_MAX_WRITES_PER_SEC", "0"),
            ("BOURSE_WS_PING_INTERVAL_SECS", "5"),
            ("BOURSE_WS_IDLE_TIMEOUT_SECS", "20"),
            ("BOURSE_WS_STALL_TIMEOUT_SECS", "3"),
            ("BOURSE_WS_BOOK_INTERVAL_MS", "0"),
        ])
        .expect("valid");
        let f = c.ws.feed_config().expect("valid limits");
        assert_eq!(f.queue_bound, 10_000);
        assert_eq!(f.ring_capacity(), 10_000);
        assert_eq!(f.max_writes_per_sec, 0);
        assert_eq!(f.ping_interval, std::time::Duration::from_secs(5));
        assert_eq!(f.idle_timeout, std::time::Duration::from_secs(20));
        assert_eq!(f.stall_timeout, std::time::Duration::from_secs(3));
        assert_eq!(f.book_interval, std::time::Duration::ZERO);

        let e = refused(&[("BOURSE_ARGON2_ITERATIONS", "0")]);
        assert!(
            e.starts_with("argon2_memory_kib = 19456, argon2_iterations = 0: "),
            "{e}"
        );
        assert_eq!(
            refused(&[("BOURSE_RING_CAPACITY", "0")]),
            "ring_capacity = 0: expected 1 to 1048576"
        );
        let c: Config = toml::from_str(
            "ring_capacity = 0
",
        )
        .expect("parses");
        assert_eq!(
            c.validate(),
            Err(ConfigError::OutOfRange {
                setting: "ring_capacity",
                value: 0,
                min: 1,
                max: 1 << 20,
            })
        );
        assert_eq!(
            refused(&[("BOURSE_RING_CAPACITY", "1048577")]),
            "ring_capacity = 1048577: expected 1 to 1048576"
        );
        let c = with_vars(&[("BOURSE_RING_CAPACITY", "1048576")]).expect("the largest");
        assert_eq!(c.ring_capacity, 1 << 20);
        let ws_refused = |vars: &[(&str, &str)]| {
            with_vars(vars)
                .expect("parses")
                .ws
                .feed_config()
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            ws_refused(&[("BOURSE_WS_QUEUE_BOUND", "65537")]),
            "ws.queue_bound = 65537: expected at most 65536"
        );
        let e = ws_refused(&[("BOURSE_WS_STALL_TIMEOUT_SECS", "0")]);
        assert!(e.contains("ws.stall_timeout_secs"), "{e}");
        let e = ws_refused(&[("BOURSE_WS_IDLE_TIMEOUT_SECS", "15")]);
        assert!(e.contains("ws.idle_timeout_secs"), "{e}");
    }

    /// An admin id without a secret (or the reverse) was ignored: the server started with
    /// another admin than the operator meant.
    #[test]
    fn half_of_the_admin_credentials_is_an_error() {
        let e = refused(&[("BOURSE_ADMIN_CLIENT_ID", "ops")]);
        assert!(e.starts_with("admin_client_id (BOURSE_ADMIN_CLIENT_ID) is set but admin_client_secret (BOURSE_ADMIN_CLIENT_SECRET) is not"), "{e}");
        let e = refused(&[("BOURSE_ADMIN_CLIENT_SECRET", "s3cret")]);
        assert!(
            e.starts_with(
                "admin_client_secret (BOURSE_ADMIN_CLIENT_SECRET) is set but admin_client_id"
            ),
            "{e}"
        );
        // From the file too.
        let c: Config = toml::from_str("admin_client_id = \"ops\"\n").expect("parses");
        assert!(matches!(c.validate(), Err(ConfigError::AdminHalf { .. })));
    }

    #[test]
    fn the_history_query_limit_is_read_and_checked() {
        assert_eq!(Config::default().history_query_timeout_ms, 5_000);
        let c = with_vars(&[("BOURSE_HISTORY_QUERY_TIMEOUT_MS", "250")]).expect("valid");
        assert_eq!(c.history_query_timeout_ms, 250);
        assert_eq!(
            refused(&[("BOURSE_HISTORY_QUERY_TIMEOUT_MS", "0")]),
            "history_query_timeout_ms = 0: expected 1 to 3600000"
        );
        let c: Config = toml::from_str("history_query_timeout_ms = 3600001\n").expect("parses");
        assert_eq!(
            c.validate(),
            Err(ConfigError::OutOfRange {
                setting: "history_query_timeout_ms",
                value: 3_600_001,
                min: 1,
                max: 3_600_000,
            })
        );
    }

    #[test]
    fn the_open_orders_bound_is_read_and_checked() {
        assert_eq!(Config::default().max_open_orders_per_account, 100_000);
        let c = with_vars(&[("BOURSE_MAX_OPEN_ORDERS_PER_ACCOUNT", "3")]).expect("valid");
        assert_eq!(c.max_open_orders_per_account, 3);
        assert_eq!(
            refused(&[("BOURSE_MAX_OPEN_ORDERS_PER_ACCOUNT", "0")]),
            "max_open_orders_per_account = 0: expected 1 to 16777215"
        );
        assert_eq!(
            refused(&[("BOURSE_MAX_OPEN_ORDERS_PER_ACCOUNT", "lots")]),
            "BOURSE_MAX_OPEN_ORDERS_PER_ACCOUNT=lots: expected a whole number from 1 to 16777215"
        );
    }

    #[test]
    fn the_book_bound_is_read_and_checked() {
        assert_eq!(
            Config::default().max_orders_per_book as usize,
            engine::EngineLimits::default().max_orders_per_book
        );
        let c = with_vars(&[("BOURSE_MAX_ORDERS_PER_BOOK", "500")]).expect("valid");
        assert_eq!(c.max_orders_per_book, 500);
        let c: Config = toml::from_str("max_orders_per_book = 16777215\n").expect("parses");
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            refused(&[("BOURSE_MAX_ORDERS_PER_BOOK", "ten")]),
            "BOURSE_MAX_ORDERS_PER_BOOK=ten: expected a whole number from 1 to 16777215"
        );
        assert_eq!(
            refused(&[("BOURSE_MAX_ORDERS_PER_BOOK", "0")]),
            "max_orders_per_book = 0: expected 1 to 16777215"
        );
        let c: Config = toml::from_str("max_orders_per_book = 16777216\n").expect("parses");
        assert_eq!(
            c.validate(),
            Err(ConfigError::OutOfRange {
                setting: "max_orders_per_book",
                value: 16_777_216,
                min: 1,
                max: 16_777_215,
            })
        );
    }

    #[test]
    fn file_values_outside_the_choices_and_argon2_costs_it_refuses_are_errors() {
        assert!(toml::from_str::<Config>("durability = \"fsynk\"\n").is_err());
        assert!(toml::from_str::<Config>("registration = \"Admin\"\n").is_err());
        let c: Config = toml::from_str("durability = \"none\"\n").expect("parses");
        assert_eq!(c.durability, Durability::None);
        let c: Config = toml::from_str("argon2_iterations = 0\n").expect("parses");
        let e = c.validate().expect_err("refused").to_string();
        assert!(
            e.starts_with("argon2_memory_kib = 19456, argon2_iterations = 0: "),
            "{e}"
        );
    }

    #[test]
    fn the_ws_section_of_the_file_reaches_the_feed_config() {
        let c: Config = toml::from_str(
            "[ws]\nmax_connections = 7\nmax_subscriptions = 3\nmax_inbound_per_sec = 5\n\
             max_message_bytes = 1024\nping_interval_secs = 5\nidle_timeout_secs = 20\n\
             book_interval_ms = 0\ncontrol_queue_bytes = 65536\n",
        )
        .expect("valid file");
        let f = c.ws.feed_config().expect("valid limits");
        assert_eq!(f.max_connections, 7);
        assert_eq!(f.max_subscriptions, 3);
        assert_eq!(f.max_inbound_per_sec, 5);
        assert_eq!(f.max_message_bytes, 1024);
        assert_eq!(f.ping_interval, std::time::Duration::from_secs(5));
        assert_eq!(f.idle_timeout, std::time::Duration::from_secs(20));
        assert_eq!(f.book_interval, std::time::Duration::ZERO);
        assert_eq!(f.control_queue_bytes, 65_536);
        // What the file leaves out keeps the feed's default.
        let d = feed::FeedConfig::default();
        assert_eq!(f.queue_bound, d.queue_bound);
        assert_eq!(f.max_writes_per_sec, d.max_writes_per_sec);
        assert_eq!(f.stall_timeout, d.stall_timeout);
        // And no file at all is exactly the feed's defaults.
        let f = WsConfig::default()
            .feed_config()
            .expect("defaults are valid");
        assert_eq!(format!("{f:?}"), format!("{d:?}"));
    }

    #[test]
    fn ws_limits_that_would_refuse_everything_are_errors() {
        let bad = |edit: fn(&mut WsConfig)| {
            let mut w = WsConfig::default();
            edit(&mut w);
            w.feed_config().expect_err("refused").to_string()
        };
        assert!(bad(|w| w.max_connections = 0).contains("ws.max_connections"));
        assert!(bad(|w| w.max_inbound_per_sec = 0).contains("ws.max_inbound_per_sec"));
        assert!(bad(|w| w.max_message_bytes = 10).contains("ws.max_message_bytes"));
        for bytes in [
            0,
            MIN_CONTROL_QUEUE_BYTES - 1,
            MAX_CONTROL_QUEUE_BYTES + 1,
            usize::MAX,
        ] {
            let w = WsConfig {
                control_queue_bytes: bytes,
                ..WsConfig::default()
            };
            let e = w.feed_config().expect_err("refused").to_string();
            assert!(e.contains("ws.control_queue_bytes"), "{bytes}: {e}");
        }
        for bytes in [MIN_CONTROL_QUEUE_BYTES, MAX_CONTROL_QUEUE_BYTES] {
            let w = WsConfig {
                control_queue_bytes: bytes,
                ..WsConfig::default()
            };
            assert_eq!(w.feed_config().expect("valid").control_queue_bytes, bytes);
        }
        assert!(
            bad(|w| {
                w.ping_interval_secs = 60;
                w.idle_timeout_secs = 60;
            })
            .contains("ws.idle_timeout_secs")
        );
        assert!(toml::from_str::<Config>("[ws]\nmax_conections = 1\n").is_err());
    }

    /// A queue bound above the rings' default capacity takes effect: the rings grow with it
    /// (a cursor more than a ring's capacity behind counts as slow whatever the bound, so a
    /// larger bound in smaller rings did nothing). Past the maximum it is refused by name.
    #[test]
    fn the_channel_rings_hold_at_least_the_queue_bound() {
        let default_capacity = feed::FeedConfig::default().channel_capacity;
        let with_bound = |queue_bound: usize| {
            let c: Config = toml::from_str(&format!("[ws]\nqueue_bound = {queue_bound}\n"))
                .expect("valid file");
            c.ws.feed_config()
        };
        for bound in [
            1,
            64,
            default_capacity,
            default_capacity + 1,
            MAX_QUEUE_BOUND,
        ] {
            let f = with_bound(bound).expect("a valid bound");
            assert_eq!(f.queue_bound, bound);
            assert!(
                f.ring_capacity() >= bound,
                "queue_bound {bound} in rings of {}",
                f.ring_capacity()
            );
            assert!(f.ring_capacity() >= default_capacity, "{bound}");
        }
        assert_eq!(
            with_bound(10_000).expect("valid").ring_capacity(),
            10_000,
            "the rings grow no more than the bound needs"
        );
        let err = with_bound(MAX_QUEUE_BOUND + 1).expect_err("over the maximum");
        assert!(err.to_string().contains("ws.queue_bound"), "{err}");
    }
}
