//! Orders and fills of the caller's account.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use engine::{
    Amount, ClientOrderId, Command, Event, MAX_PRICE_TICKS, MarketSize, OrderId, OrderKind, PairId,
    PlaceOrder, Price, RejectReason, SelfTradePrevention, Side, TimeInForce,
};
use feed::path::PathSegment;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{ORDERS, ORDERS_READ, Scoped};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppQuery, DecimalKind, Paged, decimal, page, parse_id};
use crate::json_out::{self, JsonBytes};
use crate::model::{FillJson, OrderJson, OrderRec, fill_json, order_json};
use crate::state::AppState;
use crate::store;

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SideIn {
    Buy,
    Sell,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TypeIn {
    Limit,
    Market,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
pub enum TifIn {
    #[serde(rename = "GTC")]
    Gtc,
    #[serde(rename = "IOC")]
    Ioc,
    #[serde(rename = "FOK")]
    Fok,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum StpIn {
    ExpireTaker,
    ExpireMaker,
    ExpireBoth,
    None,
}

/// `POST /v1/orders` body.
#[derive(Deserialize, Debug, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderCreate {
    pub pair: String,
    pub side: SideIn,
    #[serde(rename = "type")]
    pub kind: TypeIn,
    #[serde(default)]
    pub amount: Option<String>,
    #[serde(default)]
    pub quote_amount: Option<String>,
    #[serde(default)]
    pub price: Option<String>,
    #[serde(default)]
    pub time_in_force: Option<TifIn>,
    #[serde(default)]
    pub post_only: Option<bool>,
    #[serde(default)]
    pub self_trade_prevention: Option<StpIn>,
    pub client_id: String,
}

/// Validates the body against the pair and builds the engine order (without its id).
fn build(
    state: &AppState,
    account: engine::AccountId,
    b: &OrderCreate,
) -> ApiResult<(PairId, Side, OrderKind, SelfTradePrevention, ClientOrderId)> {
    let client_id =
        ClientOrderId::parse(&b.client_id).map_err(|e| ApiError::validation(e.to_string()))?;
    let m = state.model.markets.read();
    let pair = m
        .pair_by_symbol(&b.pair)
        .ok_or_else(|| ApiError::bad("UNKNOWN_PAIR", format!("unknown pair {}", b.pair)))?;
    let side = match b.side {
        SideIn::Buy => Side::Buy,
        SideIn::Sell => Side::Sell,
    };
    let stp = match b.self_trade_prevention {
        None | Some(StpIn::ExpireTaker) => SelfTradePrevention::ExpireTaker,
        Some(StpIn::ExpireMaker) => SelfTradePrevention::ExpireMaker,
        Some(StpIn::ExpireBoth) => SelfTradePrevention::ExpireBoth,
        Some(StpIn::None) => SelfTradePrevention::None,
    };
    let (pd, ad) = (pair.spec.price_decimals, pair.spec.amount_decimals);
    let min = pair.spec.min_amount.0;
    let lots = |text: &str| -> ApiResult<u64> {
        let v = decimal(
            "amount",
            text,
            ad,
            DecimalKind::Amount,
            // The engine's bound (it rejects more), so level totals cannot overflow.
            u128::from(engine::MAX_ORDER_LOTS),
        )?;
        if v < min {
            return Err(ApiError::bad(
                "AMOUNT_TOO_SMALL",
                "amount is below the pair's minimum",
            ));
        }
        Ok(v)
    };
    let kind = match b.kind {
        TypeIn::Limit => {
            if b.quote_amount.is_some() {
                return Err(ApiError::validation(
                    "quoteAmount applies to market orders only",
                ));
            }
            let price = b
                .price
                .as_deref()
                .ok_or_else(|| ApiError::validation("price is required for a limit order"))?;
            let amount = b
                .amount
                .as_deref()
                .ok_or_else(|| ApiError::validation("amount is required for a limit order"))?;
            let price = decimal(
                "price",
                price,
                pd,
                DecimalKind::Price,
                u128::from(MAX_PRICE_TICKS),
            )?;
            let amount = lots(amount)?;
            let tif = match b.time_in_force {
                None | Some(TifIn::Gtc) => TimeInForce::Gtc,
                Some(TifIn::Ioc) => TimeInForce::Ioc,
                Some(TifIn::Fok) => TimeInForce::Fok,
            };
            let post_only = b.post_only.unwrap_or(false);
            if post_only && tif != TimeInForce::Gtc {
                return Err(ApiError::validation("postOnly requires timeInForce GTC"));
            }
            OrderKind::Limit {
                price: Price(price),
                amount: Amount(amount),
                tif,
                post_only,
            }
        }
        TypeIn::Market => {
            if b.price.is_some() {
                return Err(ApiError::validation("a market order takes no price"));
            }
            if matches!(b.time_in_force, Some(TifIn::Gtc | TifIn::Fok)) {
                return Err(ApiError::validation("a market order is always IOC"));
            }
            if b.post_only == Some(true) {
                return Err(ApiError::validation("a market order cannot be post-only"));
            }
            let size = match (b.amount.as_deref(), b.quote_amount.as_deref()) {
                (Some(a), None) => MarketSize::Base(Amount(lots(a)?)),
                (None, Some(q)) => MarketSize::Quote(decimal(
                    "quoteAmount",
                    q,
                    pair.quote_decimals,
                    DecimalKind::Money,
                    1u128 << 62,
                )?),
                _ => {
                    return Err(ApiError::validation(
                        "a market order needs exactly one of amount and quoteAmount",
                    ));
                }
            };
            OrderKind::Market { size }
        }
    };
    if pair.spec.status == engine::PairStatus::Halted {
        return Err(ApiError::from_reject(RejectReason::PairHalted));
    }
    let _ = account;
    Ok((pair.id, side, kind, stp, client_id))
}

/// Places an order; 201 with the order after matching.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = OrderCreate,
    security(("bearer" = ["orders"])),
    responses((status = 201, body = OrderJson), (status = 400), (status = 401), (status = 403),
        (status = 409), (status = 422), (status = 503)))]
pub async fn orders_create(
    State(state): State<AppState>,
    Scoped(auth): Scoped<ORDERS>,
    AppJson(body): AppJson<OrderCreate>,
) -> ApiResult<(StatusCode, JsonBytes)> {
    let (pair, side, kind, stp, client_id) = build(&state, auth.account, &body)?;
    let account = auth.account.0;
    let reservation = match state.client_ids.reserve(
        account,
        client_id.as_str(),
        // Most keys are new: the in-memory index of used keys says so without SQLite, and
        // a used key stays used.
        || crate::state::may_be_used(&state.model.client_ids, account, client_id.as_str()),
        || {
            Ok(state
                .store
                .read(|c| store::order_id_by_client(c, account, client_id.as_str()))?)
        },
        || state.next_order_id(),
    )? {
        Ok(r) => r,
        Err(existing) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "DUPLICATE_CLIENT_ID",
                "an order with this clientId exists",
            )
            .with("orderId", existing.to_string()));
        }
    };
    // Only a GTC order can rest. It takes a place under the account's bound after its
    // clientId (a retry of a booked order is told DUPLICATE_CLIENT_ID with its id, even at
    // the bound), and holds it with the clientId until the listeners have counted it open.
    let reservation = match kind {
        OrderKind::Limit {
            tif: TimeInForce::Gtc,
            ..
        } => {
            let max = state.config.max_open_orders_per_account;
            let Some(slot) = state.model.open_counts.reserve(account, max) else {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "TOO_MANY_OPEN_ORDERS",
                    format!(
                        "the account has {max} open orders, the most it may hold: cancel some \
                         first"
                    ),
                )
                .with("maxOpenOrders", max));
            };
            reservation.holding(slot)
        }
        _ => reservation,
    };
    let id = reservation.id();
    let place = PlaceOrder {
        id: OrderId(id),
        account: auth.account,
        pair,
        side,
        kind,
        stp,
        client_id,
    };
    // The clientId is released once the pipeline has processed the order, even if this
    // handler is dropped before (the client hung up): used if the order was booked, free
    // again if it was refused.
    let committed = state
        .submit_reserved(Command::Place(place.clone()), reservation)
        .await?;
    let mut rec = OrderRec::new(&place, committed.ts_ns);
    for ev in &committed.events {
        if let Event::Rejected { order, reason, .. } = ev
            && order.0 == id
            && *reason != RejectReason::PostOnlyWouldTake
        {
            return Err(ApiError::from_reject(*reason));
        }
        rec.apply(ev, committed.ts_ns);
    }
    let m = state.model.markets.read();
    Ok((StatusCode::CREATED, json_out::order(&m, &rec)))
}

/// One order.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", security(("bearer" = ["orders:read"])),
    params(("id" = String, Path)), responses((status = 200, body = OrderJson), (status = 404)))]
pub async fn orders_get(
    State(state): State<AppState>,
    Scoped(auth): Scoped<{ ORDERS | ORDERS_READ }>,
    PathSegment(id): PathSegment,
) -> ApiResult<JsonBytes> {
    let id = parse_id(&id).ok_or_else(ApiError::order_not_found)?;
    let o = state
        .store
        .read(|c| store::order_get(c, auth.account.0, id))?
        .ok_or_else(ApiError::order_not_found)?;
    let m = state.model.markets.read();
    Ok(json_out::order(&m, &o))
}

/// One order by its client id.
#[utoipa::path(get, path = "/v1/orders/by-client-id/{clientId}", tag = "orders",
    security(("bearer" = ["orders:read"])), params(("clientId" = String, Path)),
    responses((status = 200, body = OrderJson), (status = 404)))]
pub async fn orders_get_by_client_id(
    State(state): State<AppState>,
    Scoped(auth): Scoped<{ ORDERS | ORDERS_READ }>,
    PathSegment(client_id): PathSegment,
) -> ApiResult<JsonBytes> {
    let o = state
        .store
        .read(|c| store::order_by_client(c, auth.account.0, &client_id))?
        .ok_or_else(ApiError::order_not_found)?;
    let m = state.model.markets.read();
    Ok(json_out::order(&m, &o))
}

/// Cancels one order.
#[utoipa::path(delete, path = "/v1/orders/{id}", tag = "orders", security(("bearer" = ["orders"])),
    params(("id" = String, Path)),
    responses((status = 200, body = OrderJson), (status = 404), (status = 409)))]
pub async fn orders_cancel(
    State(state): State<AppState>,
    Scoped(auth): Scoped<ORDERS>,
    PathSegment(id): PathSegment,
) -> ApiResult<JsonBytes> {
    let id = parse_id(&id).ok_or_else(ApiError::order_not_found)?;
    let account = auth.account.0;
    // The engine knows whether the order rests for this account: no store read first. A
    // refused cancel changes nothing; the store then tells unknown (404) from final (409).
    let committed = state
        .submit(Command::Cancel {
            account: auth.account,
            order: OrderId(id),
        })
        .await?;
    for ev in &committed.events {
        if let Event::CancelRejected { reason, .. } = ev {
            return match state.store.read(|c| store::order_get(c, account, id))? {
                None => Err(ApiError::order_not_found()),
                Some(_) => Err(ApiError::from_reject(*reason)),
            };
        }
    }
    let o = match state.model.take_cancelled(id) {
        Some(o) => o,
        None => state
            .store
            .read(|c| store::order_get(c, account, id))?
            .ok_or_else(ApiError::order_not_found)?,
    };
    let m = state.model.markets.read();
    Ok(json_out::order(&m, &o))
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct CancelAllQuery {
    pub pair: Option<String>,
}

#[derive(Serialize, ToSchema, Debug)]
pub struct Cancelled {
    pub cancelled: Vec<String>,
}

fn pair_param(state: &AppState, pair: Option<&str>) -> ApiResult<Option<PairId>> {
    match pair {
        None => Ok(None),
        Some(p) => state
            .model
            .markets
            .read()
            .pair_by_symbol(p)
            .map(|p| Some(p.id))
            .ok_or_else(|| ApiError::bad("UNKNOWN_PAIR", format!("unknown pair {p}"))),
    }
}

/// Cancels every open order of the account (on one pair).
#[utoipa::path(delete, path = "/v1/orders", tag = "orders", security(("bearer" = ["orders"])),
    params(("pair" = Option<String>, Query)), responses((status = 200, body = Cancelled)))]
pub async fn orders_cancel_all(
    State(state): State<AppState>,
    Scoped(auth): Scoped<ORDERS>,
    AppQuery(q): AppQuery<CancelAllQuery>,
) -> ApiResult<Json<Cancelled>> {
    let pair = pair_param(&state, q.pair.as_deref())?;
    let committed = state
        .submit(Command::CancelAll {
            account: auth.account,
            pair,
        })
        .await?;
    let cancelled = committed
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Done { order, .. } => Some(order.0.to_string()),
            _ => None,
        })
        .collect();
    Ok(Json(Cancelled { cancelled }))
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct OrdersQuery {
    pub pair: Option<String>,
    pub status: Option<String>,
    pub offset: Option<String>,
    pub limit: Option<String>,
}

/// The account's orders, newest first.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", security(("bearer" = ["orders:read"])),
    params(("pair" = Option<String>, Query), ("status" = Option<String>, Query),
        ("offset" = Option<u64>, Query), ("limit" = Option<u64>, Query)),
    responses((status = 200, description = "paginated Orders")))]
pub async fn orders_list(
    State(state): State<AppState>,
    Scoped(auth): Scoped<{ ORDERS | ORDERS_READ }>,
    AppQuery(q): AppQuery<OrdersQuery>,
) -> ApiResult<Json<Paged<OrderJson>>> {
    let pg = page(q.offset, q.limit)?;
    let pair = pair_param(&state, q.pair.as_deref())?;
    let mut filter = store::Filter::new();
    filter.eq("account", i64::from(auth.account.0));
    if let Some(p) = pair {
        filter.eq("pair", i64::from(p.0));
    }
    match q.status.as_deref() {
        None | Some("all") => {}
        Some("open") => {
            filter.raw("status IN (0, 1)");
        }
        Some("closed") => {
            filter.raw("status NOT IN (0, 1)");
        }
        Some(_) => return Err(ApiError::validation("status must be open, closed or all")),
    }
    let (total, rows) = state.store.read_list(|c| {
        let (total, mut rows) = store::paged(
            c,
            "orders",
            store::ORDER_COLS,
            &filter,
            "id DESC",
            pg.limit,
            pg.offset,
            store::order_from_row,
        )?;
        for o in &mut rows {
            o.fills = store::fills_of(c, o.id)?;
        }
        Ok((total, rows))
    })?;
    let m = state.model.markets.read();
    let data = rows.iter().map(|o| order_json(&m, o)).collect();
    Ok(Json(Paged::new(pg, total, data, "createdAt", "DESC")))
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FillsQuery {
    pub pair: Option<String>,
    pub offset: Option<String>,
    pub limit: Option<String>,
}

/// The account's fills, newest first.
#[utoipa::path(get, path = "/v1/fills", tag = "orders", security(("bearer" = ["orders:read"])),
    params(("pair" = Option<String>, Query), ("offset" = Option<u64>, Query), ("limit" = Option<u64>, Query)),
    responses((status = 200, description = "paginated Fills")))]
pub async fn fills_list(
    State(state): State<AppState>,
    Scoped(auth): Scoped<{ ORDERS | ORDERS_READ }>,
    AppQuery(q): AppQuery<FillsQuery>,
) -> ApiResult<Json<Paged<FillJson>>> {
    let pg = page(q.offset, q.limit)?;
    let pair = pair_param(&state, q.pair.as_deref())?;
    let mut filter = store::Filter::new();
    filter.eq("account", i64::from(auth.account.0));
    if let Some(p) = pair {
        filter.eq("pair", i64::from(p.0));
    }
    let (total, rows) = state.store.read_list(|c| {
        store::paged(
            c,
            "fills",
            store::FILL_COLS,
            &filter,
            "trade_id DESC, order_id DESC",
            pg.limit,
            pg.offset,
            store::fill_from_row,
        )
    })?;
    let m = state.model.markets.read();
    let data = rows.iter().map(|f| fill_json(&m, f)).collect();
    Ok(Json(Paged::new(pg, total, data, "timestamp", "DESC")))
}
