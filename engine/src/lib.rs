//! Bourse's synchronous core.
//!
//! - [`Engine`]: every pair's order book and the ledger; a deterministic state machine fed
//!   with [`Command`]s that reports [`Event`]s. No clock, no I/O, no allocation per order.
//! - [`state`]: the canonical encoding used for snapshots and the state hash.
//!
//! Layering: the API decides ids and parses decimals; the pipeline sequences, journals and
//! runs commands on one engine thread; the engine decides. Nothing here knows about JSON,
//! HTTP or tokio.

pub mod book;
pub mod client_id;
pub mod command;
pub mod engine;
pub mod event;
pub mod id_hash;
pub mod id_window;
pub mod ids;
pub mod ledger;
#[cfg(any(test, feature = "test-support"))]
pub mod log_capture;
pub mod markets;
pub mod money;
pub mod pipeline;
pub mod price;
pub mod price_index;
pub mod reject;
pub mod request_ids;
pub mod side;
pub mod spec;
pub mod state;
pub mod units;

pub use client_id::ClientOrderId;
pub use command::{AccountRegistration, Command, MarketSize, OrderKind, PlaceOrder, RequestSpec};
pub use engine::{
    CurrencyAudit, Engine, EngineLimits, MAX_ORDERS_PER_BOOK, PendingRequest,
    RULES_VERSION_CURRENT, RULES_VERSION_GENESIS, RequestKind,
};
pub use event::{DoneReason, Event, OrderStatus, RequestStatus, Trade};
pub use ids::{AccountId, CurrencyId, OrderId, PairId, RequestId, TradeId};
pub use ledger::Balance;
pub use price::{Amount, MAX_ORDER_LOTS, MAX_PRICE_TICKS, Price};
pub use reject::RejectReason;
pub use side::{SelfTradePrevention, Side, TimeInForce};
pub use spec::{CurrencySpec, PairInfo, PairScale, PairSpec, PairStatus};
