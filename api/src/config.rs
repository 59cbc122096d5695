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
    /// Outbound messages a connection may have unread before it counts as slow.
    pub queue_bound: usize,
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
            max_writes_per_sec: f.max_writes_per_sec,
            ping_interval_secs: f.ping_interval.as_secs(),
            idle_timeout_secs: f.idle_timeout.as_secs(),
            stall_timeout_secs: f.stall_timeout.as_secs(),
            book_interval_ms: f.book_interval.as_millis() as u64,
        }
    }
}

impl WsConfig {
    /// The feed's settings, or what is wrong with these: every limit must admit at least one
    /// (a zero would refuse every connection, subscription or message), pings must come
    /// before the idle timeout closes a quiet but live peer, and a message must fit one
    /// subscribe request.
    pub fn feed_config(&self) -> anyhow::Result<feed::FeedConfig> {
        let positive = [
            ("max_connections", self.max_connections as u64),
            ("max_subscriptions", self.max_subscriptions as u64),
            ("max_inbound_per_sec", u64::from(self.max_inbound_per_sec)),
            ("queue_bound", self.queue_bound as u64),
            ("ping_interval_secs", self.ping_interval_secs),
            ("stall_timeout_secs", self.stall_timeout_secs),
        ];
        for (name, v) in positive {
            anyhow::ensure!(v > 0, "ws.{name} must be at least 1");
        }
        anyhow::ensure!(
            self.max_message_bytes >= 256,
            "ws.max_message_bytes must be at least 256"
        );
        anyhow::ensure!(
            self.idle_timeout_secs > self.ping_interval_secs,
            "ws.idle_timeout_secs ({}) must be longer than ws.ping_interval_secs ({})",
            self.idle_timeout_secs,
            self.ping_interval_secs
        );
        let secs = std::time::Duration::from_secs;
        Ok(feed::FeedConfig {
            max_connections: self.max_connections,
            max_subscriptions: self.max_subscriptions,
            max_inbound_per_sec: self.max_inbound_per_sec,
            max_message_bytes: self.max_message_bytes,
            queue_bound: self.queue_bound,
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
    pub durability: String,
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
    pub argon2_iterations: u32,
    pub ring_capacity: usize,
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
            durability: "fsync".into(),
            deposit_auto_approve: false,
            registration: Registration::Open,
            token_ttl_secs: 3600,
            rate_limit_per_sec: 2000,
            rate_limit_burst: 4000,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            ring_capacity: 65_536,
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

fn env_bool(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

impl Config {
    /// Loads the file (when given), then applies `BOURSE_*` environment overrides.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))?
            }
            None => Config::default(),
        };
        config.apply_env()?;
        Ok(config)
    }

    /// Environment overrides (`BOURSE_BIND`, `BOURSE_DATA_DIR`, ...).
    pub fn apply_env(&mut self) -> anyhow::Result<()> {
        if let Some(v) = env("BOURSE_BIND") {
            self.bind = v.parse()?;
        }
        if let Some(v) = env("BOURSE_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = env("BOURSE_DURABILITY") {
            self.durability = v;
        }
        if let Some(v) = env("BOURSE_DEPOSIT_AUTO_APPROVE") {
            self.deposit_auto_approve = env_bool(&v);
        }
        if let Some(v) = env("BOURSE_REGISTRATION") {
            self.registration = match v.as_str() {
                "admin" => Registration::Admin,
                _ => Registration::Open,
            };
        }
        if let Some(v) = env("BOURSE_TOKEN_TTL_SECS") {
            self.token_ttl_secs = v.parse()?;
        }
        if let Some(v) = env("BOURSE_ARGON2_MEMORY_KIB") {
            self.argon2_memory_kib = v.parse()?;
        }
        if let Some(v) = env("BOURSE_ADMIN_CLIENT_ID") {
            self.admin_client_id = Some(v);
        }
        if let Some(v) = env("BOURSE_ADMIN_CLIENT_SECRET") {
            self.admin_client_secret = Some(v);
        }
        if let Some(v) = env("BOURSE_RATE_LIMIT_PER_SEC") {
            self.rate_limit_per_sec = v.parse()?;
        }
        if let Some(v) = env("BOURSE_RATE_LIMIT_BURST") {
            self.rate_limit_burst = v.parse()?;
        }
        if let Some(v) = env("BOURSE_WS_MAX_CONNECTIONS") {
            self.ws.max_connections = v.parse()?;
        }
        if let Some(v) = env("BOURSE_WS_MAX_SUBSCRIPTIONS") {
            self.ws.max_subscriptions = v.parse()?;
        }
        if let Some(v) = env("BOURSE_WS_MAX_INBOUND_PER_SEC") {
            self.ws.max_inbound_per_sec = v.parse()?;
        }
        if let Some(v) = env("BOURSE_WS_MAX_MESSAGE_BYTES") {
            self.ws.max_message_bytes = v.parse()?;
        }
        // Checked here too, so a bad value stops the start with its name.
        self.ws.feed_config()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ws_section_of_the_file_reaches_the_feed_config() {
        let c: Config = toml::from_str(
            "[ws]\nmax_connections = 7\nmax_subscriptions = 3\nmax_inbound_per_sec = 5\n\
             max_message_bytes = 1024\nping_interval_secs = 5\nidle_timeout_secs = 20\n\
             book_interval_ms = 0\n",
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
        assert!(
            bad(|w| {
                w.ping_interval_secs = 60;
                w.idle_timeout_secs = 60;
            })
            .contains("ws.idle_timeout_secs")
        );
        assert!(toml::from_str::<Config>("[ws]\nmax_conections = 1\n").is_err());
    }
}
