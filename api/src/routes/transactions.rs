//! Booked movements of the caller's account.

use axum::Json;
use axum::extract::State;
use feed::path::PathSegment;
use serde::Deserialize;

use crate::auth::{Scoped, TRANSACTIONS_READ};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppQuery, Paged, page};
use crate::model::{TransactionJson, TxType, tx_json};
use crate::state::AppState;
use crate::store;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TxQuery {
    pub currency: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub sort: Option<String>,
    pub order: Option<String>,
    pub offset: Option<String>,
    pub limit: Option<String>,
}

const DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

fn day_start_ns(s: &str, field: &str) -> ApiResult<i64> {
    let d = time::Date::parse(s, DATE)
        .map_err(|_| ApiError::validation(format!("{field} must be YYYY-MM-DD")))?;
    // Unix nanoseconds fit an i64 only for 1677..2262: a day beyond is clamped (every
    // booking lies inside), never wrapped (2999-01-01 wrapped to a negative start and
    // selected everything).
    let ns = d.midnight().assume_utc().unix_timestamp_nanos();
    Ok(i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX }))
}

const DAY_NS: i64 = 86_400_000_000_000;

/// The account's transactions with filters.
#[utoipa::path(get, path = "/v1/transactions", tag = "transactions",
    security(("bearer" = ["transactions:read"])),
    params(("currency" = Option<String>, Query), ("type" = Option<String>, Query),
        ("startDate" = Option<String>, Query), ("endDate" = Option<String>, Query),
        ("sort" = Option<String>, Query), ("order" = Option<String>, Query),
        ("offset" = Option<u64>, Query), ("limit" = Option<u64>, Query)),
    responses((status = 200, description = "paginated transactions")))]
pub async fn transactions_list(
    State(state): State<AppState>,
    Scoped(auth): Scoped<TRANSACTIONS_READ>,
    AppQuery(q): AppQuery<TxQuery>,
) -> ApiResult<Json<Paged<TransactionJson>>> {
    let pg = page(q.offset, q.limit)?;
    let mut filter = store::Filter::new();
    filter.eq("account", i64::from(auth.account.0));
    if let Some(c) = q.currency.as_deref() {
        let id = state
            .model
            .markets
            .read()
            .currency_by_code(c)
            .map(|c| c.id.0)
            .ok_or_else(|| ApiError::validation(format!("unknown currency {c}")))?;
        filter.eq("currency", i64::from(id));
    }
    if let Some(t) = q.kind.as_deref() {
        let t = TxType::parse(t).ok_or_else(|| {
            ApiError::validation(
                "type must be ORDER_EXECUTION, FEE_COLLECTION, TOPUP or WITHDRAWAL",
            )
        })?;
        filter.eq("type", t.code());
    }
    let start = q
        .start_date
        .as_deref()
        .map(|s| day_start_ns(s, "startDate"))
        .transpose()?;
    let end = q
        .end_date
        .as_deref()
        .map(|s| day_start_ns(s, "endDate"))
        .transpose()?;
    // Both dates are inclusive: one day is startDate = endDate; an end before the start is
    // a mistake, not an empty history.
    if let (Some(start), Some(end)) = (start, end)
        && start > end
    {
        return Err(ApiError::validation("startDate must not be after endDate"));
    }
    if let Some(start) = start {
        filter.cmp("ts_ns", ">=", start);
    }
    if let Some(end) = end {
        filter.cmp("ts_ns", "<", end.saturating_add(DAY_NS));
    }
    match q.sort.as_deref() {
        None | Some("bookingDate") => {}
        Some(_) => return Err(ApiError::validation("sort must be bookingDate")),
    }
    let order = match q.order.as_deref() {
        None => "DESC",
        Some(o) if o.eq_ignore_ascii_case("desc") => "DESC",
        Some(o) if o.eq_ignore_ascii_case("asc") => "ASC",
        Some(_) => return Err(ApiError::validation("order must be ASC or DESC")),
    };
    let order_by = if order == "ASC" {
        "ts_ns ASC, id ASC"
    } else {
        "ts_ns DESC, id DESC"
    };
    let (total, rows) = state.store.read_list(|c| {
        store::paged(
            c,
            "transactions",
            store::TX_COLS,
            &filter,
            order_by,
            pg.limit,
            pg.offset,
            store::tx_from_row,
        )
    })?;
    let m = state.model.markets.read();
    let data = rows.iter().map(|t| tx_json(&m, t)).collect();
    Ok(Json(Paged::new(pg, total, data, "bookingDate", order)))
}

/// One transaction.
#[utoipa::path(get, path = "/v1/transactions/{id}", tag = "transactions",
    security(("bearer" = ["transactions:read"])), params(("id" = String, Path)),
    responses((status = 200, body = TransactionJson), (status = 404)))]
pub async fn transactions_get(
    State(state): State<AppState>,
    Scoped(auth): Scoped<TRANSACTIONS_READ>,
    PathSegment(id): PathSegment,
) -> ApiResult<Json<TransactionJson>> {
    let nf = || ApiError::not_found("no such transaction");
    let id = crate::extract::parse_id(&id).ok_or_else(nf)?;
    let t = state
        .store
        .read(|c| {
            use rusqlite::OptionalExtension;
            c.query_row(
                &format!(
                    "SELECT {} FROM transactions WHERE id = ?1 AND account = ?2",
                    store::TX_COLS
                ),
                rusqlite::params![id as i64, auth.account.0],
                store::tx_from_row,
            )
            .optional()
        })?
        .ok_or_else(nf)?;
    let m = state.model.markets.read();
    Ok(Json(tx_json(&m, &t)))
}
