//! The engine's logical state in canonical form: the snapshot format and the state hash.
//!
//! Canonical means independent of history: books are listed best price first and FIFO
//! within a level, balances by account then currency, requests by id. Two engines with
//! the same logical state encode to the same bytes, whatever arena slots or hash-table
//! layouts they ended up with, so a recovered engine can be compared to the live one
//! byte for byte ([`state_hash`]).

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineLimits, PendingRequest};
use crate::ids::{AccountId, CurrencyId, OrderId, PairId, RequestId};
use crate::ledger::Balance;
use crate::price::Price;
use crate::side::Side;
use crate::spec::{CurrencySpec, PairSpec};

/// Format version written in every encoding.
/// 2: the order id window (`order_ids_used`) is new state. 3: so is the request id window
/// (`request_ids_used`). 4: so is the bound on resting orders per book
/// (`max_orders_per_book`, set by a journaled command). 5: so is the matching rules version
/// (`rules_version`, set by a journaled command). An older encoding is refused, not read as
/// a default: recovery skips it (for a snapshot of this format, or the journal from its
/// start, which is right because every journal starts at the genesis rules).
pub const STATE_VERSION: u32 = 5;

/// A resting order in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestingOrderState {
    pub id: OrderId,
    pub account: AccountId,
    pub side: Side,
    pub price: Price,
    pub remaining: u64,
    pub held: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PairStateDto {
    spec: PairSpec,
    book_seq: u64,
    /// Bids best first (FIFO within a level), then asks best first.
    orders: Vec<RestingOrderState>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct EngineStateDto {
    version: u32,
    currencies: Vec<(CurrencySpec, u64, u64)>,
    pairs: Vec<PairStateDto>,
    balances: Vec<(AccountId, CurrencyId, u64, u64)>,
    requests: Vec<(RequestId, PendingRequest)>,
    next_trade_id: u64,
    max_order_id: u64,
    max_request_id: u64,
    /// The order id window ([`crate::id_window`]): which ids below `max_order_id` were
    /// used, as runs `(first, count)`, so a restored engine refuses the same duplicates as
    /// the live one.
    order_ids_used: Vec<(u64, u64)>,
    /// The request id window ([`crate::request_ids`]), as runs.
    request_ids_used: Vec<(u64, u64)>,
    /// [`EngineLimits::max_orders_per_book`]: state, not a setting, since
    /// [`crate::Command::SetMaxOrdersPerBook`] decides outcomes and is journaled.
    max_orders_per_book: u64,
    /// [`Engine::rules_version`]: the matching rules in force, set by the journaled
    /// [`crate::Command::SetRulesVersion`].
    rules_version: u32,
}

/// Why a state encoding could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state encoding is malformed: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("state version {0} is not supported (expected {STATE_VERSION})")]
    Version(u32),
    #[error("state is inconsistent: {0}")]
    Inconsistent(String),
}

/// Encodes the engine's logical state canonically.
pub fn encode(engine: &Engine) -> Vec<u8> {
    let mut pairs = Vec::new();
    for info in engine.pairs() {
        let book = engine.book(info.id).expect("listed pair has a book");
        let mut orders = Vec::with_capacity(book.len());
        for side in [Side::Buy, Side::Sell] {
            book.for_each_level(side, |level| {
                book.for_each_order_at(side, level.price, |o| {
                    orders.push(RestingOrderState {
                        id: o.id,
                        account: o.account,
                        side: o.side,
                        price: o.price,
                        remaining: o.remaining,
                        held: o.held,
                    })
                });
                true
            });
        }
        pairs.push(PairStateDto {
            spec: info.spec,
            book_seq: engine.book_seq(info.id),
            orders,
        });
    }
    let next_trade_id = engine.next_trade_id().0;
    let request_ids = engine.request_ids();
    let order_ids = engine.order_ids();
    let dto = EngineStateDto {
        version: STATE_VERSION,
        currencies: engine.currency_totals(),
        pairs,
        balances: engine
            .ledger()
            .non_zero()
            .map(|(a, c, b)| (a, c, b.available, b.held))
            .collect(),
        requests: engine.pending_requests(),
        next_trade_id,
        max_order_id: order_ids.hi(),
        max_request_id: request_ids.hi(),
        order_ids_used: order_ids.used_runs(),
        request_ids_used: request_ids.used_runs(),
        max_orders_per_book: engine.limits().max_orders_per_book as u64,
        rules_version: engine.rules_version(),
    };
    postcard::to_stdvec(&dto).expect("encoding to memory cannot fail")
}

/// Rebuilds an engine from [`encode`]'s output and checks its invariants. `limits` gives
/// the bounds that are settings; `max_orders_per_book` and the rules version are the
/// encoded state's.
pub fn decode(bytes: &[u8], mut limits: EngineLimits) -> Result<Engine, StateError> {
    // The version comes first and is checked first: an older encoding lacks fields and
    // would otherwise be reported as malformed rather than as the old format it is.
    let (version, _) = postcard::take_from_bytes::<u32>(bytes)?;
    if version != STATE_VERSION {
        return Err(StateError::Version(version));
    }
    let dto: EngineStateDto = postcard::from_bytes(bytes)?;
    limits.max_orders_per_book = usize::try_from(dto.max_orders_per_book)
        .ok()
        .filter(|m| *m <= crate::engine::MAX_ORDERS_PER_BOOK)
        .ok_or_else(|| {
            StateError::Inconsistent(format!(
                "max_orders_per_book {} out of range",
                dto.max_orders_per_book
            ))
        })?;
    if !(crate::RULES_VERSION_GENESIS..=crate::RULES_VERSION_CURRENT).contains(&dto.rules_version) {
        return Err(StateError::Inconsistent(format!(
            "rules version {} is unknown to this build (it knows {} to {})",
            dto.rules_version,
            crate::RULES_VERSION_GENESIS,
            crate::RULES_VERSION_CURRENT
        )));
    }
    let order_ids = crate::id_window::IdWindow::restore(dto.max_order_id, &dto.order_ids_used)
        .map_err(StateError::Inconsistent)?;
    let request_ids =
        crate::request_ids::RequestIds::restore(dto.max_request_id, &dto.request_ids_used)
            .map_err(StateError::Inconsistent)?;
    let mut engine = Engine::restore_parts(
        limits,
        dto.rules_version,
        dto.currencies,
        dto.next_trade_id,
        order_ids,
        request_ids,
    );
    for (i, pair) in dto.pairs.into_iter().enumerate() {
        let id = engine
            .restore_pair(pair.spec, pair.book_seq)
            .map_err(|r| StateError::Inconsistent(format!("pair {i}: {r:?}")))?;
        if id != PairId(i as u16) {
            return Err(StateError::Inconsistent(format!(
                "pair {i} restored as {id}"
            )));
        }
        for o in &pair.orders {
            if !o.price.is_valid() || o.remaining == 0 {
                return Err(StateError::Inconsistent(format!(
                    "order {} is invalid",
                    o.id
                )));
            }
            if !engine.order_ids().is_used(o.id) {
                return Err(StateError::Inconsistent(format!(
                    "resting order {} is not in the used order ids",
                    o.id
                )));
            }
            if engine.resting_order(o.id).is_some() {
                return Err(StateError::Inconsistent(format!(
                    "order {} appears twice",
                    o.id
                )));
            }
            engine.restore_order(id, o);
        }
    }
    for (account, currency, available, held) in dto.balances {
        if currency.0 as usize >= engine.currencies().count() {
            return Err(StateError::Inconsistent(format!(
                "balance in unknown currency {currency}"
            )));
        }
        engine
            .ledger_mut()
            .set(account, currency, Balance { available, held });
    }
    for (id, r) in dto.requests {
        if !engine.request_ids().is_used(id.0) {
            return Err(StateError::Inconsistent(format!(
                "pending request {id} is not in the used request ids"
            )));
        }
        engine.restore_request(id, r);
    }
    engine
        .check_invariants()
        .map_err(StateError::Inconsistent)?;
    Ok(engine)
}

/// FNV-1a 64 of the canonical encoding: equal hashes mean equal logical state.
pub fn state_hash(engine: &Engine) -> u64 {
    fnv1a(&encode(engine))
}

/// FNV-1a, 64 bits: stable across builds and platforms (unlike `DefaultHasher`).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Engine {
    /// See [`state_hash`].
    pub fn state_hash(&self) -> u64 {
        state_hash(self)
    }
}
