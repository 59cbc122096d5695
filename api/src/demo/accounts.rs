//! The demo's accounts: a market maker, a taker and the visitor's account, each registered
//! and funded through the public API (the demo server auto-approves deposits).

use std::path::Path;

use anyhow::Context;

use super::client::{Client, Credentials, CurrencyInfo};
use super::market::worth_minor;
use super::units;

/// About how much each simulated trader holds per currency, in dollars. Far more than the
/// simulation can spend, so it never runs dry.
pub const TRADER_USD: u64 = 50_000_000;
/// What the visitor's account starts with per currency, in dollars.
pub const VISITOR_USD: u64 = 250_000;

/// Registers `name`, logs in, and deposits about `usd` dollars of every currency.
pub async fn open_funded(
    base: &Client,
    name: &str,
    currencies: &[CurrencyInfo],
    usd: u64,
) -> anyhow::Result<(Client, Credentials)> {
    let client = base.another();
    let creds = client
        .register(name)
        .await
        .with_context(|| format!("registering {name}"))?;
    client
        .login(&creds)
        .await
        .with_context(|| format!("logging in {name}"))?;
    for c in currencies {
        let minor = worth_minor(&c.currency, c.minor_amount_decimals, usd);
        let amount = units::format(minor, c.minor_amount_decimals);
        let external_id = format!("{}-{}-funding", creds.user_id, c.currency);
        let status = client
            .deposit(&c.currency, &amount, &external_id)
            .await
            .with_context(|| format!("depositing {amount} {} for {name}", c.currency))?;
        anyhow::ensure!(
            status == "completed",
            "the deposit for {name} is {status}: the demo needs deposit auto-approval"
        );
    }
    Ok((client, creds))
}

/// The demo's three accounts.
#[derive(Debug)]
pub struct DemoAccounts {
    pub maker: Client,
    pub taker: Client,
    pub visitor: Credentials,
}

/// Where a demo keeps its accounts' credentials, so that a restart on the same data dir logs
/// the same traders back in (and they go on managing their resting quotes) and the visitor's
/// credentials stay valid.
fn accounts_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("demo-accounts.json")
}

/// Logs the saved accounts back in, or registers and funds new ones and saves them.
pub async fn load_or_open(
    root: &Client,
    data_dir: &Path,
    currencies: &[CurrencyInfo],
) -> anyhow::Result<DemoAccounts> {
    let file = accounts_file(data_dir);
    if let Ok(text) = std::fs::read_to_string(&file)
        && let Ok([maker, taker, visitor]) = serde_json::from_str::<[Credentials; 3]>(&text)
    {
        let (m, t) = (root.another(), root.another());
        if m.login(&maker).await.is_ok() && t.login(&taker).await.is_ok() {
            return Ok(DemoAccounts {
                maker: m,
                taker: t,
                visitor,
            });
        }
        tracing::warn!("saved demo accounts no longer log in; registering new ones");
    }
    let (maker, maker_creds) = open_funded(root, "demo-maker", currencies, TRADER_USD).await?;
    let (taker, taker_creds) = open_funded(root, "demo-taker", currencies, TRADER_USD).await?;
    let (_, visitor) = open_funded(root, "demo-visitor", currencies, VISITOR_USD).await?;
    let saved = serde_json::to_string_pretty(&[&maker_creds, &taker_creds, &visitor])?;
    std::fs::write(&file, saved).with_context(|| format!("writing {}", file.display()))?;
    Ok(DemoAccounts {
        maker,
        taker,
        visitor,
    })
}
