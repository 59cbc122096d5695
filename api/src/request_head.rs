//! Limits on the request head (the URI and the headers) and the rule that an endpoint
//! without query parameters refuses a query string.
//!
//! hyper parses the head with wide limits of its own (a 64 KiB URI, 100 headers, a ~400 KB
//! read buffer) and answers past them with a bare status line: no problem body, no
//! `X-Request-Id`. Our limits sit well inside them, so everything a real client can send
//! over them gets a problem+json answer from [`crate::middleware::edge`] like any other
//! failure. Heads past hyper's own limits, and heads hyper cannot parse at all, get hyper's
//! own answer, which [`crate::bare_answers`] turns into a problem as well.
//!
//! A query string on an endpoint that takes none is an unknown field like any other
//! (API.md: 400 for unknown fields), so `GET /v1/pairs?limit=5` is a 400 rather than a
//! silently ignored parameter. Endpoints that take a query list their parameters in a
//! `deny_unknown_fields` struct, which reports the unknown ones itself. A method the route
//! does not serve is a 405 with or without a query (`PUT /v1/pairs?x=1` as `PUT /v1/pairs`).

use axum::extract::MatchedPath;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use feed::problem::Problem;

/// Longest request target (path and query) accepted, in bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header fields accepted in one request.
pub const MAX_HEADERS: usize = 64;
/// Most bytes of header names and values accepted in one request.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Every `/v1/` route (its path pattern) with the methods it serves, each `true` if it reads
/// a query string: a served method that reads none refuses one (HEAD goes with GET, as axum
/// serves it). A method the route does not serve is left to the router, which answers 405
/// with `Allow` whether or not a query came along: the query is not the request's mistake.
/// A `/v1/` route missing here refuses a query with every method. Web pages, the Swagger UI
/// and `/health`-style probes are not checked. A unit test holds this table to the OpenAPI
/// documents.
const ROUTES: &[(&str, &[(Method, bool)])] = &[
    ("/v1/currencies", &[(Method::GET, false)]),
    ("/v1/pairs", &[(Method::GET, false)]),
    ("/v1/users", &[(Method::POST, false)]),
    ("/v1/oauth2/token", &[(Method::POST, false)]),
    (
        "/v1/orders",
        &[
            (Method::GET, true),
            (Method::POST, false),
            (Method::DELETE, true),
        ],
    ),
    (
        "/v1/orders/by-client-id/{client_id}",
        &[(Method::GET, false)],
    ),
    (
        "/v1/orders/{id}",
        &[(Method::GET, false), (Method::DELETE, false)],
    ),
    ("/v1/fills", &[(Method::GET, true)]),
    ("/v1/wallet", &[(Method::GET, false)]),
    (
        "/v1/wallet/deposits",
        &[(Method::GET, true), (Method::POST, false)],
    ),
    (
        "/v1/wallet/withdrawals",
        &[(Method::GET, true), (Method::POST, false)],
    ),
    ("/v1/wallet/requests/{id}", &[(Method::GET, false)]),
    ("/v1/transactions", &[(Method::GET, true)]),
    ("/v1/transactions/{id}", &[(Method::GET, false)]),
    ("/v1/admin/requests", &[(Method::GET, true)]),
    ("/v1/admin/requests/{id}/approve", &[(Method::POST, false)]),
    ("/v1/admin/requests/{id}/reject", &[(Method::POST, false)]),
    ("/v1/admin/deposits", &[(Method::POST, false)]),
    ("/v1/admin/audit", &[(Method::GET, false)]),
    ("/v1/admin/users/{user_id}/wallet", &[(Method::GET, false)]),
    ("/v1/admin/currencies", &[(Method::POST, false)]),
    ("/v1/admin/pairs", &[(Method::POST, false)]),
    ("/v1/admin/pairs/{pair}", &[(Method::PATCH, false)]),
    // The feed's routes.
    ("/v1/ws", &[(Method::GET, true)]),
    ("/v1/tickers", &[(Method::GET, false)]),
    ("/v1/pairs/{pair}/ticker", &[(Method::GET, false)]),
    ("/v1/pairs/{pair}/book", &[(Method::GET, true)]),
    ("/v1/pairs/{pair}/trades", &[(Method::GET, true)]),
    ("/v1/pairs/{pair}/candles", &[(Method::GET, true)]),
    // The Swagger UI's document.
    ("/v1/openapi.json", &[(Method::GET, true)]),
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
    if let Some(route) = route
        && refuses_query(method, uri, route.as_str())
    {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
            "this endpoint takes no query parameters",
        ));
    }
    Ok(())
}

/// Whether the request carries a (non-empty) query that `method` on `route` does not read,
/// the method being one the route serves ([`ROUTES`]).
fn refuses_query(method: &Method, uri: &Uri, route: &str) -> bool {
    if uri.query().is_none_or(str::is_empty) || !uri.path().starts_with("/v1/") {
        return false;
    }
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    match ROUTES.iter().find(|(pattern, _)| *pattern == route) {
        Some((_, methods)) => methods.iter().any(|(m, takes)| m == method && !takes),
        None => true,
    }
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

    fn refuses(method: Method, uri: &str, route: &str) -> bool {
        refuses_query(&method, &uri.parse().expect("uri"), route)
    }

    #[test]
    fn a_query_is_refused_only_by_a_served_method_that_reads_none() {
        // Served, reads no query.
        assert!(refuses(Method::GET, "/v1/pairs?x=1", "/v1/pairs"));
        assert!(refuses(Method::HEAD, "/v1/pairs?x=1", "/v1/pairs"));
        assert!(refuses(Method::POST, "/v1/orders?x=1", "/v1/orders"));
        // Served, reads one.
        assert!(!refuses(Method::GET, "/v1/orders?x=1", "/v1/orders"));
        assert!(!refuses(Method::HEAD, "/v1/orders?x=1", "/v1/orders"));
        assert!(!refuses(Method::DELETE, "/v1/orders?x=1", "/v1/orders"));
        // Not served: the router's 405, query or not.
        assert!(!refuses(Method::PUT, "/v1/orders?x=1", "/v1/orders"));
        assert!(!refuses(Method::PUT, "/v1/pairs?x=1", "/v1/pairs"));
        assert!(!refuses(Method::HEAD, "/v1/users?x=1", "/v1/users"));
        let book = "/v1/pairs/{pair}/book";
        assert!(!refuses(Method::POST, "/v1/pairs/BTC_SEK/book?x=1", book));
        // No query, an empty one, or not under /v1/.
        assert!(!refuses(Method::GET, "/v1/pairs", "/v1/pairs"));
        assert!(!refuses(Method::GET, "/v1/pairs?", "/v1/pairs"));
        assert!(!refuses(Method::GET, "/health?x=1", "/health"));
        // A /v1/ route the table does not know refuses one.
        assert!(refuses(Method::PUT, "/v1/new?x=1", "/v1/new"));
    }

    /// [`ROUTES`] lists exactly the documented `/v1/` routes with their documented methods
    /// (the routes not in the documents are the WebSocket and the document itself), and a
    /// method whose operation documents query parameters reads a query.
    #[test]
    fn the_routes_table_matches_the_openapi_documents() {
        use std::collections::{BTreeMap, BTreeSet};
        // Path parameters are named differently in the documents (`{clientId}`).
        let shape = |path: &str| -> String {
            path.split('/')
                .map(|seg| if seg.starts_with('{') { "{}" } else { seg })
                .collect::<Vec<_>>()
                .join("/")
        };
        let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut documented_queries = BTreeSet::new();
        for doc in [crate::routes::openapi(), feed::openapi()] {
            let doc = serde_json::to_value(&doc).expect("document");
            for (path, item) in doc["paths"].as_object().expect("paths") {
                if !path.starts_with("/v1/") {
                    continue;
                }
                let path = shape(path);
                for (m, op) in item.as_object().expect("path item") {
                    let Ok(method) = Method::from_bytes(m.to_ascii_uppercase().as_bytes()) else {
                        continue;
                    };
                    let queried = op["parameters"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
                    if queried {
                        documented_queries.insert((path.clone(), method.to_string()));
                    }
                    documented
                        .entry(path.clone())
                        .or_default()
                        .insert(method.to_string());
                }
            }
        }
        let mut table: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut queries = BTreeSet::new();
        for (path, methods) in ROUTES {
            if matches!(*path, "/v1/ws" | "/v1/openapi.json") {
                continue;
            }
            let path = shape(path);
            assert!(!table.contains_key(&path), "{path} twice");
            let served = table.entry(path.clone()).or_default();
            for (m, takes) in *methods {
                served.insert(m.to_string());
                if *takes {
                    queries.insert((path.clone(), m.to_string()));
                }
            }
        }
        assert_eq!(table, documented);
        assert!(
            documented_queries.is_subset(&queries),
            "documented queries the table refuses: {:?}",
            documented_queries.difference(&queries).collect::<Vec<_>>()
        );
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
