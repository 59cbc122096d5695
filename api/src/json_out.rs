//! Order JSON written straight into bytes, for the single-order responses (create, get,
//! cancel).
//!
//! `POST /v1/orders` is the API's hot path, and rendering its 201 through
//! [`crate::model::order_json`] and serde_json built a dozen short strings (ids, amounts,
//! timestamps) only to copy them again while scanning each for characters to escape: about
//! a tenth of the request's time on the tokio workers. Here every field is appended to one
//! buffer as it is formatted. The output is byte for byte what serde_json writes for
//! [`crate::model::OrderJson`] (the tests compare the two over generated orders), which
//! stays the documented schema and serves the lists.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use engine::Side;
use engine::markets::Markets;

use crate::model::{
    FillRec, OrderRec, fee_currency, push_ts, push_units, side_str, status_str, tif_str,
};

/// A ready JSON body (`application/json`).
#[derive(Debug)]
pub struct JsonBytes(pub Vec<u8>);

impl IntoResponse for JsonBytes {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

/// The order as API.md's order object.
pub fn order(m: &Markets, o: &OrderRec) -> JsonBytes {
    let mut out = Vec::with_capacity(512 + 320 * o.fills.len());
    write_order(&mut out, m, o);
    JsonBytes(out)
}

/// Appends `s` as a JSON string (quotes and escapes as serde_json writes them).
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `"key":` (keys are plain ASCII).
fn push_key(out: &mut Vec<u8>, first: bool, key: &str) {
    if !first {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn push_units_str(out: &mut Vec<u8>, value: u128, decimals: u8) {
    out.push(b'"');
    push_units(out, value, decimals);
    out.push(b'"');
}

fn push_opt_units(out: &mut Vec<u8>, value: Option<u128>, decimals: u8) {
    match value {
        Some(v) => push_units_str(out, v, decimals),
        None => out.extend_from_slice(b"null"),
    }
}

fn push_id(out: &mut Vec<u8>, id: u64) {
    out.push(b'"');
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    out.push(b'"');
}

fn push_ts_str(out: &mut Vec<u8>, ns: i64) {
    out.push(b'"');
    push_ts(out, ns);
    out.push(b'"');
}

/// What rendering an order or fill needs of its pair: price, amount and quote decimals, the
/// symbol, and the fee currency's code and decimals (for the side). A pair never listed
/// gives zeros and empty names: plain integers, as `model::order_json` renders it.
struct PairFigures<'a> {
    pd: u8,
    ad: u8,
    qd: u8,
    symbol: &'a str,
    fc: &'a str,
    fd: u8,
}

fn figures(m: &Markets, pair: u16, side: Side) -> PairFigures<'_> {
    match m.pair(engine::PairId(pair)) {
        Some(p) => {
            let (fc, fd) = fee_currency(m, p, side);
            PairFigures {
                pd: p.spec.price_decimals,
                ad: p.spec.amount_decimals,
                qd: p.quote_decimals,
                symbol: p.symbol.as_str(),
                fc,
                fd,
            }
        }
        None => PairFigures {
            pd: 0,
            ad: 0,
            qd: 0,
            symbol: "",
            fc: "",
            fd: 0,
        },
    }
}

fn write_order(out: &mut Vec<u8>, m: &Markets, o: &OrderRec) {
    let pf = figures(m, o.pair, o.side);
    out.push(b'{');
    push_key(out, true, "id");
    push_id(out, o.id);
    push_key(out, false, "clientId");
    push_str(out, &o.client_id);
    push_key(out, false, "pair");
    push_str(out, pf.symbol);
    push_key(out, false, "side");
    push_str(out, side_str(o.side));
    push_key(out, false, "type");
    push_str(out, if o.market { "market" } else { "limit" });
    push_key(out, false, "timeInForce");
    push_str(out, tif_str(o.tif));
    push_key(out, false, "postOnly");
    out.extend_from_slice(if o.post_only { b"true" } else { b"false" });
    push_key(out, false, "price");
    push_opt_units(out, o.price.map(u128::from), pf.pd);
    push_key(out, false, "amount");
    push_opt_units(out, o.amount.map(u128::from), pf.ad);
    push_key(out, false, "quoteAmount");
    push_opt_units(out, o.quote_amount.map(u128::from), pf.qd);
    push_key(out, false, "filledAmount");
    push_units_str(out, u128::from(o.filled), pf.ad);
    push_key(out, false, "filledQuoteAmount");
    push_units_str(out, u128::from(o.filled_quote), pf.qd);
    push_key(out, false, "averagePrice");
    push_opt_units(
        out,
        (o.filled > 0).then(|| o.value_sum / u128::from(o.filled)),
        pf.pd,
    );
    push_key(out, false, "fee");
    push_units_str(out, u128::from(o.fee), pf.fd);
    push_key(out, false, "feeCurrency");
    push_str(out, pf.fc);
    push_key(out, false, "status");
    push_str(out, status_str(o.status));
    push_key(out, false, "rejectReason");
    match &o.reject_reason {
        Some(r) => push_str(out, r),
        None => out.extend_from_slice(b"null"),
    }
    push_key(out, false, "createdAt");
    push_ts_str(out, o.created_ns);
    push_key(out, false, "updatedAt");
    push_ts_str(out, o.updated_ns);
    push_key(out, false, "fills");
    out.push(b'[');
    for (i, f) in o.fills.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_fill(out, m, f);
    }
    out.extend_from_slice(b"]}");
}

fn write_fill(out: &mut Vec<u8>, m: &Markets, f: &FillRec) {
    let pf = figures(m, f.pair, f.side);
    out.push(b'{');
    push_key(out, true, "tradeId");
    push_id(out, f.trade_id);
    push_key(out, false, "orderId");
    push_id(out, f.order_id);
    push_key(out, false, "pair");
    push_str(out, pf.symbol);
    push_key(out, false, "side");
    push_str(out, side_str(f.side));
    push_key(out, false, "price");
    push_units_str(out, u128::from(f.price), pf.pd);
    push_key(out, false, "amount");
    push_units_str(out, u128::from(f.amount), pf.ad);
    push_key(out, false, "quoteAmount");
    push_units_str(out, u128::from(f.quote), pf.qd);
    push_key(out, false, "fee");
    push_units_str(out, u128::from(f.fee), pf.fd);
    push_key(out, false, "feeCurrency");
    push_str(out, pf.fc);
    push_key(out, false, "liquidity");
    push_str(out, if f.maker { "maker" } else { "taker" });
    push_key(out, false, "timestamp");
    push_ts_str(out, f.ts_ns);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FillRec, OrderRec, order_json};
    use engine::{OrderStatus, Side, TimeInForce};
    use proptest::prelude::*;

    /// The default currencies and pairs, as `bourse serve` lists them on an empty data dir.
    fn markets() -> Markets {
        use engine::{Command, CurrencySpec, Engine, EngineLimits};
        let config = crate::config::Config::default();
        let mut engine = Engine::new(EngineLimits::default());
        let mut events = Vec::new();
        for c in &config.currencies {
            engine.apply(
                &Command::AddCurrency(Box::new(CurrencySpec {
                    code: c.code.clone(),
                    display_name: c.display_name.clone(),
                    decimals: c.decimals,
                })),
                &mut events,
            );
        }
        for p in &config.pairs {
            let spec = p
                .spec(&Markets::from_engine(&engine))
                .expect("the default pairs are valid");
            engine.apply(&Command::AddPair(spec), &mut events);
        }
        let m = Markets::from_engine(&engine);
        assert_eq!(m.pairs().len(), config.pairs.len());
        m
    }

    fn fill(pair: u16, seed: u64) -> FillRec {
        FillRec {
            trade_id: seed,
            order_id: seed / 3,
            account: 7,
            pair,
            side: if seed.is_multiple_of(2) {
                Side::Buy
            } else {
                Side::Sell
            },
            price: seed % 1_000_000_007,
            amount: seed % 99_991,
            quote: seed / 5,
            fee: seed % 1_013,
            maker: seed.is_multiple_of(3),
            ts_ns: (seed % 4_000_000_000_000_000_000) as i64,
        }
    }

    prop_compose! {
        fn order_rec()(
            id in any::<u64>(),
            client_id in "[A-Za-z0-9_-]{1,36}|\"\\\\\n\t\u{1}é",
            pair in 0u16..6,
            buy in any::<bool>(),
            market in any::<bool>(),
            tif in 0u8..3,
            post_only in any::<bool>(),
            price in proptest::option::of(any::<u64>()),
            amount in proptest::option::of(any::<u64>()),
            quote_amount in proptest::option::of(any::<u64>()),
            filled in prop_oneof![Just(0u64), any::<u64>()],
            filled_quote in any::<u64>(),
            value_sum in any::<u128>(),
            fee in any::<u64>(),
            status in 0i64..6,
            reject in proptest::option::of("[A-Z_]{3,20}"),
            created in any::<i64>(),
            updated in 0i64..4_102_444_800_000_000_000,
            fills in proptest::collection::vec(any::<u64>(), 0..4),
        ) -> OrderRec {
            OrderRec {
                id,
                account: 7,
                client_id,
                pair,
                side: if buy { Side::Buy } else { Side::Sell },
                market,
                tif: [TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok][usize::from(tif)],
                post_only,
                price,
                amount,
                quote_amount,
                filled,
                filled_quote,
                value_sum,
                fee,
                status: crate::model::status_from_code(status),
                reject_reason: reject,
                created_ns: created,
                updated_ns: updated,
                fills: fills.into_iter().map(|s| fill(pair, s)).collect(),
            }
        }
    }

    proptest! {
        /// The bytes are exactly serde_json's rendering of `OrderJson`, pairs known and
        /// unknown, every status, escapes, empty and full fill lists, extreme timestamps.
        #[test]
        fn matches_serde_json_of_order_json(o in order_rec()) {
            let m = markets();
            let expected = serde_json::to_vec(&order_json(&m, &o)).unwrap();
            prop_assert_eq!(
                String::from_utf8(order(&m, &o).0).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }

    fn sample() -> OrderRec {
        OrderRec {
            id: 42,
            account: 1,
            client_id: "c-1".into(),
            pair: 0,
            side: Side::Buy,
            market: false,
            tif: TimeInForce::Gtc,
            post_only: false,
            price: Some(50_000_000),
            amount: Some(10_000),
            quote_amount: None,
            filled: 0,
            filled_quote: 0,
            value_sum: 0,
            fee: 0,
            status: OrderStatus::Open,
            reject_reason: None,
            created_ns: 1_764_000_000_123_000_000,
            updated_ns: 1_764_000_000_123_000_000,
            fills: Vec::new(),
        }
    }

    #[test]
    fn an_open_limit_order_renders_as_the_api_shows_it() {
        let m = markets();
        let o = sample();
        let v: serde_json::Value = serde_json::from_slice(&order(&m, &o).0).unwrap();
        assert_eq!(v["id"], "42");
        assert_eq!(v["clientId"], "c-1");
        assert_eq!(v["status"], "open");
        assert_eq!(v["averagePrice"], serde_json::Value::Null);
        assert_eq!(v["createdAt"], "2025-11-24T16:00:00.123Z");
        assert_eq!(v["fills"], serde_json::json!([]));
    }
}
