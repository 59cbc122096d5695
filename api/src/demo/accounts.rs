//! The demo's accounts: a market maker, a taker and the visitor's account, each registered
//! and funded through the public API (the demo server auto-approves deposits).

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
