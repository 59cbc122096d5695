//! Back office (scope `admin`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use engine::{AccountId, Command, CurrencySpec, Event, PairSpec, PairStatus, RequestId};
use feed::path::PathSegment;
use feed::problem::Problem;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{ADMIN, Scoped};
use crate::error::{ApiError, ApiResult};
use crate::extract::{
    AppJson, AppQuery, DecimalKind, Paged, decimal, page, parse_id, parse_user_id,
};
use crate::model::{
    CurrencyJson, PairJson, RequestJson, pair_json, request_json, request_status_code,
};
use crate::routes::wallet::{RequestKind, WalletJson, request_create, requests_query, wallet_of};
use crate::state::AppState;
use crate::store;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminRequestsQuery {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub status: Option<String>,
    pub user_id: Option<String>,
    pub offset: Option<String>,
    pub limit: Option<String>,
}

/// Every account's requests, filtered.
#[utoipa::path(get, path = "/v1/admin/requests", tag = "admin", security(("bearer" = ["admin"])),
    responses((status = 200, description = "paginated requests")))]
pub async fn admin_requests_list(
    State(state): State<AppState>,
    _: Scoped<ADMIN>,
    AppQuery(q): AppQuery<AdminRequestsQuery>,
) -> ApiResult<Json<Paged<RequestJson>>> {
    let pg = page(q.offset, q.limit)?;
    let withdrawal = match q.kind.as_deref() {
        None => None,
        Some("deposit") => Some(false),
        Some("withdrawal") => Some(true),
        Some(_) => return Err(ApiError::validation("type must be deposit or withdrawal")),
    };
    let status = match q.status.as_deref() {
        None => None,
        Some("pending") => Some(request_status_code(engine::RequestStatus::Pending)),
        Some("completed") => Some(request_status_code(engine::RequestStatus::Completed)),
        Some("rejected") => Some(request_status_code(engine::RequestStatus::Rejected)),
        Some(_) => {
            return Err(ApiError::validation(
                "status must be pending, completed or rejected",
            ));
        }
    };
    let user = match q.user_id.as_deref() {
        None => None,
        Some(u) => {
            Some(parse_user_id(u).ok_or_else(|| ApiError::validation("userId must be a user id"))?)
        }
    };
    Ok(Json(requests_query(&state, user, withdrawal, status, pg)?))
}

async fn decide(
    state: &AppState,
    id: &str,
    approve: bool,
    reason: String,
) -> ApiResult<RequestJson> {
    let nf = || ApiError::not_found("no such request");
    let id = parse_id(id).ok_or_else(nf)?;
    let rec = state
        .store
        .read(|c| store::request_get(c, id))?
        .ok_or_else(nf)?;
    if rec.status != engine::RequestStatus::Pending {
        return Err(ApiError::from_reject(
            engine::RejectReason::RequestNotPending,
        ));
    }
    let command = if approve {
        Command::ApproveRequest {
            request: RequestId(id),
        }
    } else {
        Command::RejectRequest {
            request: RequestId(id),
            reason,
        }
    };
    let committed = state.submit(command).await?;
    for ev in &committed.events {
        if let Event::RequestRefused { reason, .. } = ev {
            return Err(ApiError::from_reject(*reason));
        }
    }
    let rec = state
        .store
        .read(|c| store::request_get(c, id))?
        .ok_or_else(nf)?;
    let m = state.model.markets.read();
    Ok(request_json(&m, &rec))
}

/// Approves a pending request.
#[utoipa::path(post, path = "/v1/admin/requests/{id}/approve", tag = "admin",
    security(("bearer" = ["admin"])), params(("id" = String, Path)),
    responses((status = 200, body = RequestJson), (status = 404), (status = 409)))]
pub async fn admin_requests_approve(
    State(state): State<AppState>,
    _: Scoped<ADMIN>,
    PathSegment(id): PathSegment,
) -> ApiResult<Json<RequestJson>> {
    Ok(Json(decide(&state, &id, true, String::new()).await?))
}

#[derive(Deserialize, Debug, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    pub reason: String,
}

/// Rejects a pending request.
#[utoipa::path(post, path = "/v1/admin/requests/{id}/reject", tag = "admin",
    security(("bearer" = ["admin"])), params(("id" = String, Path)), request_body = RejectBody,
    responses((status = 200, body = RequestJson), (status = 404), (status = 409)))]
pub async fn admin_requests_reject(
    State(state): State<AppState>,
    _: Scoped<ADMIN>,
    PathSegment(id): PathSegment,
    AppJson(body): AppJson<RejectBody>,
) -> ApiResult<Json<RequestJson>> {
    // Not blank (the user reads the reason on the request), no control characters.
    crate::extract::text_field("reason", &body.reason, 1, 512)?;
    Ok(Json(decide(&state, &id, false, body.reason).await?))
}

#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminDeposit {
    pub user_id: String,
    pub currency: String,
    pub amount: String,
    pub external_id: String,
}

fn user_exists(state: &AppState, id: &str) -> ApiResult<u32> {
    let bad = || ApiError::validation("userId is not a known user");
    let id = parse_user_id(id).ok_or_else(bad)?;
    let n: i64 = state.store.read(|c| {
        c.query_row("SELECT COUNT(*) FROM users WHERE id = ?1", [id], |r| {
            r.get(0)
        })
    })?;
    if n == 0 {
        return Err(bad());
    }
    Ok(id)
}

/// Credits an account at once.
#[utoipa::path(post, path = "/v1/admin/deposits", tag = "admin", security(("bearer" = ["admin"])),
    request_body = AdminDeposit, responses((status = 201, body = RequestJson)))]
pub async fn admin_deposits_create(
    State(state): State<AppState>,
    _: Scoped<ADMIN>,
    AppJson(b): AppJson<AdminDeposit>,
) -> ApiResult<(StatusCode, Json<RequestJson>)> {
    let user = user_exists(&state, &b.user_id)?;
    let r = request_create(
        &state,
        AccountId(user),
        &b.currency,
        &b.amount,
        &b.external_id,
        None,
        RequestKind::Credit,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(r)))
}

#[derive(Serialize, ToSchema, Debug)]
#[serde(rename_all = "camelCase")]
pub struct AuditCurrency {
    pub currency: String,
    pub deposits: String,
    pub withdrawals: String,
    pub accounts_total: String,
    pub fees_total: String,
    pub ok: bool,
}

#[derive(Serialize, ToSchema, Debug)]
pub struct AuditJson {
    pub ok: bool,
    pub currencies: Vec<AuditCurrency>,
}

/// Reconciliation per currency, asked of the engine and checked against the read model.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", security(("bearer" = ["admin"])),
    responses((status = 200, body = AuditJson)))]
pub async fn admin_audit(
    State(state): State<AppState>,
    _: Scoped<ADMIN>,
) -> ApiResult<Json<AuditJson>> {
    let st = state.clone();
    let (audit, model_totals) = tokio::task::spawn_blocking(move || audit_cut(&st))
        .await
        .map_err(|_| ApiError::internal())??;
    let m = state.model.markets.read();
    let mut all_ok = true;
    let mut currencies = Vec::new();
    for a in audit {
        let (code, d) = m
            .currency(a.currency)
            .map(|c| (c.spec.code.clone(), c.spec.decimals))
            .unwrap_or_default();
        // The read model is compared with the engine only at a cut where both hold the same
        // commands ([`audit_cut`]); without one (orders never stopped flowing) the figures
        // are the engine's, checked as API.md defines `ok`.
        let model_ok = model_totals
            .as_ref()
            .is_none_or(|t| t.get(&a.currency.0).copied().unwrap_or(0) == a.accounts_total);
        let ok = a.ok() && model_ok;
        all_ok &= ok;
        let f = |v: u128| engine::units::format_units(v, d);
        currencies.push(AuditCurrency {
            currency: code,
            deposits: f(u128::from(a.deposits)),
            withdrawals: f(u128::from(a.withdrawals)),
            accounts_total: f(a.accounts_total),
            fees_total: f(u128::from(a.fees_total)),
            ok,
        });
    }
    Ok(Json(AuditJson {
        ok: all_ok,
        currencies,
    }))
}

/// Attempts at a consistent cut before the audit gives up comparing the read model.
const AUDIT_CUT_TRIES: usize = 20;
/// Longest the audit looks for a cut, waits for the read model included: it holds the
/// pipeline's read lock meanwhile, which a stop waits for.
const AUDIT_CUT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The engine's audit figures and, when a consistent cut was found, the read model's
/// account totals per currency at the same command.
///
/// The engine is ahead of the read model by the commands in flight (applied, not yet
/// journaled or delivered), so comparing the two as they stand reported `ok: false` for
/// every fee or deposit in flight: an audit under load was a false alarm one time in four.
/// A cut: the engine's figures as of command `seq`, the read model waited for until it has
/// been delivered `seq`, its totals read, then the engine asked again: if it has applied
/// nothing since, the read model cannot hold anything past `seq` either, so the two are
/// compared. Under a load that never pauses there may be no cut; then the read model is
/// not compared (`None`) and `ok` is the engine's conservation check alone.
type AuditCut = (Vec<engine::CurrencyAudit>, Option<HashMap<u16, u128>>);

fn audit_cut(state: &AppState) -> ApiResult<AuditCut> {
    let guard = state.pipeline.read();
    let p = guard
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("the engine is not running"))?;
    let stopped = |_| ApiError::unavailable("the engine is stopping");
    let model = &state.model;
    let mut last = None;
    let deadline = std::time::Instant::now() + AUDIT_CUT_WAIT;
    for _ in 0..AUDIT_CUT_TRIES {
        if std::time::Instant::now() >= deadline {
            break;
        }
        let (audit, seq) = p.query_at(|e, seq| (e.audit(), seq)).map_err(stopped)?;
        while model.last_seq.load(Ordering::Acquire) < seq && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if model.last_seq.load(Ordering::Acquire) != seq {
            last = Some(audit);
            continue;
        }
        let mut totals: HashMap<u16, u128> = HashMap::new();
        for ((_, currency), b) in model.balances.read().iter() {
            *totals.entry(*currency).or_default() += u128::from(b.total());
        }
        let delivered = model.last_seq.load(Ordering::Acquire);
        let again = p.query_at(|_, seq| seq).map_err(stopped)?;
        if delivered == seq && again == seq {
            return Ok((audit, Some(totals)));
        }
        last = Some(audit);
    }
    tracing::debug!("audit: no consistent cut with the read model under this load");
    let audit = match last {
        Some(audit) => audit,
        None => p.query_at(|e, _| e.audit()).map_err(stopped)?,
    };
    Ok((audit, None))
}

/// Any account's wallet.
#[utoipa::path(get, path = "/v1/admin/users/{userId}/wallet", tag = "admin",
    security(("bearer" = ["admin"])), params(("userId" = String, Path)),
    responses((status = 200, body = WalletJson), (status = 404)))]
pub async fn admin_users_wallet(
    State(state): State<AppState>,
    _: Scoped<ADMIN>,
    PathSegment(user): PathSegment,
) -> ApiResult<Json<WalletJson>> {
    let id = parse_user_id(&user).ok_or_else(|| ApiError::not_found("no such user"))?;
    Ok(Json(wallet_of(&state, id)?))
}

#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CurrencyCreate {
    pub currency: String,
    pub minor_amount_decimals: u8,
    pub display_name: String,
    #[serde(default)]
    pub status: Option<String>,
}

fn check_code(code: &str) -> ApiResult<()> {
    if code.is_empty()
        || code.len() > 12
        || !code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Err(ApiError::validation(
            "currency codes are 1 to 12 of A-Z and 0-9",
        ));
    }
    Ok(())
}

fn config_refused(events: &[Event]) -> ApiResult<()> {
    for ev in events {
        if let Event::ConfigRefused { reason } = ev {
            return Err(ApiError::from_reject(*reason));
        }
    }
    Ok(())
}

/// Adds a currency at run time.
#[utoipa::path(post, path = "/v1/admin/currencies", tag = "admin", security(("bearer" = ["admin"])),
    request_body = CurrencyCreate, responses((status = 201, body = CurrencyJson), (status = 409)))]
pub async fn admin_currencies_create(
    State(state): State<AppState>,
    _: Scoped<ADMIN>,
    AppJson(b): AppJson<CurrencyCreate>,
) -> ApiResult<(StatusCode, Json<CurrencyJson>)> {
    check_code(&b.currency)?;
    if b.minor_amount_decimals > engine::spec::MAX_CURRENCY_DECIMALS {
        return Err(ApiError::validation(
            "minorAmountDecimals must be at most 18",
        ));
    }
    if !matches!(b.status.as_deref(), None | Some("active")) {
        return Err(ApiError::validation("status must be active"));
    }
    crate::extract::text_field("displayName", &b.display_name, 1, 64)?;
    if state
        .model
        .markets
        .read()
        .currency_by_code(&b.currency)
        .is_some()
    {
        return Err(ApiError::from_reject(
            engine::RejectReason::DuplicateCurrency,
        ));
    }
    let committed = state
        .submit(Command::AddCurrency(Box::new(CurrencySpec {
            code: b.currency.clone(),
            display_name: b.display_name.clone(),
            decimals: b.minor_amount_decimals,
        })))
        .await?;
    config_refused(&committed.events)?;
    Ok((
        StatusCode::CREATED,
        Json(CurrencyJson {
            currency: b.currency,
            minor_amount_decimals: b.minor_amount_decimals,
            display_name: b.display_name,
            status: "active",
        }),
    ))
}

#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PairCreate {
    #[serde(default)]
    pub pair: Option<String>,
    pub base: String,
    pub quote: String,
    pub price_decimals: u8,
    pub amount_decimals: u8,
    pub min_amount: String,
    pub maker_fee_rate: String,
    pub taker_fee_rate: String,
    #[serde(default)]
    pub status: Option<String>,
}

/// A fee rate (`"0.001"`) in parts per million, exactly.
pub fn rate_ppm(field: &str, s: &str) -> ApiResult<u32> {
    let bad = || {
        ApiError::validation(format!(
            "{field} must be a decimal between 0 and 1 with at most 6 places"
        ))
    };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let d = Decimal::from_str_exact(s).map_err(|_| bad())?;
    let ppm = d * Decimal::from(1_000_000u32);
    if ppm.fract() != Decimal::ZERO || ppm > Decimal::from(1_000_000u32) {
        return Err(bad());
    }
    u32::try_from(ppm.trunc().mantissa() / 10i128.pow(ppm.trunc().scale())).map_err(|_| bad())
}

fn status_of(s: Option<&str>) -> ApiResult<PairStatus> {
    match s {
        None | Some("active") => Ok(PairStatus::Active),
        Some("halted") => Ok(PairStatus::Halted),
        Some(_) => Err(ApiError::validation("status must be active or halted")),
    }
}

/// Builds a pair spec from decimal settings (also used for the defaults).
#[allow(clippy::too_many_arguments)]
pub fn pair_spec(
    m: &engine::markets::Markets,
    base: &str,
    quote: &str,
    price_decimals: u8,
    amount_decimals: u8,
    min_amount: &str,
    maker: &str,
    taker: &str,
    status: PairStatus,
) -> ApiResult<PairSpec> {
    let b = m
        .currency_by_code(base)
        .ok_or_else(|| ApiError::validation(format!("unknown currency {base}")))?;
    let q = m
        .currency_by_code(quote)
        .ok_or_else(|| ApiError::validation(format!("unknown currency {quote}")))?;
    let min = decimal(
        "minAmount",
        min_amount,
        amount_decimals,
        DecimalKind::Amount,
        u128::from(u64::MAX / 4),
    )?;
    let spec = PairSpec {
        base: b.id,
        quote: q.id,
        price_decimals,
        amount_decimals,
        min_amount: engine::Amount(min),
        maker_fee_ppm: rate_ppm("makerFeeRate", maker)?,
        taker_fee_ppm: rate_ppm("takerFeeRate", taker)?,
        status,
    };
    spec.scale(b.spec.decimals, q.spec.decimals)
        .map_err(|e| ApiError::validation(e.to_string()))?;
    Ok(spec)
}

/// Adds a pair at run time.
#[utoipa::path(post, path = "/v1/admin/pairs", tag = "admin", security(("bearer" = ["admin"])),
    request_body = PairCreate, responses((status = 201, body = PairJson), (status = 409)))]
pub async fn admin_pairs_create(
    State(state): State<AppState>,
    _: Scoped<ADMIN>,
    AppJson(b): AppJson<PairCreate>,
) -> ApiResult<(StatusCode, Json<PairJson>)> {
    let symbol = format!("{}_{}", b.base, b.quote);
    if b.pair.as_deref().is_some_and(|p| p != symbol) {
        return Err(ApiError::validation("pair must be BASE_QUOTE"));
    }
    let spec = {
        let m = state.model.markets.read();
        if m.pair_by_symbol(&symbol).is_some() {
            return Err(ApiError::from_reject(engine::RejectReason::DuplicatePair));
        }
        pair_spec(
            &m,
            &b.base,
            &b.quote,
            b.price_decimals,
            b.amount_decimals,
            &b.min_amount,
            &b.maker_fee_rate,
            &b.taker_fee_rate,
            status_of(b.status.as_deref())?,
        )?
    };
    let committed = state.submit(Command::AddPair(spec)).await?;
    config_refused(&committed.events)?;
    let m = state.model.markets.read();
    let p = m.pair_by_symbol(&symbol).ok_or_else(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(pair_json(&m, p))))
}

#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairPatch {
    pub status: String,
}

/// Halts or resumes a pair.
#[utoipa::path(patch, path = "/v1/admin/pairs/{pair}", tag = "admin", security(("bearer" = ["admin"])),
    params(("pair" = String, Path)), request_body = PairPatch,
    responses((status = 200, body = PairJson), (status = 404)))]
pub async fn admin_pairs_update(
    State(state): State<AppState>,
    _: Scoped<ADMIN>,
    PathSegment(pair): PathSegment,
    AppJson(b): AppJson<PairPatch>,
) -> ApiResult<Json<PairJson>> {
    let id = state
        .model
        .markets
        .read()
        .pair_by_symbol(&pair)
        .map(|p| p.id)
        .ok_or_else(|| Problem::unknown_pair_in_path(&pair))?;
    let status = status_of(Some(&b.status))?;
    let committed = state
        .submit(Command::SetPairStatus { pair: id, status })
        .await?;
    config_refused(&committed.events)?;
    let m = state.model.markets.read();
    let p = m.pair(id).ok_or_else(ApiError::internal)?;
    Ok(Json(pair_json(&m, p)))
}
