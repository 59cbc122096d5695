//! Balances: available and held, per account and currency, in minor units.
//!
//! One flat array, `MAX_CURRENCIES` entries per account, so a balance is one index away.
//! The ledger only moves money; the rules (what to hold, what a trade costs) live in the
//! engine. Every movement keeps `available + held` per currency summed over all accounts
//! equal to deposits minus withdrawals; [`Ledger::totals`] lets tests check it.

use crate::ids::{AccountId, CurrencyId};
use crate::spec::MAX_CURRENCIES;

/// Upper bound of all money of one currency in minor units (deposits are refused beyond it),
/// so no balance arithmetic can overflow a `u64`.
pub const MAX_SUPPLY: u64 = 1 << 62;

/// One account's balance of one currency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    pub available: u64,
    pub held: u64,
}

impl Balance {
    pub fn total(&self) -> u64 {
        self.available + self.held
    }
}

/// All balances.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    balances: Vec<Balance>,
}

#[inline]
fn slot(account: AccountId, currency: CurrencyId) -> usize {
    account.0 as usize * MAX_CURRENCIES + currency.0 as usize
}

impl Ledger {
    /// A ledger with the fee account.
    pub fn new() -> Self {
        Ledger {
            balances: vec![Balance::default(); MAX_CURRENCIES],
        }
    }

    /// Number of account rows (highest account id + 1).
    pub fn accounts(&self) -> u32 {
        (self.balances.len() / MAX_CURRENCIES) as u32
    }

    /// Makes room for `account` (allocates; never on the matching path).
    pub fn ensure_account(&mut self, account: AccountId) {
        let need = (account.0 as usize + 1) * MAX_CURRENCIES;
        if self.balances.len() < need {
            self.balances.resize(need, Balance::default());
        }
    }

    /// The balance (zero for an account never credited).
    #[inline]
    pub fn get(&self, account: AccountId, currency: CurrencyId) -> Balance {
        self.balances
            .get(slot(account, currency))
            .copied()
            .unwrap_or_default()
    }

    #[inline]
    fn entry(&mut self, account: AccountId, currency: CurrencyId) -> &mut Balance {
        &mut self.balances[slot(account, currency)]
    }

    /// Moves `amount` from available to held. False (and no change) when short.
    #[inline]
    pub fn hold(&mut self, account: AccountId, currency: CurrencyId, amount: u64) -> bool {
        // One lookup: an account never credited has nothing available.
        let Some(b) = self.balances.get_mut(slot(account, currency)) else {
            return amount == 0;
        };
        if b.available < amount {
            return false;
        }
        b.available -= amount;
        b.held += amount;
        true
    }

    /// Moves `amount` from held back to available.
    #[inline]
    pub fn release(&mut self, account: AccountId, currency: CurrencyId, amount: u64) {
        if amount == 0 {
            return;
        }
        let b = self.entry(account, currency);
        assert!(b.held >= amount, "release more than held");
        b.held -= amount;
        b.available += amount;
    }

    /// Removes `amount` from held (money leaves the account: a payment or a withdrawal).
    #[inline]
    pub fn spend_held(&mut self, account: AccountId, currency: CurrencyId, amount: u64) {
        if amount == 0 {
            return;
        }
        let b = self.entry(account, currency);
        assert!(b.held >= amount, "spend more than held");
        b.held -= amount;
    }

    /// Adds `amount` to available. The account must exist ([`Ledger::ensure_account`]).
    #[inline]
    pub fn credit(&mut self, account: AccountId, currency: CurrencyId, amount: u64) {
        if amount == 0 {
            return;
        }
        let b = self.entry(account, currency);
        b.available = b
            .available
            .checked_add(amount)
            .expect("balance within MAX_SUPPLY");
    }

    /// Sum of available + held of `currency` over every account, fee account included.
    pub fn totals(&self, currency: CurrencyId) -> u128 {
        self.balances
            .iter()
            .skip(currency.0 as usize)
            .step_by(MAX_CURRENCIES)
            .map(|b| u128::from(b.total()))
            .sum()
    }

    /// Sum of held of `currency` over every account.
    pub fn held_total(&self, account: AccountId, currency: CurrencyId) -> u64 {
        self.get(account, currency).held
    }

    /// Every non-zero balance, by account then currency (canonical order for snapshots).
    pub fn non_zero(&self) -> impl Iterator<Item = (AccountId, CurrencyId, Balance)> + '_ {
        self.balances
            .iter()
            .enumerate()
            .filter(|(_, b)| b.available != 0 || b.held != 0)
            .map(|(i, b)| {
                (
                    AccountId((i / MAX_CURRENCIES) as u32),
                    CurrencyId((i % MAX_CURRENCIES) as u16),
                    *b,
                )
            })
    }

    /// Sets a balance (snapshot restore only).
    pub fn set(&mut self, account: AccountId, currency: CurrencyId, balance: Balance) {
        self.ensure_account(account);
        *self.entry(account, currency) = balance;
    }
}
