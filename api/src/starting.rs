//! The server's address answers while the server starts.
//!
//! `bourse serve` binds its address first, then recovers (snapshot, journal replay, a
//! history store rebuilt from the journal when it is missing): on a large journal that takes
//! seconds, and a connection accepted meanwhile used to wait unanswered, so a liveness probe
//! with a short timeout took a recovering server for a dead one and restarted it, again and
//! again. Until the server is ready, this answers on the same socket: `GET /health` is 200
//! `{"status":"starting"}` (alive), everything else a 503 `SERVICE_UNAVAILABLE` problem with
//! `Retry-After: 1` (`/ready` included: not ready yet). Every answer closes its connection,
//! so a client's next request reaches the real server once it serves.

use std::future::Future;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use feed::problem::{Problem, REQUEST_ID_HEADER};
use tokio::net::TcpListener;

use crate::connections::ConnLimits;
use crate::error::ApiError;
use crate::middleware::request_id_of;

/// Answers on `listener` as the module doc says until `ready` completes, then stops
/// accepting, lets the answers in flight finish and returns (dropping `listener`). The
/// server's connection bound and header timeout hold here too ([`crate::connections`]): a
/// start is when a crowd of clients reconnects.
pub async fn serve(
    listener: TcpListener,
    limits: ConnLimits,
    ready: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/health", axum::routing::get(health))
        .fallback(unavailable)
        .layer(axum::middleware::from_fn(request_id_and_close));
    // Refusals while starting are not counted anywhere `/metrics` reads: it answers only
    // once the server is ready.
    let refused = Default::default();
    crate::connections::serve(listener, app, limits, refused, ready).await;
}

async fn health() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"starting\"}",
    )
}

/// Every other request: the 503 problem, rendered with its request id and path by
/// [`request_id_and_close`] as the real server's edge renders its problems.
async fn unavailable() -> ApiError {
    ApiError::retry_shortly("the server is starting (recovering its journal); retry shortly")
}

/// `X-Request-Id` on every answer (the client's when valid, as the real server does), a
/// problem rendered with it and the path, and `Connection: close`.
async fn request_id_and_close(req: Request, next: Next) -> Response {
    let id = request_id_of(&req);
    let path = req.uri().path().to_string();
    let mut response = next.run(req).await;
    if let Some(p) = response.extensions().get::<Problem>().cloned() {
        response = p.render(id.to_str().unwrap_or_default(), &path);
    }
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID_HEADER, id);
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
