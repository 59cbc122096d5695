//! Public market lists: currencies and pairs.

use axum::Json;
use axum::extract::State;

use crate::model::{CurrencyJson, PairJson, pair_json};
use crate::state::AppState;

/// Every currency.
#[utoipa::path(get, path = "/v1/currencies", tag = "market",
    responses((status = 200, body = [CurrencyJson])))]
pub async fn currencies_list(State(state): State<AppState>) -> Json<Vec<CurrencyJson>> {
    let m = state.model.markets.read();
    Json(
        m.currencies()
            .iter()
            .map(|c| CurrencyJson {
                currency: c.spec.code.clone(),
                minor_amount_decimals: c.spec.decimals,
                display_name: c.spec.display_name.clone(),
                status: "active",
            })
            .collect(),
    )
}

/// Every pair.
#[utoipa::path(get, path = "/v1/pairs", tag = "market",
    responses((status = 200, body = [PairJson])))]
pub async fn pairs_list(State(state): State<AppState>) -> Json<Vec<PairJson>> {
    let m = state.model.markets.read();
    Json(m.pairs().iter().map(|p| pair_json(&m, p)).collect())
}
