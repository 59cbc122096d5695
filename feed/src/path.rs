//! The extractor of a route's one path parameter: the segment as a string.
//!
//! axum's `Path<String>` refuses a segment that is not UTF-8 once percent-decoded
//! (`/v1/orders/%FF`) with its own 400, which reached clients as a `VALIDATION_FAILED`
//! problem whose detail was just "Bad Request". No resource is named by such a segment
//! (pair symbols, ids and clientIds are ASCII), so it is an unknown resource in the path,
//! which API.md answers with a 404: the segment stands as U+FFFD, and the handler looks it
//! up like any other name and answers its own 404 (`UNKNOWN_PAIR`, `ORDER_NOT_FOUND`,
//! `NOT_FOUND`), after the checks that come before it (a missing token is still a 401).

use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

/// One path parameter; see the module doc.
#[derive(Debug)]
pub struct PathSegment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathSegment {
    type Rejection = PathRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PathRejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(segment)) => Ok(PathSegment(segment)),
            Err(PathRejection::FailedToDeserializePathParams(e))
                if matches!(e.kind(), ErrorKind::InvalidUtf8InPathParam { .. }) =>
            {
                Ok(PathSegment(char::REPLACEMENT_CHARACTER.to_string()))
            }
            Err(e) => Err(e),
        }
    }
}
