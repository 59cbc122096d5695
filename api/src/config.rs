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

/// Who may call `POST /v1/users`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    #[default]
    Open,
    Admin,
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
    /// Requests per second per client (token or IP); 0 disables the limit.
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
        Ok(())
    }
}
