//! Request parsing with our own rejections: JSON bodies through simd-json, query strings,
//! pagination, decimals.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use engine::units::{UnitsError, parse_units};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        "the body is larger than 64 KiB",
    )
}

/// When a request's body must have arrived: `body_timeout_secs` after the edge
/// ([`crate::middleware::edge`]) saw its head. Without it (a handler served outside the
/// edge) a body is read without a deadline.
#[derive(Clone, Copy, Debug)]
pub struct BodyDeadline(pub tokio::time::Instant);

/// A body that did not arrive by its [`BodyDeadline`]: a 408, and the connection closes
/// (its unread rest cannot be told from the next request).
pub fn body_timeout() -> ApiError {
    ApiError(
        feed::problem::Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            "the body did not arrive in time",
        )
        .header(header::CONNECTION, "close"),
    )
}

/// Reads the body (at most [`BODY_LIMIT`], by its [`BodyDeadline`]). Past the limit it is a
/// 413; a body that cannot be read (a malformed chunked encoding, a connection that broke
/// off) is a 400; one that does not arrive in time a 408 ([`body_timeout`]).
pub async fn body_bytes(req: Request) -> Result<Vec<u8>, ApiError> {
    let deadline = req.extensions().get::<BodyDeadline>().copied();
    let read = axum::body::to_bytes(req.into_body(), BODY_LIMIT);
    let read = match deadline {
        Some(BodyDeadline(at)) => tokio::time::timeout_at(at, read)
            .await
            .map_err(|_| body_timeout())?,
        None => read.await,
    };
    let bytes = read.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            too_large()
        } else {
            ApiError::validation("the body could not be read (a malformed chunked encoding?)")
        }
    })?;
    Ok(bytes.to_vec())
}

/// A free-text field (a withdrawal's destination, a rejection's reason, a currency's display
/// name): `min_chars` to `max_chars` characters, none of them a control character (as a
/// user's name). These are stored, shown on pages and passed on to back-office systems,
/// where a NUL, a line break or a terminal escape is never meant.
pub fn text_field(
    field: &str,
    value: &str,
    min_chars: usize,
    max_chars: usize,
) -> Result<(), ApiError> {
    let chars = value.chars().count();
    let blank = min_chars > 0 && value.trim().is_empty();
    if blank || !(min_chars..=max_chars).contains(&chars) || value.chars().any(char::is_control) {
        return Err(ApiError::validation(format!(
            "{field} must be {min_chars} to {max_chars} characters, none of them a control \
             character"
        )));
    }
    Ok(())
}

thread_local! {
    /// simd-json's working buffers, kept per thread: without them every parse allocates (and
    /// zeroes) four buffers sized for the body. They grow to the largest body seen, at most
    /// [`BODY_LIMIT`] plus padding per buffer.
    static PARSE_BUFFERS: std::cell::RefCell<simd_json::Buffers> =
        std::cell::RefCell::new(simd_json::Buffers::new(1024));
}

/// A JSON body parsed with simd-json; every failure is a 400 problem.
#[derive(Debug)]
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json")
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !json {
            return Err(ApiError::validation(
                "Content-Type must be application/json",
            ));
        }
        let mut bytes = body_bytes(req).await?;
        if bytes.is_empty() {
            return Err(ApiError::validation("the body is empty"));
        }
        PARSE_BUFFERS
            .with_borrow_mut(|buffers| {
                simd_json::serde::from_slice_with_buffers::<T>(&mut bytes, buffers)
            })
            .map(AppJson)
            .map_err(|e| ApiError::validation(format!("invalid JSON body: {}", json_detail(&e))))
    }
}

/// What was wrong with a body, in the client's terms: serde's message for a wrong shape
/// (unknown, missing or mistyped field), a plain phrase for broken JSON. simd-json reports
/// some syntax errors (trailing data among them) as its internal `TapeError`, which is no
/// business of a client.
fn json_detail(e: &simd_json::Error) -> String {
    use simd_json::ErrorType;
    match e.error() {
        ErrorType::Serde(msg) => clean(msg),
        ErrorType::InternalError(_) => "malformed JSON".to_string(),
        other => clean(&format!("{other:?}")),
    }
}

/// Keeps parser messages short and free of internals.
fn clean(msg: &str) -> String {
    let mut s: String = msg.chars().take(200).collect();
    if let Some(i) = s.find(" at character") {
        s.truncate(i);
    }
    s
}

/// A query string parsed into `T`; unknown or malformed parameters are a 400.
#[derive(Debug)]
pub struct AppQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for AppQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str::<T>(q)
            .map(AppQuery)
            .map_err(|e| ApiError::validation(format!("invalid query: {}", clean(&e.to_string()))))
    }
}

/// An id as the API writes it (orders, requests, transactions, users): decimal digits
/// without a sign or leading zeros, within `u64`. Anything else names no object, so a path
/// holding it is a 404: `+2` or `002` is not the id `2`, which a client must not be able to
/// reach under several names.
pub fn parse_id(s: &str) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

/// [`parse_id`] for a user id (`u32`).
pub fn parse_user_id(s: &str) -> Option<u32> {
    parse_id(s).and_then(|v| u32::try_from(v).ok())
}

pub const LIMIT_MAX: u64 = 1000;

/// `offset` and `limit`, validated.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub offset: u64,
    pub limit: u64,
}

pub fn page(offset: Option<String>, limit: Option<String>) -> Result<Page, ApiError> {
    let num = |v: Option<String>, name: &str, default: u64| -> Result<u64, ApiError> {
        match v {
            None => Ok(default),
            Some(s) => s.parse::<u64>().map_err(|_| {
                ApiError::validation(format!("{name} must be a non-negative integer"))
            }),
        }
    };
    let offset = num(offset, "offset", 0)?;
    let limit = num(limit, "limit", 100)?;
    // Zero is refused like the market lists refuse it: a page of nothing is never what a
    // client meant.
    if limit == 0 || limit > LIMIT_MAX {
        return Err(ApiError::validation("limit must be between 1 and 1000"));
    }
    if offset > i64::MAX as u64 {
        return Err(ApiError::validation("offset out of range"));
    }
    Ok(Page { offset, limit })
}

/// A list response with its pagination meta.
#[derive(serde::Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub offset: u64,
    pub limit: u64,
    pub count: usize,
    pub total_count: u64,
    pub sort: &'static str,
    pub order: &'static str,
}

#[derive(serde::Serialize, Debug)]
pub struct Paged<T> {
    pub meta: Meta,
    pub data: Vec<T>,
}

impl<T> Paged<T> {
    pub fn new(
        page: Page,
        total: u64,
        data: Vec<T>,
        sort: &'static str,
        order: &'static str,
    ) -> Self {
        Paged {
            meta: Meta {
                offset: page.offset,
                limit: page.limit,
                count: data.len(),
                total_count: total,
                sort,
                order,
            },
            data,
        }
    }
}

/// What a decimal field stands for, for the error code of too many places.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecimalKind {
    Price,
    Amount,
    Money,
}

/// Parses a decimal string exactly onto a grid of `decimals` places; positive, at most `max`.
pub fn decimal(
    field: &str,
    text: &str,
    decimals: u8,
    kind: DecimalKind,
    max: u128,
) -> Result<u64, ApiError> {
    // API.md: "Requests may send fewer decimals, never more", so a zero past the grid is
    // refused too (`"1000.000"` for a 2-decimal price), like the venues clients know.
    let places = text.split_once('.').map_or(0, |(_, frac)| frac.len());
    let parsed = parse_units(text, decimals).and_then(|v| {
        if places > usize::from(decimals) {
            Err(UnitsError::TooManyPlaces)
        } else {
            Ok(v)
        }
    });
    let v = parsed.map_err(|e| match e {
        UnitsError::Syntax => ApiError::validation(format!(
            "{field} must be a plain positive decimal string like \"12.5\""
        )),
        UnitsError::TooManyPlaces => match kind {
            DecimalKind::Price => ApiError::bad(
                "INVALID_PRICE_TICK",
                format!("{field} has more than {decimals} decimals"),
            ),
            DecimalKind::Amount => ApiError::bad(
                "INVALID_AMOUNT_STEP",
                format!("{field} has more than {decimals} decimals"),
            ),
            DecimalKind::Money => {
                ApiError::validation(format!("{field} has more than {decimals} decimals"))
            }
        },
        UnitsError::Overflow => ApiError::validation(format!("{field} is out of range")),
    })?;
    if v == 0 {
        return Err(ApiError::validation(format!("{field} must be positive")));
    }
    if v > max {
        return Err(ApiError::validation(format!(
            "{field} is out of range (at most {})",
            engine::units::format_units(max, decimals)
        )));
    }
    Ok(v as u64)
}

/// Query parameters shared by the paginated lists.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub offset: Option<String>,
    pub limit: Option<String>,
}
