//! The JSON objects of the market data routes and channels (API.md), all strings.

use serde::Serialize;
use time::OffsetDateTime;
use time::macros::format_description;
use utoipa::ToSchema;

/// RFC 3339 UTC with milliseconds, from Unix nanoseconds.
pub fn rfc3339_ms(ts_ns: i64) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ns))
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_string())
}

/// Parses an RFC 3339 time (or Unix milliseconds) into Unix milliseconds.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    let t = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A pair's ticker. High, low and volumes cover the rolling last 24 hours; the quote volume
/// sums what buyers paid (each trade's value rounded up to the quote currency's minor unit).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TickerView {
    #[schema(example = "BTC_SEK")]
    pub pair: String,
    #[schema(example = "2026-11-22T10:15:00.123Z")]
    pub timestamp: String,
    pub last_price: Option<String>,
    pub best_bid: Option<String>,
    pub best_bid_amount: Option<String>,
    pub best_ask: Option<String>,
    pub best_ask_amount: Option<String>,
    pub high: Option<String>,
    pub low: Option<String>,
    pub base_volume: String,
    pub quote_volume: String,
}

/// An aggregated L2 book: `[price, amount]` levels, best first.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BookView {
    pub pair: String,
    /// The pair's book sequence, the same counter as the WebSocket `book:PAIR` channel.
    pub sequence: u64,
    pub timestamp: String,
    pub bids: Vec<[String; 2]>,
    pub asks: Vec<[String; 2]>,
}

/// A public trade; `side` is the taker's side.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TradeView {
    pub id: String,
    pub price: String,
    pub amount: String,
    #[schema(example = "buy")]
    pub side: &'static str,
    pub timestamp: String,
}

/// One candle; volumes as in the ticker.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CandleView {
    pub open_time: String,
    pub open: String,
    pub high: String,
    pub low: String,
    pub close: String,
    pub base_volume: String,
    pub quote_volume: String,
    pub trades: u64,
}

/// A data message: `{"channel","seq","data"}`.
#[derive(Serialize)]
pub(crate) struct DataMsg<'a, T: Serialize> {
    pub channel: &'a str,
    pub seq: u64,
    pub data: &'a T,
}

/// Book levels of a snapshot or an update.
#[derive(Serialize)]
pub(crate) struct BookData {
    pub bids: Vec<[String; 2]>,
    pub asks: Vec<[String; 2]>,
}

/// `{"channel","type","seq","checksum","data":{"bids","asks"}}`.
#[derive(Serialize)]
pub(crate) struct BookMsg<'a> {
    pub channel: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub seq: u64,
    pub checksum: u32,
    pub data: BookData,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_milliseconds() {
        assert_eq!(
            rfc3339_ms(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            parse_time_ms("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_time_ms("1700000000123"), Some(1_700_000_000_123));
        assert_eq!(parse_time_ms("yesterday"), None);
    }
}
