//! RFC 9457 problem details, the one error format of every HTTP endpoint (API.md).
//!
//! Lives here, below the API crate, so that the feed's REST routes and the API's routes
//! answer errors identically. The request id is filled in by the request-id middleware's
//! header; a handler only says what went wrong.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The header carrying the request id on every request and response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A problem: status, stable machine code, human detail, and optional extra members
/// (`orderId` on `DUPLICATE_CLIENT_ID`, `existingId` on `DUPLICATE_EXTERNAL_ID`).
#[derive(Clone, Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub extra: Vec<(&'static str, serde_json::Value)>,
    pub retry_after_secs: Option<u64>,
    /// Further response headers (`Upgrade` on a 426, `Sec-WebSocket-Version` on a refused
    /// WebSocket version): kept here, not on a response, because the API's middleware
    /// renders the problem again.
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    instance: String,
    request_id: String,
    code: &'a str,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            code,
            detail: detail.into(),
            extra: Vec::new(),
            retry_after_secs: None,
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: header::HeaderName, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    /// Adds an extra member to the body.
    pub fn with(mut self, key: &'static str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.push((key, value.into()));
        self
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::bad_request("VALIDATION_FAILED", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", detail)
    }

    /// A failure of ours (the market data store could not be read); nothing internal is
    /// told to the client.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal error",
        )
    }

    /// A pair named in a path that does not exist: 404 `UNKNOWN_PAIR`, on the market routes
    /// and the back office alike (in a body or query it is a 400).
    pub fn unknown_pair_in_path(symbol: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "UNKNOWN_PAIR",
            format!("no pair named {symbol}"),
        )
    }

    /// The JSON body for a request with the given id and path (`instance`).
    pub fn body(&self, request_id: &str, instance: &str) -> Vec<u8> {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = ProblemBody {
            kind: format!(
                "https://bourse.dev/problems/{}",
                self.code.to_ascii_lowercase().replace('_', "-")
            ),
            title,
            status: self.status.as_u16(),
            detail: &self.detail,
            instance: instance.to_string(),
            request_id: request_id.to_string(),
            code: self.code,
            extra: self
                .extra
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// Renders the problem for a request with the given id and path (`instance`).
    pub fn render(&self, request_id: &str, instance: &str) -> Response {
        let json = self.body(request_id, instance);
        let mut response = (self.status, json).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert(REQUEST_ID_HEADER, v);
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        response
    }
}

/// Without request context, the problem is rendered with the id and path left empty and
/// stashed in the response extensions; the API's request-id middleware re-renders it with
/// the real request id and path (`api::middleware`), so every problem body carries them.
impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = self.render("", "");
        response.extensions_mut().insert(self);
        response
    }
}
