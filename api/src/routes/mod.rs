//! The router: every route of API.md, the ops endpoints and the OpenAPI document.

pub mod admin;
pub mod markets;
pub mod orders;
pub mod transactions;
pub mod users;
pub mod wallet;

use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ApiError;
use crate::state::AppState;

struct BearerAddon;

impl utoipa::Modify for BearerAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Bourse", description = "Market data and order matching engine: REST API v1"),
    modifiers(&BearerAddon),
    paths(
        health, ready, metrics,
        markets::currencies_list, markets::pairs_list,
        users::users_create, users::oauth_token,
        orders::orders_create, orders::orders_get, orders::orders_get_by_client_id,
        orders::orders_cancel, orders::orders_cancel_all, orders::orders_list, orders::fills_list,
        wallet::wallet_get, wallet::deposits_create, wallet::withdrawals_create,
        wallet::deposits_list, wallet::withdrawals_list, wallet::requests_get,
        transactions::transactions_list, transactions::transactions_get,
        admin::admin_requests_list, admin::admin_requests_approve, admin::admin_requests_reject,
        admin::admin_deposits_create, admin::admin_audit, admin::admin_users_wallet,
        admin::admin_currencies_create, admin::admin_pairs_create, admin::admin_pairs_update,
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

/// The OpenAPI document (the feed's paths merged in by the server when present).
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Liveness: 200 while the process can still serve, also while it starts, recovers or
/// stops. A 503 once the engine has stopped for good after a storage failure: the process
/// is up but will never take another command, and a supervisor probing liveness (systemd,
/// Kubernetes) should restart it, which recovers from the journal. (It answered 200 then,
/// and only `/ready` told.)
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200), (status = 503)))]
pub async fn health(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if state.engine_failed() {
        return Err(ApiError::unavailable(ENGINE_STOPPED));
    }
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ok\"}",
    ))
}

/// What `/health` and `/ready` say of an engine stopped for good.
const ENGINE_STOPPED: &str = "the engine has stopped after a storage failure (a journal write or \
     sync error, see the server log): it accepts no commands; fix the cause and restart the \
     server, which recovers from the journal";

/// Readiness: recovered and the engine running.
#[utoipa::path(get, path = "/ready", tag = "ops", responses((status = 200), (status = 503)))]
pub async fn ready(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if let Some(why) = not_ready(&state) {
        return Err(ApiError::unavailable(why));
    }
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            "{{\"status\":\"ready\",\"lastSeq\":{}}}",
            state.model.last_seq.load(Ordering::Acquire)
        ),
    ))
}

/// Why the server is not ready, in words for the operator: a bare "not ready" left them to
/// guess between a start, a stop, a dead engine and a dead history store. The reasons name
/// no file or system error (the log has those); the first that holds is given.
fn not_ready(state: &AppState) -> Option<&'static str> {
    let pipeline = state.pipeline.read();
    match pipeline.as_ref() {
        None => return Some("the engine is not running"),
        Some(p) if p.has_failed() => return Some(ENGINE_STOPPED),
        Some(_) => {}
    }
    if state.shutting_down.load(Ordering::Acquire) {
        return Some("the server is shutting down");
    }
    if !state.model.recovered.load(Ordering::Acquire) {
        return Some("the server is recovering");
    }
    if state.model.store_damaged() {
        return Some(
            "the history store is damaged (SQLite reported a corrupt file, see the server \
             log): orders, fills, transactions and sign-ins cannot be read, orders are still \
             accepted; restart the server, which sets the file aside and rebuilds the store \
             from the journal",
        );
    }
    if state.model.store_failed() {
        return Some(
            "the history store has stopped after a write error (see the server log): \
             orders, fills, transactions and sign-ins cannot be read; fix the cause and \
             restart the server, which rebuilds the store from the journal",
        );
    }
    None
}

/// Prometheus text metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let stats = state.pipeline.read().as_ref().map(|p| p.stats());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&state, stats),
    )
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such resource")
}

/// Every route, with the edge middleware around all of them (the feed's included).
pub fn app(state: AppState) -> Router {
    use admin::*;
    use orders::*;
    use transactions::*;
    use wallet::*;
    let mut doc = openapi();
    let feed = state.feed_router.lock().clone();
    if let Some((_, feed_doc)) = &feed {
        doc.merge(feed_doc.clone());
    }
    let api: Router<AppState> = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/currencies", get(markets::currencies_list))
        .route("/v1/pairs", get(markets::pairs_list))
        .route("/v1/users", post(users::users_create))
        .route("/v1/oauth2/token", post(users::oauth_token))
        .route(
            "/v1/orders",
            post(orders_create)
                .get(orders_list)
                .delete(orders_cancel_all),
        )
        .route(
            "/v1/orders/by-client-id/{client_id}",
            get(orders_get_by_client_id),
        )
        .route("/v1/orders/{id}", get(orders_get).delete(orders_cancel))
        .route("/v1/fills", get(fills_list))
        .route("/v1/wallet", get(wallet_get))
        .route(
            "/v1/wallet/deposits",
            post(deposits_create).get(deposits_list),
        )
        .route(
            "/v1/wallet/withdrawals",
            post(withdrawals_create).get(withdrawals_list),
        )
        .route("/v1/wallet/requests/{id}", get(requests_get))
        .route("/v1/transactions", get(transactions_list))
        .route("/v1/transactions/{id}", get(transactions_get))
        .route("/v1/admin/requests", get(admin_requests_list))
        .route(
            "/v1/admin/requests/{id}/approve",
            post(admin_requests_approve),
        )
        .route(
            "/v1/admin/requests/{id}/reject",
            post(admin_requests_reject),
        )
        .route("/v1/admin/deposits", post(admin_deposits_create))
        .route("/v1/admin/audit", get(admin_audit))
        .route("/v1/admin/users/{user_id}/wallet", get(admin_users_wallet))
        .route("/v1/admin/currencies", post(admin_currencies_create))
        .route("/v1/admin/pairs", post(admin_pairs_create))
        .route("/v1/admin/pairs/{pair}", patch(admin_pairs_update));
    let mut router: Router = api
        .with_state(state.clone())
        .merge(SwaggerUi::new("/docs").url("/v1/openapi.json", doc))
        .merge(crate::web::router());
    if let Some((feed_router, _)) = feed {
        router = router.merge(feed_router);
    }
    router
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(
            state,
            crate::middleware::edge,
        ))
}
