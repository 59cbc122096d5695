//! The web trading page: three static files compiled into the binary.
//!
//! No build step and no CDN: `api/web/` holds plain HTML, CSS and JavaScript that talk to the
//! public REST API and WebSocket like any other client. The files are small, so they are served
//! from memory with a strong `ETag` (a hash of the content) and a short cache lifetime, which
//! keeps a redeployed binary's page fresh while sparing repeated downloads.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const APP_CSS: &str = include_str!("../web/app.css");

/// The routes of the page: `/`, `/index.html`, `/app.js`, `/app.css`.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/app.js", get(app_js))
        .route("/app.css", get(app_css))
}

async fn index(headers: HeaderMap) -> Response {
    asset(&headers, INDEX_HTML, "text/html; charset=utf-8", "no-cache")
}

async fn app_js(headers: HeaderMap) -> Response {
    asset(
        &headers,
        APP_JS,
        "text/javascript; charset=utf-8",
        "public, max-age=300, must-revalidate",
    )
}

async fn app_css(headers: HeaderMap) -> Response {
    asset(
        &headers,
        APP_CSS,
        "text/css; charset=utf-8",
        "public, max-age=300, must-revalidate",
    )
}

/// Serves one embedded file, answering a matching `If-None-Match` with 304.
fn asset(
    headers: &HeaderMap,
    body: &'static str,
    content_type: &'static str,
    cache: &'static str,
) -> Response {
    let etag = etag(body);
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        (
            header::ETAG,
            HeaderValue::from_str(&etag).expect("an etag is ascii"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        StatusCode::OK,
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// A quoted FNV-1a hash of the content: stable across runs, changes with the file.
fn etag(body: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_stable_and_quoted() {
        assert_eq!(etag(APP_JS), etag(APP_JS));
        assert_ne!(etag(APP_JS), etag(APP_CSS));
        assert!(etag("x").starts_with('"') && etag("x").ends_with('"'));
    }

    #[test]
    fn page_references_its_assets_and_test_ids() {
        for needle in [
            "/app.js",
            "/app.css",
            "id=\"book-asks\"",
            "id=\"book-bids\"",
            "id=\"open-orders\"",
            "id=\"login-client-id\"",
            "id=\"login-client-secret\"",
            "id=\"login-submit\"",
            "id=\"order-side\"",
            "id=\"order-type\"",
            "id=\"order-price\"",
            "id=\"order-amount\"",
            "id=\"order-submit\"",
        ] {
            assert!(INDEX_HTML.contains(needle), "index.html lacks {needle}");
        }
    }
}
