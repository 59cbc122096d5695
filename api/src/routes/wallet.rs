//! Wallet: balances, deposits, withdrawals and the account's requests.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use engine::{AccountId, Command, Event, RequestId, RequestSpec};
use feed::path::PathSegment;
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Scoped, WALLET, WALLET_READ};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppQuery, DecimalKind, PageQuery, Paged, decimal, page, parse_id};
use crate::model::{BalanceJson, RequestJson, RequestRec, balance_json, request_json, ts};
use crate::state::AppState;
use crate::store;

#[derive(Serialize, ToSchema, Debug)]
#[serde(rename_all = "camelCase")]
pub struct WalletJson {
    pub balances: Vec<BalanceJson>,
    pub created_at: String,
}

/// The wallet of `account`: every currency listed.
pub fn wallet_of(state: &AppState, account: u32) -> ApiResult<WalletJson> {
    let created: Option<i64> = state.store.read(|c| {
        c.query_row(
            "SELECT created_ns FROM users WHERE id = ?1",
            [account],
            |r| r.get(0),
        )
        .optional()
    })?;
    let Some(created) = created else {
        return Err(ApiError::not_found("no such user"));
    };
    let m = state.model.markets.read();
    let b = state.model.balances.read();
    let balances = m
        .currencies()
        .iter()
        .map(|c| {
            balance_json(
                &m,
                c.id.0,
                b.get(&(account, c.id.0)).copied().unwrap_or_default(),
            )
        })
        .collect();
    Ok(WalletJson {
        balances,
        created_at: ts(created),
    })
}

/// The caller's balances.
#[utoipa::path(get, path = "/v1/wallet", tag = "wallet", security(("bearer" = ["wallet:read"])),
    responses((status = 200, body = WalletJson)))]
pub async fn wallet_get(
    State(state): State<AppState>,
    Scoped(auth): Scoped<{ WALLET | WALLET_READ }>,
) -> ApiResult<Json<WalletJson>> {
    Ok(Json(wallet_of(&state, auth.account.0)?))
}

#[derive(Deserialize, Debug, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DepositCreate {
    pub currency: String,
    pub amount: String,
    pub external_id: String,
}

#[derive(Deserialize, Debug, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WithdrawalCreate {
    pub currency: String,
    pub amount: String,
    pub external_id: String,
    pub destination: String,
}

fn check_external_id(s: &str) -> ApiResult<()> {
    if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::validation(
            "externalId must be 1 to 128 printable ASCII characters",
        ));
    }
    Ok(())
}

/// The kind of money request to submit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Deposit,
    Credit,
    Withdrawal,
}

/// Validates, reserves the external id, submits, and returns the stored request.
pub async fn request_create(
    state: &AppState,
    account: AccountId,
    currency: &str,
    amount: &str,
    external_id: &str,
    destination: Option<&str>,
    kind: RequestKind,
) -> ApiResult<RequestJson> {
    check_external_id(external_id)?;
    let (currency_id, decimals) = {
        let m = state.model.markets.read();
        let c = m
            .currency_by_code(currency)
            .ok_or_else(|| ApiError::validation(format!("unknown currency {currency}")))?;
        (c.id, c.spec.decimals)
    };
    let amount = decimal("amount", amount, decimals, DecimalKind::Money, 1u128 << 62)?;
    let destination = match (kind, destination) {
        (RequestKind::Withdrawal, Some(d)) => {
            crate::extract::text_field("destination", d, 1, 256)?;
            d.to_string()
        }
        _ => String::new(),
    };
    let a = account.0;
    let rx = {
        // Request ids reach the engine in increasing order: assign and submit together.
        let _order = state.request_lock.lock().await;
        let reservation = match state.external_ids.reserve(
            a,
            external_id,
            // Most keys are new: the in-memory index of used keys says so without SQLite.
            || crate::state::may_be_used(&state.model.external_ids, a, external_id),
            || {
                Ok(state
                    .store
                    .read(|c| store::request_id_by_external(c, a, external_id))?)
            },
            || state.next_request_id(),
        )? {
            Ok(r) => r,
            Err(existing) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "DUPLICATE_EXTERNAL_ID",
                    "a request with this externalId exists",
                )
                .with("existingId", existing.to_string()));
            }
        };
        let id = reservation.id();
        let spec = RequestSpec {
            request: RequestId(id),
            account,
            currency: currency_id,
            amount,
            external_id: external_id.to_string(),
            destination,
        };
        let reply_spec = spec.clone();
        let command = match kind {
            RequestKind::Deposit if state.config.deposit_auto_approve => {
                Command::DepositCredited(Box::new(spec))
            }
            RequestKind::Deposit => Command::DepositRequested(Box::new(spec)),
            RequestKind::Credit => Command::DepositCredited(Box::new(spec)),
            RequestKind::Withdrawal => Command::WithdrawalRequested(Box::new(spec)),
        };
        // The externalId is released once the pipeline has processed the request, even if
        // this handler is dropped before (the client hung up): used if the request was
        // stored, free again if it was refused.
        (
            state.submit_start_reserved(command, reservation)?,
            id,
            reply_spec,
        )
    };
    let (rx, id, spec) = rx;
    let committed = rx
        .await
        .map_err(|_| ApiError::unavailable("the engine stopped"))?;
    for ev in &committed.events {
        if let Event::RequestRefused { reason, .. } = ev {
            return Err(ApiError::from_reject(*reason));
        }
    }
    // The reply is built from the outcome, as an order's is: no wait for the history store.
    let status = committed.events.iter().find_map(|ev| match ev {
        Event::RequestUpdated {
            request, status, ..
        } if request.0 == id => Some(*status),
        _ => None,
    });
    let rec = match status {
        Some(status) => RequestRec::created(
            &spec,
            kind == RequestKind::Withdrawal,
            status,
            committed.ts_ns,
        ),
        None => state
            .store
            .read(|c| store::request_get(c, id))?
            .ok_or_else(ApiError::internal)?,
    };
    let m = state.model.markets.read();
    Ok(request_json(&m, &rec))
}

/// Announces a deposit.
#[utoipa::path(post, path = "/v1/wallet/deposits", tag = "wallet", request_body = DepositCreate,
    security(("bearer" = ["wallet"])),
    responses((status = 201, body = RequestJson), (status = 400), (status = 409)))]
pub async fn deposits_create(
    State(state): State<AppState>,
    Scoped(auth): Scoped<WALLET>,
    AppJson(b): AppJson<DepositCreate>,
) -> ApiResult<(StatusCode, Json<RequestJson>)> {
    let r = request_create(
        &state,
        auth.account,
        &b.currency,
        &b.amount,
        &b.external_id,
        None,
        RequestKind::Deposit,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// Requests a withdrawal; the amount is held at once.
#[utoipa::path(post, path = "/v1/wallet/withdrawals", tag = "wallet", request_body = WithdrawalCreate,
    security(("bearer" = ["wallet"])),
    responses((status = 201, body = RequestJson), (status = 400), (status = 409), (status = 422)))]
pub async fn withdrawals_create(
    State(state): State<AppState>,
    Scoped(auth): Scoped<WALLET>,
    AppJson(b): AppJson<WithdrawalCreate>,
) -> ApiResult<(StatusCode, Json<RequestJson>)> {
    let r = request_create(
        &state,
        auth.account,
        &b.currency,
        &b.amount,
        &b.external_id,
        Some(&b.destination),
        RequestKind::Withdrawal,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// Lists requests with filters (account, kind, status), newest first.
pub fn requests_query(
    state: &AppState,
    account: Option<u32>,
    withdrawal: Option<bool>,
    status: Option<i64>,
    pg: crate::extract::Page,
) -> ApiResult<Paged<RequestJson>> {
    let mut filter = store::Filter::new();
    if let Some(a) = account {
        filter.eq("account", i64::from(a));
    }
    if let Some(w) = withdrawal {
        filter.eq("kind", i64::from(w));
    }
    if let Some(s) = status {
        filter.eq("status", s);
    }
    let (total, rows) = state.store.read_list(|c| {
        store::paged(
            c,
            "requests",
            store::REQ_COLS,
            &filter,
            "id DESC",
            pg.limit,
            pg.offset,
            store::request_from_row,
        )
    })?;
    let m = state.model.markets.read();
    let data = rows.iter().map(|r| request_json(&m, r)).collect();
    Ok(Paged::new(pg, total, data, "createdAt", "DESC"))
}

/// The caller's deposits.
#[utoipa::path(get, path = "/v1/wallet/deposits", tag = "wallet", security(("bearer" = ["wallet:read"])),
    responses((status = 200, description = "paginated requests")))]
pub async fn deposits_list(
    State(state): State<AppState>,
    Scoped(auth): Scoped<{ WALLET | WALLET_READ }>,
    AppQuery(q): AppQuery<PageQuery>,
) -> ApiResult<Json<Paged<RequestJson>>> {
    let pg = page(q.offset, q.limit)?;
    Ok(Json(requests_query(
        &state,
        Some(auth.account.0),
        Some(false),
        None,
        pg,
    )?))
}

/// The caller's withdrawals.
#[utoipa::path(get, path = "/v1/wallet/withdrawals", tag = "wallet", security(("bearer" = ["wallet:read"])),
    responses((status = 200, description = "paginated requests")))]
pub async fn withdrawals_list(
    State(state): State<AppState>,
    Scoped(auth): Scoped<{ WALLET | WALLET_READ }>,
    AppQuery(q): AppQuery<PageQuery>,
) -> ApiResult<Json<Paged<RequestJson>>> {
    let pg = page(q.offset, q.limit)?;
    Ok(Json(requests_query(
        &state,
        Some(auth.account.0),
        Some(true),
        None,
        pg,
    )?))
}

/// One of the caller's requests.
#[utoipa::path(get, path = "/v1/wallet/requests/{id}", tag = "wallet",
    security(("bearer" = ["wallet:read"])), params(("id" = String, Path)),
    responses((status = 200, body = RequestJson), (status = 404)))]
pub async fn requests_get(
    State(state): State<AppState>,
    Scoped(auth): Scoped<{ WALLET | WALLET_READ }>,
    PathSegment(id): PathSegment,
) -> ApiResult<Json<RequestJson>> {
    let nf = || ApiError::not_found("no such request");
    let id = parse_id(&id).ok_or_else(nf)?;
    let r = state
        .store
        .read(|c| store::request_get(c, id))?
        .filter(|r| r.account == auth.account.0)
        .ok_or_else(nf)?;
    let m = state.model.markets.read();
    Ok(Json(request_json(&m, &r)))
}
