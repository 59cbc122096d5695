//! Commands: everything that can change engine state, in the form the journal stores.
//!
//! A command carries every decision taken before sequencing (ids, the request's metadata),
//! so replaying the journal re-decides nothing. The engine is a pure function of the
//! sequence of commands it is given.
//!
//! # Size
//! `Command` is 48 bytes (asserted below): the hot variants (place, cancel) are inline and
//! the rare ones with text (requests, currencies, account registration) are boxed, so a
//! stream of commands costs under one cache line each. It was 112 bytes, and reading the
//! command was the engine bench's most frequent cache miss. Boxing does not change the
//! journal encoding (postcard writes a boxed value like the value, and a newtype variant
//! holding a struct like a struct variant).

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
    DepositRequested(Box<RequestSpec>),
    /// A completed deposit (back-office credit, or sandbox auto-approval): credits at once.
    DepositCredited(Box<RequestSpec>),
    /// A withdrawal: the amount moves from available to held until approved or rejected.
    WithdrawalRequested(Box<RequestSpec>),
    /// Approve a pending request: a deposit credits, a withdrawal removes the held amount.
    ApproveRequest { request: RequestId },
    /// Reject a pending request: a withdrawal's held amount returns to available.
    RejectRequest { request: RequestId, reason: String },
    /// Add a currency; it gets the next [`CurrencyId`].
    AddCurrency(Box<CurrencySpec>),
    /// Add a pair; it gets the next [`PairId`].
    AddPair(PairSpec),
    /// Halt or resume a pair.
    SetPairStatus { pair: PairId, status: PairStatus },
    /// Register an account (or replace its client's credentials) for the API. The engine
    /// keeps nothing of it; it is journaled so that users and clients, like every read
    /// model, can be rebuilt from the journal. Only a hash of the secret is ever here.
    RegisterAccount(Box<AccountRegistration>),
    /// Set the most resting orders a book may hold ([`crate::EngineLimits::max_orders_per_book`],
    /// 1 to [`crate::MAX_ORDERS_PER_BOOK`]). Journaled, not read from the settings at start,
    /// because it decides outcomes: a replay must meet each order under the bound its live
    /// run met. Orders already resting stay when the bound is lowered below their number.
    SetMaxOrdersPerBook { max: u32 },
    /// Move the engine to matching rules `version` ([`crate::RULES_VERSION_GENESIS`] up to
    /// [`crate::RULES_VERSION_CURRENT`]; an older or unknown one is refused and changes
    /// nothing). Journaled, like the bound above, because the rules decide outcomes: a
    /// journal written before a rule changed must replay under the rule its live run met, so
    /// a new rule applies only from the command that switched it on. New variants go last:
    /// postcard writes the variant's index, so the records already journaled keep decoding.
    SetRulesVersion { version: u32 },
}

/// What [`Command::RegisterAccount`] carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRegistration {
    pub account: AccountId,
    pub name: String,
    pub client_id: String,
    /// The argon2id PHC string of the client secret.
    pub secret_hash: String,
    /// The client's scopes (the API's bit set).
    pub scopes: u8,
}

// One command per 48 bytes in a stream (see the module doc).
const _: () = assert!(std::mem::size_of::<Command>() <= 48);

/// A new order as the engine receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub id: OrderId,
    pub account: AccountId,
    pub pair: PairId,
    pub side: Side,
    pub kind: OrderKind,
    pub stp: SelfTradePrevention,
    pub client_id: ClientOrderId,
}

impl PlaceOrder {
    /// A plain limit order: good till cancelled, not post-only, no self-trade prevention
    /// and no client id (the `with_*` methods change those), as a benchmark or a replay test
    /// writes them by the thousand.
    pub fn limit(
        id: OrderId,
        account: AccountId,
        pair: PairId,
        side: Side,
        price: Price,
        amount: Amount,
    ) -> PlaceOrder {
        PlaceOrder {
            id,
            account,
            pair,
            side,
            kind: OrderKind::Limit {
                price,
                amount,
                tif: TimeInForce::Gtc,
                post_only: false,
            },
            stp: SelfTradePrevention::None,
            client_id: ClientOrderId::NONE,
        }
    }

    /// The same order with time in force `tif` (a limit order's; a market order is
    /// always immediate-or-cancel and stays as it is).
    pub fn with_tif(mut self, tif: TimeInForce) -> PlaceOrder {
        if let OrderKind::Limit { tif: t, .. } = &mut self.kind {
            *t = tif;
        }
        self
    }

    /// The same order with the client's id `client_id`.
    pub fn with_client_id(mut self, client_id: ClientOrderId) -> PlaceOrder {
        self.client_id = client_id;
        self
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_limit_order_and_its_variations() {
        let o = PlaceOrder::limit(
            OrderId(7),
            AccountId(1),
            PairId(2),
            Side::Sell,
            Price(100),
            Amount(3),
        );
        let gtc = OrderKind::Limit {
            price: Price(100),
            amount: Amount(3),
            tif: TimeInForce::Gtc,
            post_only: false,
        };
        assert_eq!(o.kind, gtc);
        assert_eq!(o.stp, SelfTradePrevention::None);
        assert_eq!(o.client_id, ClientOrderId::NONE);
        let ioc = o.clone().with_tif(TimeInForce::Ioc);
        assert!(matches!(
            ioc.kind,
            OrderKind::Limit {
                tif: TimeInForce::Ioc,
                ..
            }
        ));
        let named = o.with_client_id(ClientOrderId::parse("c7").expect("valid"));
        assert_eq!(named.client_id.as_str(), "c7");
        assert_eq!(named.kind, gtc);
        let market = PlaceOrder {
            kind: OrderKind::Market {
                size: MarketSize::Base(Amount(3)),
            },
            ..named
        };
        assert_eq!(market.clone().with_tif(TimeInForce::Fok), market);
    }

    /// `Command` as it was before the rare variants were boxed (same variant order).
    #[derive(Serialize)]
    #[allow(dead_code)]
    enum Unboxed {
        Place(()),
        Cancel(()),
        CancelAll(()),
        DepositRequested(RequestSpec),
        DepositCredited(()),
        WithdrawalRequested(()),
        ApproveRequest(()),
        RejectRequest(()),
        AddCurrency(CurrencySpec),
        AddPair(()),
        SetPairStatus(()),
        RegisterAccount {
            account: AccountId,
            name: String,
            client_id: String,
            secret_hash: String,
            scopes: u8,
        },
    }

    #[test]
    fn boxing_left_the_journal_encoding_unchanged() {
        let spec = RequestSpec {
            request: RequestId(7),
            account: AccountId(3),
            currency: CurrencyId(1),
            amount: 12_345,
            external_id: "ext-1".into(),
            destination: "iban".into(),
        };
        let enc = |v: &dyn erased::Enc| v.bytes();
        assert_eq!(
            enc(&Command::DepositRequested(Box::new(spec.clone()))),
            enc(&Unboxed::DepositRequested(spec))
        );
        let currency = CurrencySpec {
            code: "BTC".into(),
            display_name: "Bitcoin".into(),
            decimals: 8,
        };
        assert_eq!(
            enc(&Command::AddCurrency(Box::new(currency.clone()))),
            enc(&Unboxed::AddCurrency(currency))
        );
        let registration = AccountRegistration {
            account: AccountId(9),
            name: "n".into(),
            client_id: "c".into(),
            secret_hash: "h".into(),
            scopes: 3,
        };
        assert_eq!(
            enc(&Command::RegisterAccount(Box::new(registration))),
            enc(&Unboxed::RegisterAccount {
                account: AccountId(9),
                name: "n".into(),
                client_id: "c".into(),
                secret_hash: "h".into(),
                scopes: 3,
            })
        );
    }

    /// Journal records written before `SetRulesVersion` existed keep their meaning: postcard
    /// writes the variant index first, so new variants are added last and the indexes of
    /// the older ones never move.
    #[test]
    fn new_commands_come_last_in_the_journal_encoding() {
        let bytes = |c: &Command| postcard::to_stdvec(c).unwrap();
        assert_eq!(bytes(&Command::SetMaxOrdersPerBook { max: 5 }), [12, 5]);
        assert_eq!(bytes(&Command::SetRulesVersion { version: 2 }), [13, 2]);
        assert_eq!(
            postcard::from_bytes::<Command>(&[13, 2]).unwrap(),
            Command::SetRulesVersion { version: 2 }
        );
    }

    mod erased {
        pub trait Enc {
            fn bytes(&self) -> Vec<u8>;
        }
        impl<T: serde::Serialize> Enc for T {
            fn bytes(&self) -> Vec<u8> {
                postcard::to_stdvec(self).unwrap()
            }
        }
    }
}
