//! Commands: everything that can change engine state, in the form the journal stores.
//!
//! A command carries every decision taken before sequencing (ids, the request's metadata),
//! so replaying the journal re-decides nothing. The engine is a pure function of the
//! sequence of commands it is given.

use serde::{Deserialize, Serialize};

use crate::client_id::ClientOrderId;
use crate::ids::{AccountId, CurrencyId, OrderId, PairId, RequestId};
use crate::price::{Amount, Price};
use crate::side::{SelfTradePrevention, Side, TimeInForce};
use crate::spec::{CurrencySpec, PairSpec, PairStatus};

/// A command to the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Place a new order.
    Place(PlaceOrder),
    /// Cancel one resting order of `account`.
    Cancel { account: AccountId, order: OrderId },
    /// Cancel every resting order of `account` (on one pair, or all pairs).
    CancelAll {
        account: AccountId,
        pair: Option<PairId>,
    },
    /// A deposit the client announced; no money moves until it is approved.
    DepositRequested(RequestSpec),
    /// A completed deposit (back-office credit, or sandbox auto-approval): credits at once.
    DepositCredited(RequestSpec),
    /// A withdrawal: the amount moves from available to held until approved or rejected.
    WithdrawalRequested(RequestSpec),
    /// Approve a pending request: a deposit credits, a withdrawal removes the held amount.
    ApproveRequest { request: RequestId },
    /// Reject a pending request: a withdrawal's held amount returns to available.
    RejectRequest { request: RequestId, reason: String },
    /// Add a currency; it gets the next [`CurrencyId`].
    AddCurrency(CurrencySpec),
    /// Add a pair; it gets the next [`PairId`].
    AddPair(PairSpec),
    /// Halt or resume a pair.
    SetPairStatus { pair: PairId, status: PairStatus },
    /// Register an account (or replace its client's credentials) for the API. The engine
    /// keeps nothing of it; it is journaled so that users and clients, like every read
    /// model, can be rebuilt from the journal. Only a hash of the secret is ever here.
    RegisterAccount {
        account: AccountId,
        name: String,
        client_id: String,
        /// The argon2id PHC string of the client secret.
        secret_hash: String,
        /// The client's scopes (the API's bit set).
        scopes: u8,
    },
}

/// A new order as the engine receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub id: OrderId,
    pub account: AccountId,
    pub pair: PairId,
    pub side: Side,
    pub kind: OrderKind,
    pub stp: SelfTradePrevention,
    pub client_id: ClientOrderId,
}

/// Limit or market, with what each needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderKind {
    Limit {
        price: Price,
        amount: Amount,
        tif: TimeInForce,
        post_only: bool,
    },
    /// Always immediate-or-cancel.
    Market { size: MarketSize },
}

/// A market order is sized in base lots or in quote minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MarketSize {
    /// Trade this many lots.
    Base(Amount),
    /// Trade until the trades are worth this much quote (minor units, before fees).
    Quote(u64),
}

/// A deposit or withdrawal request as decided by the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSpec {
    pub request: RequestId,
    pub account: AccountId,
    pub currency: CurrencyId,
    /// Minor units of the currency.
    pub amount: u64,
    /// The client's idempotency key (unique per account; checked before sequencing).
    pub external_id: String,
    /// Withdrawal destination; empty for deposits.
    pub destination: String,
}

impl Command {
    /// The pair whose book this command touches, when it touches exactly one.
    pub fn pair(&self) -> Option<PairId> {
        match self {
            Command::Place(p) => Some(p.pair),
            Command::CancelAll { pair, .. } => *pair,
            Command::SetPairStatus { pair, .. } => Some(*pair),
            _ => None,
        }
    }
}
