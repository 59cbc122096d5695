//! The middleware every route (the feed's included) runs through: request ids, problem
//! rendering, the head limits ([`crate::request_head`]), the body limit, per-client rate
//! limits ([`crate::rate_limit`]) and request metrics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use feed::problem::{Problem, REQUEST_ID_HEADER};

use crate::extract::BODY_LIMIT;
use crate::rate_limit::RateKey;
use crate::state::AppState;

/// The token endpoint: limited by peer address whatever credentials a call carries, so
/// guessing secrets costs the same budget under any client id.
const TOKEN_PATH: &str = "/v1/oauth2/token";

static REQ_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) fn new_request_id() -> String {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(rand::random::<u64>);
    let n = REQ_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}{:08x}", base, n)
}

pub(crate) fn valid_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
}

/// Whose budget `req` spends: its account when it carries a bearer token the token cache
/// knows (and not expired), its peer address otherwise. The token's lookup is left in the
/// request's extensions ([`crate::auth::TokenLookup`]) for the `Auth` extractor, so the
/// token is hashed once.
///
/// Only the cache is asked, never the store: a request is counted before anything costly
/// runs, and a made-up token must not buy a store lookup past the limit. A valid token the
/// cache does not hold yet (after a restart) spends its peer's budget for that one request;
/// the [`crate::auth::Auth`] extractor then caches it.
fn rate_key(state: &AppState, req: &mut Request) -> RateKey {
    let lookup = (req.uri().path() != TOKEN_PATH)
        .then(|| crate::auth::bearer_in(req.headers()))
        .flatten()
        .map(|token| crate::auth::TokenLookup::find(state, token));
    let account = lookup.and_then(|l| l.cached_valid());
    if let Some(lookup) = lookup {
        req.extensions_mut().insert(lookup);
    }
    match account {
        Some(info) => RateKey::Account(info.account),
        None => RateKey::peer(
            req.extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ),
    }
}

fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::TOO_MANY_REQUESTS => "RATE_LIMITED",
        StatusCode::SERVICE_UNAVAILABLE => "SERVICE_UNAVAILABLE",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::REQUEST_TIMEOUT => "REQUEST_TIMEOUT",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "VALIDATION_FAILED",
        s if s.is_server_error() => "INTERNAL_ERROR",
        _ => "VALIDATION_FAILED",
    }
}

/// The request's id: the client's `X-Request-Id` when it is a valid one (echoed), a new one
/// otherwise.
pub(crate) fn request_id_of(req: &Request) -> HeaderValue {
    req.headers()
        .get(REQUEST_ID_HEADER)
        .filter(|v| v.to_str().is_ok_and(valid_request_id))
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::try_from(new_request_id()).expect("hex is a valid header value")
        })
}

/// Request id, limits, problem rendering and metrics.
///
/// Runs for every request, so the common case allocates only the generated request id:
/// the method, route and URI are cheap clones, the path is only read for a problem body.
pub async fn edge(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id_of(&req);
    let id_str = || id.to_str().unwrap_or_default();
    let uri = req.uri().clone();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();

    let too_large = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > BODY_LIMIT as u64);

    let limited =
        if !state.rate.enabled() || matches!(uri.path(), "/health" | "/ready" | "/metrics") {
            Ok(())
        } else {
            state.rate.check(rate_key(&state, &mut req))
        };

    let head = crate::request_head::check(&method, &uri, route.as_ref(), req.headers());
    // The body, if the handler reads one, is due within the timeout from now.
    let body_timeout = std::time::Duration::from_secs(state.config.body_timeout_secs);
    req.extensions_mut().insert(crate::extract::BodyDeadline(
        tokio::time::Instant::now() + body_timeout,
    ));

    let mut response = if let Err(p) = head {
        p.render(id_str(), uri.path())
    } else if too_large {
        crate::extract::too_large().0.render(id_str(), uri.path())
    } else if let Err(secs) = limited {
        let mut p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "too many requests, slow down",
        );
        p.retry_after_secs = Some(secs);
        p.render(id_str(), uri.path())
    } else {
        next.run(req).await
    };

    if let Some(p) = response.extensions().get::<Problem>().cloned() {
        response = p.render(id_str(), uri.path());
    } else {
        let status = response.status();
        if status.is_client_error() || status.is_server_error() {
            let is_problem = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| {
                    v.as_bytes().starts_with(b"application/problem+json")
                        || v.as_bytes().starts_with(b"application/json")
                });
            if !is_problem {
                let detail = status.canonical_reason().unwrap_or("error").to_string();
                response =
                    Problem::new(status, code_for(status), detail).render(id_str(), uri.path());
            }
        }
    }
    // RFC 6750 section 3: a 401 of a bearer-protected resource names the scheme (the token
    // endpoint's own 401 names Basic and is left alone).
    if response.status() == StatusCode::UNAUTHORIZED
        && !response.headers().contains_key(header::WWW_AUTHENTICATE)
    {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"bourse\""),
        );
    }
    let status = response.status().as_u16();
    response.headers_mut().insert(REQUEST_ID_HEADER, id);
    state.metrics.record(
        &method,
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        status,
        started.elapsed().as_micros() as u64,
    );
    response
}
