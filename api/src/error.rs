//! The one error type of every handler: a [`Problem`] (RFC 9457) with a stable code.
//!
//! Handlers return `Result<_, ApiError>`; the request-id middleware re-renders the problem
//! with the request id and path. Engine refusals map here, in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use engine::RejectReason;
use feed::problem::Problem;

/// A failed request.
#[derive(Debug)]
pub struct ApiError(pub Problem);

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError(Problem::new(status, code, detail))
    }
    pub fn bad(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::bad("VALIDATION_FAILED", detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", detail)
    }
    pub fn order_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "ORDER_NOT_FOUND", "no such order")
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", detail)
    }
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", detail)
    }
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            detail,
        )
    }
    /// A 503 that asks the client to retry in a second (`Retry-After: 1`): nothing was
    /// done, and the cause (a full ring, a burst of sign-ins, a start) passes.
    pub fn retry_shortly(detail: impl Into<String>) -> Self {
        let mut e = Self::unavailable(detail);
        e.0.retry_after_secs = Some(1);
        e
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "an internal error occurred",
        )
    }
    pub fn with(self, key: &'static str, value: impl Into<serde_json::Value>) -> Self {
        ApiError(self.0.with(key, value))
    }

    /// An engine refusal as the client sees it.
    pub fn from_reject(reason: RejectReason) -> Self {
        use RejectReason::*;
        match reason {
            UnknownPair => Self::bad("UNKNOWN_PAIR", "unknown pair"),
            UnknownCurrency => Self::validation("unknown currency"),
            PairHalted => Self::new(StatusCode::CONFLICT, "PAIR_HALTED", "the pair is halted"),
            InvalidPrice => Self::bad("INVALID_PRICE_TICK", "price out of range"),
            InvalidAmount => Self::validation("amount must be positive and at most 2^40 lots"),
            AmountTooSmall => Self::bad("AMOUNT_TOO_SMALL", "amount below the pair minimum"),
            DuplicateOrderId | DuplicateRequestId => {
                Self::unavailable("id collision, retry the request")
            }
            // The amount fits alone (the API refuses more than 2^62 minor units with a 400)
            // but not with what is already deposited: a conflict with existing state.
            AmountOverflow => Self::new(
                StatusCode::CONFLICT,
                "LIMIT_REACHED",
                "the currency's total supply would exceed 2^62 minor units",
            ),
            InsufficientFunds => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INSUFFICIENT_FUNDS",
                "insufficient available funds",
            ),
            PostOnlyWouldTake => Self::new(
                StatusCode::CONFLICT,
                "POST_ONLY_WOULD_TAKE",
                "post-only order would take",
            ),
            BookFull => Self::unavailable("the order book is full"),
            OrderNotOpen => Self::new(StatusCode::CONFLICT, "ORDER_NOT_OPEN", "order is not open"),
            RequestNotPending => Self::new(
                StatusCode::CONFLICT,
                "REQUEST_NOT_PENDING",
                "request is not pending",
            ),
            InvalidSpec => Self::validation("the specification cannot be settled exactly"),
            DuplicateCurrency => Self::new(
                StatusCode::CONFLICT,
                "DUPLICATE_CURRENCY",
                "currency exists",
            ),
            DuplicatePair => Self::new(StatusCode::CONFLICT, "DUPLICATE_PAIR", "pair exists"),
            TooManyCurrencies | TooManyPairs => Self::new(
                StatusCode::CONFLICT,
                "LIMIT_REACHED",
                "the engine holds its maximum",
            ),
            // Only start-up sends `SetRulesVersion`; no route does.
            UnknownRulesVersion => Self::validation("matching rules version unknown to this build"),
            RulesVersionDowngrade => {
                Self::validation("matching rules version older than the engine's")
            }
        }
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        ApiError(p)
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        if crate::store::is_interrupted(&e) {
            tracing::warn!("history query stopped at its time limit");
            return ApiError::unavailable(
                "the history query ran past the server's time limit: narrow it with filters \
                 or ask for a smaller offset",
            );
        }
        // The store refused the read (it stopped on a write error, its file is damaged, or
        // it is behind): a 503, which is what it is, not a 500 with an error line per read.
        // The stop or the damage itself was logged once where it was found, and `/ready`
        // says so. The client is told what it is, never SQLite's words or the file's path.
        match crate::store::unavailable_reason(&e) {
            Some(why) if why == crate::store::STORE_FAILED => ApiError::unavailable(
                "history is unavailable (the history store has stopped); the operator has \
                 to restart the server",
            ),
            Some(why) if why == crate::store::STORE_DAMAGED => ApiError::unavailable(
                "history is unavailable (the history store is damaged); the operator has to \
                 restart the server, which rebuilds it; orders are still accepted",
            ),
            Some(_) => ApiError::retry_shortly("history is catching up; retry shortly"),
            None => {
                crate::store::log_store_error("history store error", &e);
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}
