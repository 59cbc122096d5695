//! Events: every outcome of a command. Consumers (history store, market data, wallets,
//! replies) derive all they show from these; the engine never formats anything itself.

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, CurrencyId, OrderId, PairId, RequestId, TradeId};
use crate::price::{Amount, Price};
use crate::reject::RejectReason;
use crate::side::Side;
use crate::spec::PairStatus;

/// One outcome. A command produces zero or more, in a deterministic order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// An order passed every check; `held` is what it reserved (quote minor for a buy,
    /// base minor for a sell).
    Accepted {
        order: OrderId,
        account: AccountId,
        pair: PairId,
        side: Side,
        held: u64,
    },
    /// An order was refused; nothing changed. (A post-only that would take is reported as
    /// `Rejected` with [`RejectReason::PostOnlyWouldTake`].)
    Rejected {
        order: OrderId,
        account: AccountId,
        reason: RejectReason,
    },
    /// A trade between a resting maker and an incoming taker.
    Trade(Trade),
    /// The order now rests on the book with `remaining` lots.
    Rested {
        order: OrderId,
        remaining: Amount,
    },
    /// The order is final and off the book.
    Done {
        order: OrderId,
        account: AccountId,
        pair: PairId,
        reason: DoneReason,
    },
    /// A cancel named an order that is not resting for that account.
    CancelRejected {
        order: OrderId,
        account: AccountId,
        reason: RejectReason,
    },
    /// A price level's new total (0 removes it). `book_seq` is the pair's book sequence after
    /// the command: every level change of one command carries the same value.
    LevelChanged {
        pair: PairId,
        side: Side,
        price: Price,
        amount: Amount,
        book_seq: u64,
    },
    /// An account's balance of one currency after a change (the fee account is not reported).
    Balance {
        account: AccountId,
        currency: CurrencyId,
        available: u64,
        held: u64,
    },
    /// A request's new status.
    RequestUpdated {
        request: RequestId,
        account: AccountId,
        status: RequestStatus,
    },
    /// A request command (new, approve, reject) was refused.
    RequestRefused {
        request: RequestId,
        reason: RejectReason,
    },
    CurrencyAdded {
        currency: CurrencyId,
    },
    PairAdded {
        pair: PairId,
    },
    PairStatusChanged {
        pair: PairId,
        status: PairStatus,
    },
    /// An operator command (currency, pair, status, account registration) was refused.
    ConfigRefused {
        reason: RejectReason,
    },
    /// A [`crate::Command::RegisterAccount`] was accepted.
    AccountRegistered {
        account: AccountId,
    },
    /// A [`crate::Command::SetMaxOrdersPerBook`] was accepted: the bound from now on.
    MaxOrdersPerBookSet {
        max: u32,
    },
    /// A [`crate::Command::SetRulesVersion`] was accepted: the matching rules from now on.
    RulesVersionSet {
        version: u32,
    },
}

/// A trade and its complete settlement, in integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    pub id: TradeId,
    pub pair: PairId,
    pub price: Price,
    pub amount: Amount,
    /// The taker's side.
    pub taker_side: Side,
    pub maker_order: OrderId,
    pub taker_order: OrderId,
    pub maker_account: AccountId,
    pub taker_account: AccountId,
    /// Quote minor units the buyer paid (value rounded up).
    pub buyer_paid: u64,
    /// Quote minor units the seller received before fee (value rounded down).
    pub seller_received: u64,
    /// Base minor units the buyer received before fee.
    pub base_received: u64,
    /// Buyer's fee, base minor units.
    pub buyer_fee: u64,
    /// Seller's fee, quote minor units.
    pub seller_fee: u64,
}

impl Trade {
    /// The buyer's and the seller's order.
    pub fn buy_order(&self) -> OrderId {
        if self.taker_side == Side::Buy {
            self.taker_order
        } else {
            self.maker_order
        }
    }

    pub fn sell_order(&self) -> OrderId {
        if self.taker_side == Side::Sell {
            self.taker_order
        } else {
            self.maker_order
        }
    }

    pub fn buyer(&self) -> AccountId {
        if self.taker_side == Side::Buy {
            self.taker_account
        } else {
            self.maker_account
        }
    }

    pub fn seller(&self) -> AccountId {
        if self.taker_side == Side::Sell {
            self.taker_account
        } else {
            self.maker_account
        }
    }
}

/// Why an order left the book (or never joined it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DoneReason {
    /// Completely filled.
    Filled,
    /// Cancelled by its owner (or a cancel-all).
    Cancelled,
    /// IOC or market remainder after taking what crossed.
    ImmediateOrCancel,
    /// FOK that could not fill completely: no trade happened.
    FillOrKill,
    /// Market order that found no (more) liquidity or exhausted its quote budget.
    NoLiquidity,
    /// Self-trade prevention.
    SelfTradePrevention,
    /// The order could not pay a fill (rounding shortfall with nothing left available).
    InsufficientFunds,
}

impl DoneReason {
    /// The public order status for this outcome.
    pub fn status(self) -> OrderStatus {
        match self {
            DoneReason::Filled => OrderStatus::Filled,
            DoneReason::Cancelled => OrderStatus::Cancelled,
            _ => OrderStatus::Expired,
        }
    }
}

/// The public order status (API.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    Open,
    PartiallyFilled,
    Filled,
    Cancelled,
    Expired,
    Rejected,
}

/// A deposit or withdrawal request's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestStatus {
    Pending,
    Completed,
    Rejected,
}
