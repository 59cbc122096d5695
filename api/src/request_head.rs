//! Limits on the request head (the URI and the headers) and the rule that an endpoint
//! without query parameters refuses a query string.
//!
//! hyper parses the head with wide limits of its own (a 64 KiB URI, 100 headers, a ~400 KB
//! read buffer) and answers past them with a bare status line: no problem body, no
//! `X-Request-Id`. Our limits sit well inside them, so everything a real client can send
//! over them gets a problem+json answer from [`crate::middleware::edge`] like any other
//! failure; only heads past hyper's own limits still get hyper's bare 414 or 431.
//!
//! A query string on an endpoint that takes none is an unknown field like any other
//! (API.md: 400 for unknown fields), so `GET /v1/pairs?limit=5` is a 400 rather than a
//! silently ignored parameter. Endpoints that take a query list their parameters in a
//! `deny_unknown_fields` struct, which reports the unknown ones itself.

use axum::extract::MatchedPath;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use feed::problem::Problem;

/// Longest request target (path and query) accepted, in bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header fields accepted in one request.
pub const MAX_HEADERS: usize = 64;
/// Most bytes of header names and values accepted in one request.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The routes (method and path pattern) that read a query string; every other `/v1/` route
/// refuses one (HEAD goes with GET, as axum serves it). Web pages, the Swagger UI and
/// `/health`-style probes are not checked. A method the route does not serve with a query is
/// a 400 rather than a 405: the request is wrong twice and the first check answers.
const TAKES_QUERY: &[(Method, &str)] = &[
    (Method::GET, "/v1/orders"),
    (Method::DELETE, "/v1/orders"),
    (Method::GET, "/v1/fills"),
    (Method::GET, "/v1/transactions"),
    (Method::GET, "/v1/wallet/deposits"),
    (Method::GET, "/v1/wallet/withdrawals"),
    (Method::GET, "/v1/admin/requests"),
    (Method::GET, "/v1/pairs/{pair}/book"),
    (Method::GET, "/v1/pairs/{pair}/trades"),
    (Method::GET, "/v1/pairs/{pair}/candles"),
    (Method::GET, "/v1/ws"),
    (Method::GET, "/v1/openapi.json"),
];

/// `Err` with the problem to answer when the head breaks a limit or carries a query the
/// route does not take.
pub fn check(
    method: &Method,
    uri: &Uri,
    route: Option<&MatchedPath>,
    headers: &HeaderMap,
) -> Result<(), Problem> {
    let target_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > MAX_URI_BYTES {
        return Err(Problem::new(
            StatusCode::URI_TOO_LONG,
            "URI_TOO_LONG",
            format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        ));
    }
    if headers.len() > MAX_HEADERS {
        return Err(headers_too_large(format!(
            "more than {MAX_HEADERS} header fields"
        )));
    }
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(headers_too_large(format!(
            "header fields longer than {MAX_HEADER_BYTES} bytes in all"
        )));
    }
    if let Some(query) = uri.query()
        && !query.is_empty()
        && uri.path().starts_with("/v1/")
        && let Some(route) = route
        && !TAKES_QUERY.iter().any(|(m, p)| {
            (m == method || (method == Method::HEAD && m == Method::GET)) && *p == route.as_str()
        })
    {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
            "this endpoint takes no query parameters",
        ));
    }
    Ok(())
}

fn headers_too_large(detail: String) -> Problem {
    Problem::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "HEADERS_TOO_LARGE",
        detail,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn check_uri(uri: &str) -> Result<(), Problem> {
        check(
            &Method::GET,
            &uri.parse().expect("uri"),
            None,
            &HeaderMap::new(),
        )
    }

    #[test]
    fn uri_limit_is_inclusive() {
        let at = format!("/v1/x?{}", "a".repeat(MAX_URI_BYTES - 6));
        assert!(check_uri(&at).is_ok());
        let over = format!("{at}b");
        let p = check_uri(&over).expect_err("one byte over");
        assert_eq!(p.status, StatusCode::URI_TOO_LONG);
    }

    #[test]
    fn header_count_and_size_limits() {
        let uri: Uri = "/health".parse().expect("uri");
        let mut h = HeaderMap::new();
        for i in 0..MAX_HEADERS {
            h.insert(
                axum::http::HeaderName::try_from(format!("x-h{i}")).expect("name"),
                HeaderValue::from_static("1"),
            );
        }
        assert!(check(&Method::GET, &uri, None, &h).is_ok());
        h.insert("x-one-more", HeaderValue::from_static("1"));
        let p = check(&Method::GET, &uri, None, &h).expect_err("too many");
        assert_eq!(p.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

        let mut h = HeaderMap::new();
        let big = "v".repeat(MAX_HEADER_BYTES);
        h.insert("x-big", HeaderValue::try_from(big).expect("value"));
        let p = check(&Method::GET, &uri, None, &h).expect_err("too long");
        assert_eq!(p.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
}
