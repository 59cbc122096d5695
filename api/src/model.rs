//! Read-model records (orders, fills, requests, transactions) in integers, and their JSON
//! rendering as API.md defines it. The history listener and the handlers share
//! [`OrderRec::apply`], so a 201 and a later GET derive the order from the same events.

use engine::markets::{Markets, PairEntry};
use engine::{
    AccountId, DoneReason, Event, MarketSize, OrderKind, OrderStatus, PlaceOrder, RejectReason,
    RequestStatus, Side, TimeInForce,
};
use serde::Serialize;
use utoipa::ToSchema;

/// Unix nanoseconds as an RFC 3339 UTC string with milliseconds
/// (`2026-11-22T10:15:00.123Z`).
///
/// Written by hand (days to civil date, Howard Hinnant's algorithm): every order and fill in
/// a response has two of these, and a general formatter costs more than the rest of the
/// order's fields together. Years outside 0..=9999 (never a real timestamp) come out empty,
/// as the general formatter's error did.
pub fn ts(ns: i64) -> String {
    let mut out = Vec::with_capacity(24);
    push_ts(&mut out, ns);
    String::from_utf8(out).unwrap_or_default()
}

/// [`ts`] appended to `out` (nothing for a year outside 0..=9999).
pub fn push_ts(out: &mut Vec<u8>, ns: i64) {
    let ms = ns.div_euclid(1_000_000);
    let secs = ms.div_euclid(1_000);
    let millis = ms.rem_euclid(1_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Days since 1970-01-01 to (year, month, day).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return;
    }
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, sod / 3_600);
    put(14, 2, sod / 60 % 60);
    put(17, 2, sod % 60);
    put(20, 3, millis);
    out.extend_from_slice(&b);
}

/// `value` minor units as a decimal string with exactly `decimals` places, in one
/// allocation (the engine's general version builds three strings per amount, and an order
/// response has half a dozen amounts).
pub fn format_units(value: u128, decimals: u8) -> String {
    let mut out = Vec::with_capacity(24);
    push_units(&mut out, value, decimals);
    // Only ASCII digits and a point were written.
    String::from_utf8(out).unwrap_or_default()
}

/// [`format_units`] appended to `out`.
pub fn push_units(out: &mut Vec<u8>, value: u128, decimals: u8) {
    let d = usize::from(decimals);
    let mut digits = [0u8; 40];
    let mut n = 0;
    // Every real amount fits 64 bits, where a division is several times cheaper than in 128.
    match u64::try_from(value) {
        Ok(mut v) => loop {
            digits[n] = b'0' + (v % 10) as u8;
            v /= 10;
            n += 1;
            if v == 0 {
                break;
            }
        },
        Err(_) => {
            let mut v = value;
            loop {
                digits[n] = b'0' + (v % 10) as u8;
                v /= 10;
                n += 1;
                if v == 0 {
                    break;
                }
            }
        }
    }
    // At least one digit before the point.
    while n < d + 1 && n < digits.len() {
        digits[n] = b'0';
        n += 1;
    }
    out.reserve(n + 1);
    for i in (0..n).rev() {
        out.push(digits[i]);
        if i == d && d > 0 {
            out.push(b'.');
        }
    }
}

/// The wall clock as Unix time in nanoseconds: the engine's clock, so token expiries here
/// and in the feed compare against the same time.
pub use engine::pipeline::unix_now_ns as now_ns;

pub fn side_str(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

pub fn status_str(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::Open => "open",
        OrderStatus::PartiallyFilled => "partially_filled",
        OrderStatus::Filled => "filled",
        OrderStatus::Cancelled => "cancelled",
        OrderStatus::Expired => "expired",
        OrderStatus::Rejected => "rejected",
    }
}

pub fn status_code(s: OrderStatus) -> i64 {
    match s {
        OrderStatus::Open => 0,
        OrderStatus::PartiallyFilled => 1,
        OrderStatus::Filled => 2,
        OrderStatus::Cancelled => 3,
        OrderStatus::Expired => 4,
        OrderStatus::Rejected => 5,
    }
}

pub fn status_from_code(c: i64) -> OrderStatus {
    match c {
        0 => OrderStatus::Open,
        1 => OrderStatus::PartiallyFilled,
        2 => OrderStatus::Filled,
        3 => OrderStatus::Cancelled,
        4 => OrderStatus::Expired,
        _ => OrderStatus::Rejected,
    }
}

pub fn is_final(s: OrderStatus) -> bool {
    !matches!(s, OrderStatus::Open | OrderStatus::PartiallyFilled)
}

pub fn reject_reason_str(r: RejectReason) -> &'static str {
    match r {
        RejectReason::PostOnlyWouldTake => "POST_ONLY_WOULD_TAKE",
        RejectReason::InsufficientFunds => "INSUFFICIENT_FUNDS",
        RejectReason::PairHalted => "PAIR_HALTED",
        RejectReason::BookFull => "BOOK_FULL",
        _ => "REJECTED",
    }
}

pub fn done_reason_str(r: DoneReason) -> Option<&'static str> {
    match r {
        DoneReason::Filled | DoneReason::Cancelled => None,
        DoneReason::ImmediateOrCancel => Some("IMMEDIATE_OR_CANCEL"),
        DoneReason::FillOrKill => Some("FILL_OR_KILL"),
        DoneReason::NoLiquidity => Some("NO_LIQUIDITY"),
        DoneReason::SelfTradePrevention => Some("SELF_TRADE_PREVENTION"),
        DoneReason::InsufficientFunds => Some("INSUFFICIENT_FUNDS"),
    }
}

/// One side of one trade, as the owning account sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FillRec {
    pub trade_id: u64,
    pub order_id: u64,
    pub account: u32,
    pub pair: u16,
    pub side: Side,
    pub price: u64,
    /// Lots.
    pub amount: u64,
    /// Quote minor units paid (buy) or received before fee (sell).
    pub quote: u64,
    /// Fee in the received currency's minor units.
    pub fee: u64,
    pub maker: bool,
    pub ts_ns: i64,
}

/// An order as the history store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderRec {
    pub id: u64,
    pub account: u32,
    pub client_id: String,
    pub pair: u16,
    pub side: Side,
    pub market: bool,
    pub tif: TimeInForce,
    pub post_only: bool,
    pub price: Option<u64>,
    pub amount: Option<u64>,
    pub quote_amount: Option<u64>,
    pub filled: u64,
    pub filled_quote: u64,
    /// Sum of price ticks x lots over fills (for the average price).
    pub value_sum: u128,
    pub fee: u64,
    pub status: OrderStatus,
    pub reject_reason: Option<String>,
    pub created_ns: i64,
    pub updated_ns: i64,
    pub fills: Vec<FillRec>,
}

impl OrderRec {
    pub fn new(p: &PlaceOrder, ts_ns: i64) -> OrderRec {
        let (market, tif, post_only, price, amount, quote_amount) = match p.kind {
            OrderKind::Limit {
                price,
                amount,
                tif,
                post_only,
            } => (false, tif, post_only, Some(price.0), Some(amount.0), None),
            OrderKind::Market {
                size: MarketSize::Base(a),
            } => (true, TimeInForce::Ioc, false, None, Some(a.0), None),
            OrderKind::Market {
                size: MarketSize::Quote(q),
            } => (true, TimeInForce::Ioc, false, None, None, Some(q)),
        };
        OrderRec {
            id: p.id.0,
            account: p.account.0,
            client_id: p.client_id.as_str().to_string(),
            pair: p.pair.0,
            side: p.side,
            market,
            tif,
            post_only,
            price,
            amount,
            quote_amount,
            filled: 0,
            filled_quote: 0,
            value_sum: 0,
            fee: 0,
            status: OrderStatus::Open,
            reject_reason: None,
            created_ns: ts_ns,
            updated_ns: ts_ns,
            fills: Vec::new(),
        }
    }

    /// Applies one event if it concerns this order; returns the fill it produced.
    pub fn apply(&mut self, event: &Event, ts_ns: i64) -> Option<FillRec> {
        match *event {
            Event::Rejected { order, reason, .. } if order.0 == self.id => {
                self.status = OrderStatus::Rejected;
                self.reject_reason = Some(reject_reason_str(reason).to_string());
                self.updated_ns = ts_ns;
                None
            }
            Event::Trade(t) if t.buy_order().0 == self.id || t.sell_order().0 == self.id => {
                let buy = t.buy_order().0 == self.id;
                let (quote, fee) = if buy {
                    (t.buyer_paid, t.buyer_fee)
                } else {
                    (t.seller_received, t.seller_fee)
                };
                self.filled += t.amount.0;
                self.filled_quote += quote;
                self.value_sum += u128::from(t.price.0) * u128::from(t.amount.0);
                self.fee += fee;
                if self.status == OrderStatus::Open {
                    self.status = OrderStatus::PartiallyFilled;
                }
                self.updated_ns = ts_ns;
                let fill = FillRec {
                    trade_id: t.id.0,
                    order_id: self.id,
                    account: self.account,
                    pair: t.pair.0,
                    side: self.side,
                    price: t.price.0,
                    amount: t.amount.0,
                    quote,
                    fee,
                    maker: t.maker_order.0 == self.id,
                    ts_ns,
                };
                self.fills.push(fill.clone());
                Some(fill)
            }
            Event::Done { order, reason, .. } if order.0 == self.id => {
                self.status = reason.status();
                if self.status == OrderStatus::Expired {
                    self.reject_reason = done_reason_str(reason).map(str::to_string);
                }
                self.updated_ns = ts_ns;
                None
            }
            _ => None,
        }
    }

    pub fn is_final(&self) -> bool {
        is_final(self.status)
    }
}

/// Deposit or withdrawal request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRec {
    pub id: u64,
    pub external_id: String,
    pub account: u32,
    pub withdrawal: bool,
    pub currency: u16,
    pub amount: u64,
    pub status: RequestStatus,
    pub destination: Option<String>,
    pub reason: Option<String>,
    pub created_ns: i64,
    pub updated_ns: i64,
}

impl RequestRec {
    /// A request as its command creates it (`status` from the engine's `RequestUpdated`).
    pub fn created(
        spec: &engine::RequestSpec,
        withdrawal: bool,
        status: RequestStatus,
        ts_ns: i64,
    ) -> RequestRec {
        RequestRec {
            id: spec.request.0,
            external_id: spec.external_id.clone(),
            account: spec.account.0,
            withdrawal,
            currency: spec.currency.0,
            amount: spec.amount,
            status,
            destination: withdrawal.then(|| spec.destination.clone()),
            reason: None,
            created_ns: ts_ns,
            updated_ns: ts_ns,
        }
    }
}

pub fn request_status_code(s: RequestStatus) -> i64 {
    match s {
        RequestStatus::Pending => 0,
        RequestStatus::Completed => 1,
        RequestStatus::Rejected => 2,
    }
}

pub fn request_status_from(c: i64) -> RequestStatus {
    match c {
        0 => RequestStatus::Pending,
        1 => RequestStatus::Completed,
        _ => RequestStatus::Rejected,
    }
}

pub fn request_status_str(s: RequestStatus) -> &'static str {
    match s {
        RequestStatus::Pending => "pending",
        RequestStatus::Completed => "completed",
        RequestStatus::Rejected => "rejected",
    }
}

/// Transaction types (API.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxType {
    OrderExecution,
    FeeCollection,
    Topup,
    Withdrawal,
}

impl TxType {
    pub fn code(self) -> i64 {
        self as i64
    }
    pub fn from_code(c: i64) -> TxType {
        match c {
            0 => TxType::OrderExecution,
            1 => TxType::FeeCollection,
            2 => TxType::Topup,
            _ => TxType::Withdrawal,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            TxType::OrderExecution => "ORDER_EXECUTION",
            TxType::FeeCollection => "FEE_COLLECTION",
            TxType::Topup => "TOPUP",
            TxType::Withdrawal => "WITHDRAWAL",
        }
    }
    pub fn parse(s: &str) -> Option<TxType> {
        Some(match s {
            "ORDER_EXECUTION" => TxType::OrderExecution,
            "FEE_COLLECTION" => TxType::FeeCollection,
            "TOPUP" => TxType::Topup,
            "WITHDRAWAL" => TxType::Withdrawal,
            _ => return None,
        })
    }
}

/// One booked movement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxRec {
    pub id: i64,
    pub account: u32,
    pub currency: u16,
    pub kind: TxType,
    pub delta: i64,
    pub balance_after: i64,
    pub ts_ns: i64,
    pub refs: Vec<(String, &'static str)>,
}

// ----- JSON ---------------------------------------------------------------------------

#[derive(Serialize, ToSchema, Debug)]
#[serde(rename_all = "camelCase")]
pub struct FillJson {
    pub trade_id: String,
    pub order_id: String,
    pub pair: String,
    pub side: &'static str,
    pub price: String,
    pub amount: String,
    pub quote_amount: String,
    pub fee: String,
    pub fee_currency: String,
    pub liquidity: &'static str,
    pub timestamp: String,
}

#[derive(Serialize, ToSchema, Debug)]
#[serde(rename_all = "camelCase")]
pub struct OrderJson {
    pub id: String,
    pub client_id: String,
    pub pair: String,
    pub side: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time_in_force: &'static str,
    pub post_only: bool,
    pub price: Option<String>,
    pub amount: Option<String>,
    pub quote_amount: Option<String>,
    pub filled_amount: String,
    pub filled_quote_amount: String,
    pub average_price: Option<String>,
    pub fee: String,
    pub fee_currency: String,
    pub status: &'static str,
    pub reject_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub fills: Vec<FillJson>,
}

pub fn fee_currency<'a>(m: &'a Markets, p: &PairEntry, side: Side) -> (&'a str, u8) {
    let id = match side {
        Side::Buy => p.spec.base,
        Side::Sell => p.spec.quote,
    };
    m.currency(id)
        .map(|c| (c.spec.code.as_str(), c.spec.decimals))
        .unwrap_or(("", 0))
}

pub fn fill_json(m: &Markets, f: &FillRec) -> FillJson {
    let Some(p) = m.pair(engine::PairId(f.pair)) else {
        return FillJson {
            trade_id: f.trade_id.to_string(),
            order_id: f.order_id.to_string(),
            pair: String::new(),
            side: side_str(f.side),
            price: f.price.to_string(),
            amount: f.amount.to_string(),
            quote_amount: f.quote.to_string(),
            fee: f.fee.to_string(),
            fee_currency: String::new(),
            liquidity: if f.maker { "maker" } else { "taker" },
            timestamp: ts(f.ts_ns),
        };
    };
    let (fc, fd) = fee_currency(m, p, f.side);
    FillJson {
        trade_id: f.trade_id.to_string(),
        order_id: f.order_id.to_string(),
        pair: p.symbol.clone(),
        side: side_str(f.side),
        price: format_units(u128::from(f.price), p.spec.price_decimals),
        amount: format_units(u128::from(f.amount), p.spec.amount_decimals),
        quote_amount: format_units(u128::from(f.quote), p.quote_decimals),
        fee: format_units(u128::from(f.fee), fd),
        fee_currency: fc.to_string(),
        liquidity: if f.maker { "maker" } else { "taker" },
        timestamp: ts(f.ts_ns),
    }
}

pub fn tif_str(t: TimeInForce) -> &'static str {
    match t {
        TimeInForce::Gtc => "GTC",
        TimeInForce::Ioc => "IOC",
        TimeInForce::Fok => "FOK",
    }
}

pub fn order_json(m: &Markets, o: &OrderRec) -> OrderJson {
    let p = m.pair(engine::PairId(o.pair));
    let (pd, ad, qd, symbol) = p
        .map(|p| {
            (
                p.spec.price_decimals,
                p.spec.amount_decimals,
                p.quote_decimals,
                p.symbol.clone(),
            )
        })
        .unwrap_or((0, 0, 0, String::new()));
    let (fc, fd) = p.map(|p| fee_currency(m, p, o.side)).unwrap_or(("", 0));
    OrderJson {
        id: o.id.to_string(),
        client_id: o.client_id.clone(),
        pair: symbol,
        side: side_str(o.side),
        kind: if o.market { "market" } else { "limit" },
        time_in_force: tif_str(o.tif),
        post_only: o.post_only,
        price: o.price.map(|v| format_units(u128::from(v), pd)),
        amount: o.amount.map(|v| format_units(u128::from(v), ad)),
        quote_amount: o.quote_amount.map(|v| format_units(u128::from(v), qd)),
        filled_amount: format_units(u128::from(o.filled), ad),
        filled_quote_amount: format_units(u128::from(o.filled_quote), qd),
        average_price: (o.filled > 0).then(|| format_units(o.value_sum / u128::from(o.filled), pd)),
        fee: format_units(u128::from(o.fee), fd),
        fee_currency: fc.to_string(),
        status: status_str(o.status),
        reject_reason: o.reject_reason.clone(),
        created_at: ts(o.created_ns),
        updated_at: ts(o.updated_ns),
        fills: o.fills.iter().map(|f| fill_json(m, f)).collect(),
    }
}

#[derive(Serialize, ToSchema, Debug)]
#[serde(rename_all = "camelCase")]
pub struct RequestJson {
    pub id: String,
    pub external_id: String,
    pub user_id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub currency: String,
    pub amount: String,
    pub status: &'static str,
    pub destination: Option<String>,
    pub reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

pub fn request_json(m: &Markets, r: &RequestRec) -> RequestJson {
    let c = m.currency(engine::CurrencyId(r.currency));
    RequestJson {
        id: r.id.to_string(),
        external_id: r.external_id.clone(),
        user_id: r.account.to_string(),
        kind: if r.withdrawal {
            "withdrawal"
        } else {
            "deposit"
        },
        currency: c.map(|c| c.spec.code.clone()).unwrap_or_default(),
        amount: format_units(u128::from(r.amount), c.map_or(0, |c| c.spec.decimals)),
        status: request_status_str(r.status),
        destination: r.destination.clone(),
        reason: r.reason.clone(),
        created_at: ts(r.created_ns),
        updated_at: ts(r.updated_ns),
    }
}

#[derive(Serialize, ToSchema, Debug)]
pub struct DeltaJson {
    pub amount: String,
    pub currency: String,
}

#[derive(Serialize, ToSchema, Debug)]
pub struct ReferenceJson {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Serialize, ToSchema, Debug)]
#[serde(rename_all = "camelCase")]
pub struct TransactionJson {
    pub id: String,
    pub booking_date: String,
    pub value_date: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub delta: DeltaJson,
    pub balance_after: String,
    pub references: Vec<ReferenceJson>,
}

/// A signed amount of minor units as a decimal string.
pub fn format_signed(v: i64, decimals: u8) -> String {
    let s = format_units(u128::from(v.unsigned_abs()), decimals);
    if v < 0 { format!("-{s}") } else { s }
}

pub fn tx_json(m: &Markets, t: &TxRec) -> TransactionJson {
    let c = m.currency(engine::CurrencyId(t.currency));
    let d = c.map_or(0, |c| c.spec.decimals);
    TransactionJson {
        id: t.id.to_string(),
        booking_date: ts(t.ts_ns),
        value_date: ts(t.ts_ns),
        kind: t.kind.as_str(),
        delta: DeltaJson {
            amount: format_signed(t.delta, d),
            currency: c.map(|c| c.spec.code.clone()).unwrap_or_default(),
        },
        balance_after: format_signed(t.balance_after, d),
        references: t
            .refs
            .iter()
            .map(|(id, kind)| ReferenceJson {
                id: id.clone(),
                kind,
            })
            .collect(),
    }
}

#[derive(Serialize, ToSchema, Debug)]
#[serde(rename_all = "camelCase")]
pub struct CurrencyJson {
    pub currency: String,
    pub minor_amount_decimals: u8,
    pub display_name: String,
    pub status: &'static str,
}

#[derive(Serialize, ToSchema, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PairJson {
    pub pair: String,
    pub base: String,
    pub quote: String,
    pub price_decimals: u8,
    pub amount_decimals: u8,
    pub min_amount: String,
    pub maker_fee_rate: String,
    pub taker_fee_rate: String,
    pub status: &'static str,
}

/// Parts per million as a normalized decimal string (`1000` -> `"0.001"`).
pub fn ppm_str(ppm: u32) -> String {
    rust_decimal::Decimal::new(i64::from(ppm), 6)
        .normalize()
        .to_string()
}

pub fn pair_json(m: &Markets, p: &PairEntry) -> PairJson {
    let code = |id| {
        m.currency(id)
            .map(|c| c.spec.code.clone())
            .unwrap_or_default()
    };
    PairJson {
        pair: p.symbol.clone(),
        base: code(p.spec.base),
        quote: code(p.spec.quote),
        price_decimals: p.spec.price_decimals,
        amount_decimals: p.spec.amount_decimals,
        min_amount: format_units(u128::from(p.spec.min_amount.0), p.spec.amount_decimals),
        maker_fee_rate: ppm_str(p.spec.maker_fee_ppm),
        taker_fee_rate: ppm_str(p.spec.taker_fee_ppm),
        status: match p.spec.status {
            engine::PairStatus::Active => "active",
            engine::PairStatus::Halted => "halted",
        },
    }
}

#[derive(Serialize, ToSchema, Debug)]
pub struct BalanceJson {
    pub currency: String,
    pub available: String,
    pub held: String,
    pub total: String,
}

pub fn balance_json(m: &Markets, currency: u16, b: engine::Balance) -> BalanceJson {
    let c = m.currency(engine::CurrencyId(currency));
    let d = c.map_or(0, |c| c.spec.decimals);
    BalanceJson {
        currency: c.map(|c| c.spec.code.clone()).unwrap_or_default(),
        available: format_units(u128::from(b.available), d),
        held: format_units(u128::from(b.held), d),
        total: format_units(u128::from(b.total()), d),
    }
}

/// The account a fill, order or request belongs to.
pub fn account(id: u32) -> AccountId {
    AccountId(id)
}

#[cfg(test)]
mod fast_format_tests {
    use super::*;

    #[test]
    fn timestamps_match_the_general_formatter() {
        let general = |ns: i64| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
                .ok()
                .and_then(|t| {
                    t.format(time::macros::format_description!(
                        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
                    ))
                    .ok()
                })
                .unwrap_or_default()
        };
        let mut ns: i64 = 0;
        for step in [
            1,
            999_999,
            1_000_000,
            86_399_999_999_999,
            31_556_952_123_456_789,
        ] {
            for _ in 0..200 {
                assert_eq!(ts(ns), general(ns), "{ns}");
                ns = ns.wrapping_add(step);
            }
        }
        for ns in [
            0,
            951_782_400_000_000_000,
            1_795_000_000_123_000_000,
            4_107_542_399_999_999_999,
        ] {
            assert_eq!(ts(ns), general(ns), "{ns}");
        }
        assert_eq!(ts(1_795_350_900_123_456_789), "2026-11-22T12:35:00.123Z");
    }

    #[test]
    fn units_match_the_engine() {
        for v in [
            0u128,
            1,
            9,
            10,
            99,
            100,
            12_345,
            100_000_000,
            u128::from(u64::MAX),
            u128::MAX,
        ] {
            for d in [0u8, 1, 2, 6, 8, 18] {
                assert_eq!(
                    format_units(v, d),
                    engine::units::format_units(v, d),
                    "{v} {d}"
                );
            }
        }
    }
}
