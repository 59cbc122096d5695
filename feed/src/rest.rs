//! The public market data routes (API.md "Market data") and the OpenAPI description.

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use engine::PairId;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::Feed;
use crate::candles::Interval;
use crate::path::PathSegment;
use crate::problem::Problem;
use crate::state::candle_view;
use crate::views::{BookView, CandleView, TickerView, TradeView, parse_time_ms};

/// Most levels per side or rows a list route returns.
pub const MAX_LIMIT: usize = 1000;

pub(crate) fn router(feed: Feed) -> Router {
    Router::new()
        .route("/v1/ws", get(crate::ws::ws_upgrade))
        .route("/v1/tickers", get(tickers_list))
        .route("/v1/pairs/{pair}/ticker", get(ticker_get))
        .route("/v1/pairs/{pair}/book", get(book_get))
        .route("/v1/pairs/{pair}/trades", get(trades_list))
        .route("/v1/pairs/{pair}/candles", get(candles_list))
        .with_state(feed)
}

fn pair_id(feed: &Feed, symbol: &str) -> Result<PairId, Problem> {
    feed.inner
        .state
        .read()
        .markets
        .pair_by_symbol(symbol)
        .map(|p| p.id)
        .ok_or_else(|| Problem::unknown_pair_in_path(symbol))
}

/// The query's parameters, or a 400 that names what is wrong with them in the words the
/// other routes use ("invalid query: limit: invalid digit found in string"), not axum's
/// ("Failed to deserialize query string: ...").
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    q.map(|Query(t)| t).map_err(|e| {
        let why = std::error::Error::source(&e).map_or_else(|| e.body_text(), |s| s.to_string());
        let why: String = why.chars().take(200).collect();
        Problem::validation(format!("invalid query: {why}"))
    })
}

fn limit(value: Option<usize>, default: usize, name: &str) -> Result<usize, Problem> {
    let v = value.unwrap_or(default);
    if v == 0 || v > MAX_LIMIT {
        return Err(Problem::validation(format!(
            "{name} must be between 1 and {MAX_LIMIT}"
        )));
    }
    Ok(v)
}

/// Every pair's ticker.
#[utoipa::path(get, path = "/v1/tickers", tag = "market data",
    responses((status = 200, description = "Tickers of all pairs", body = [TickerView])))]
pub(crate) async fn tickers_list(State(feed): State<Feed>) -> Json<Vec<TickerView>> {
    feed.touch_clock();
    let st = feed.inner.state.read();
    Json(
        st.markets
            .pairs()
            .iter()
            .filter_map(|p| st.ticker(p.id))
            .collect(),
    )
}

/// A pair's ticker: best bid and ask, last price, high, low and volumes over the rolling
/// last 24 hours (quote volume sums what buyers paid).
#[utoipa::path(get, path = "/v1/pairs/{pair}/ticker", tag = "market data",
    params(("pair" = String, Path, description = "BASE_QUOTE", example = "BTC_SEK")),
    responses((status = 200, body = TickerView),
              (status = 404, description = "Unknown pair", content_type = "application/problem+json")))]
pub(crate) async fn ticker_get(
    State(feed): State<Feed>,
    PathSegment(pair): PathSegment,
) -> Result<Json<TickerView>, Problem> {
    let id = pair_id(&feed, &pair)?;
    feed.touch_clock();
    let st = feed.inner.state.read();
    st.ticker(id)
        .map(Json)
        .ok_or_else(|| Problem::not_found("no such pair"))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct BookQuery {
    /// Levels per side, default 50, at most 1000.
    depth: Option<usize>,
}

/// The aggregated order book; `sequence` is the WebSocket book channel's seq.
#[utoipa::path(get, path = "/v1/pairs/{pair}/book", tag = "market data",
    params(("pair" = String, Path, description = "BASE_QUOTE"), BookQuery),
    responses((status = 200, body = BookView),
              (status = 400, description = "Bad depth", content_type = "application/problem+json"),
              (status = 404, description = "Unknown pair", content_type = "application/problem+json")))]
pub(crate) async fn book_get(
    State(feed): State<Feed>,
    PathSegment(pair): PathSegment,
    q: Result<Query<BookQuery>, QueryRejection>,
) -> Result<Json<BookView>, Problem> {
    let id = pair_id(&feed, &pair)?;
    let q = query(q)?;
    let depth = limit(q.depth, 50, "depth")?;
    feed.with_book(|st| st.book_view(id, depth))
        .map(Json)
        .ok_or_else(|| Problem::not_found("no such pair"))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct TradesQuery {
    /// Default 100, at most 1000.
    limit: Option<usize>,
}

/// Recent public trades, newest first; `side` is the taker's.
#[utoipa::path(get, path = "/v1/pairs/{pair}/trades", tag = "market data",
    params(("pair" = String, Path, description = "BASE_QUOTE"), TradesQuery),
    responses((status = 200, body = [TradeView]),
              (status = 400, description = "Bad limit", content_type = "application/problem+json"),
              (status = 404, description = "Unknown pair", content_type = "application/problem+json")))]
pub(crate) async fn trades_list(
    State(feed): State<Feed>,
    PathSegment(pair): PathSegment,
    q: Result<Query<TradesQuery>, QueryRejection>,
) -> Result<Json<Vec<TradeView>>, Problem> {
    let id = pair_id(&feed, &pair)?;
    let q = query(q)?;
    let n = limit(q.limit, 100, "limit")?;
    let st = feed.inner.state.read();
    st.trades(id, n)
        .map(Json)
        .ok_or_else(|| Problem::not_found("no such pair"))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CandlesQuery {
    /// 1m, 5m, 15m, 1h, 4h or 1d.
    interval: Option<String>,
    /// Inclusive open time lower bound (RFC 3339 or Unix ms).
    start: Option<String>,
    /// Exclusive open time upper bound (RFC 3339 or Unix ms).
    end: Option<String>,
    /// Default 100, at most 1000. With only `start`, the first candles from it; otherwise
    /// the latest before `end`.
    limit: Option<usize>,
}

/// Candles of intervals that had trades, oldest first.
#[utoipa::path(get, path = "/v1/pairs/{pair}/candles", tag = "market data",
    params(("pair" = String, Path, description = "BASE_QUOTE"), CandlesQuery),
    responses((status = 200, body = [CandleView]),
              (status = 400, description = "Bad interval, time or limit", content_type = "application/problem+json"),
              (status = 404, description = "Unknown pair", content_type = "application/problem+json")))]
pub(crate) async fn candles_list(
    State(feed): State<Feed>,
    PathSegment(pair): PathSegment,
    q: Result<Query<CandlesQuery>, QueryRejection>,
) -> Result<Json<Vec<CandleView>>, Problem> {
    let id = pair_id(&feed, &pair)?;
    let q = query(q)?;
    let iv = q
        .interval
        .as_deref()
        .ok_or_else(|| Problem::validation("interval is required (1m, 5m, 15m, 1h, 4h, 1d)"))?;
    let iv = Interval::parse(iv)
        .ok_or_else(|| Problem::validation("interval must be 1m, 5m, 15m, 1h, 4h or 1d"))?;
    let time = |v: &Option<String>, name: &str| -> Result<Option<i64>, Problem> {
        v.as_deref()
            .map(|s| {
                parse_time_ms(s)
                    .ok_or_else(|| Problem::validation(format!("{name} must be an RFC 3339 time")))
            })
            .transpose()
    };
    let start = time(&q.start, "start")?;
    let end = time(&q.end, "end")?;
    if let (Some(start), Some(end)) = (start, end)
        && start > end
    {
        return Err(Problem::validation("start must not be after end"));
    }
    let n = limit(q.limit, 100, "limit")?;
    let from_start = start.is_some() && end.is_none();
    let (entry, mut list, dropped_before) = feed
        .inner
        .state
        .read()
        .candles(id, iv, start, end, n)
        .ok_or_else(|| Problem::not_found("no such pair"))?;
    // Memory keeps the newest `candles_retained` of a series; older ones are in the store.
    // It answers alone unless the range reaches before its oldest candle and, for the
    // latest `n` before `end`, memory had fewer than `n` of them.
    let (start, end) = (start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX));
    if let Some(oldest) = dropped_before
        && start < oldest
        && (from_start || list.len() < n)
    {
        let store = feed.inner.store.clone();
        let older = tokio::task::spawn_blocking(move || {
            store
                .lock()
                .candles(id.0, iv, (start, end.min(oldest)), n, from_start)
        })
        .await
        .map_err(|_| Problem::internal())?
        .map_err(|e| {
            tracing::error!(error = %e, "market data store read failed");
            Problem::internal()
        })?;
        list.splice(0..0, older);
        if from_start {
            list.truncate(n);
        } else if list.len() > n {
            list.drain(..list.len() - n);
        }
    }
    Ok(Json(list.iter().map(|c| candle_view(&entry, c)).collect()))
}

#[derive(OpenApi)]
#[openapi(
    paths(tickers_list, ticker_get, book_get, trades_list, candles_list),
    components(schemas(TickerView, BookView, TradeView, CandleView))
)]
struct FeedDoc;

/// The OpenAPI paths of the feed's REST routes (the API merges them into its document).
pub fn openapi() -> utoipa::openapi::OpenApi {
    FeedDoc::openapi()
}
