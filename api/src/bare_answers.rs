//! hyper's own answers to request heads it cannot parse, rewritten as problems.
//!
//! When hyper cannot parse a request head (a header line without a colon, a request line
//! that is not HTTP, a `Content-Length` that is not a number, a head past its own size
//! limits) it answers by itself, before any of our code sees a request: a bare status line
//! with `content-length: 0`, no problem+json body and no `X-Request-Id`, then it closes the
//! connection. hyper offers no hook for that answer (its `on_error` picks 400, 414 or 431 and
//! writes the head), so the connection's writer ([`crate::connections`]) recognises it on the
//! way out and sends the problem the edge would have rendered instead: same status, a
//! `code`, a new request id, `Connection: close`.
//!
//! Recognising it is safe because every answer of ours carries `x-request-id` (the edge
//! middleware sets it on every response, the start-up answerer and the connection refusal
//! too), and a response body never begins with a status line: a write that is a whole
//! response head, 4xx, with `content-length: 0` and no `x-request-id`, can only be hyper's.

use axum::http::StatusCode;

/// The status of `head` when it is one of hyper's bare answers (see the module doc).
pub fn status_of(head: &[u8]) -> Option<StatusCode> {
    let rest = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    // A whole head and nothing after it, as hyper writes its answer; a few hundred bytes.
    if head.len() > 512 || !head.ends_with(b"\r\n\r\n") || rest.first() != Some(&b'4') {
        return None;
    }
    let status = StatusCode::from_bytes(rest.get(..3)?).ok()?;
    let lower = head.to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    (has(b"\r\ncontent-length: 0\r\n") && !has(b"\r\nx-request-id:")).then_some(status)
}

/// The problem response that replaces hyper's bare answer with `status`: the whole response,
/// head and body, closing the connection as hyper's did.
pub fn problem_response(status: StatusCode) -> Vec<u8> {
    let (code, detail) = match status {
        StatusCode::URI_TOO_LONG => ("URI_TOO_LONG", "the request target is too long"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("HEADERS_TOO_LARGE", "the request head is too large")
        }
        _ => (
            "VALIDATION_FAILED",
            "the request is not valid HTTP/1.1 (request line or header fields)",
        ),
    };
    closing_response(&feed::problem::Problem::new(status, code, detail))
}

/// `problem` as a whole HTTP/1.1 response written outside hyper (no request was read, or
/// hyper's own answer is being replaced): a new request id, `Retry-After` when the problem
/// has one, and `Connection: close`. Also the connection refusal's
/// ([`crate::connections`]).
pub fn closing_response(problem: &feed::problem::Problem) -> Vec<u8> {
    let id = crate::middleware::new_request_id();
    let body = problem.body(&id, "/");
    let retry_after = problem
        .retry_after_secs
        .map(|s| format!("retry-after: {s}\r\n"))
        .unwrap_or_default();
    let mut response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\nx-request-id: {id}\r\n\
         {retry_after}connection: close\r\ncontent-length: {}\r\n\r\n",
        problem.status.as_u16(),
        problem.status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bare_answers_are_recognised() {
        let bare = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\
                     date: Sun, 06 Dec 2026 23:21:05 GMT\r\n\r\n";
        assert_eq!(status_of(bare), Some(StatusCode::BAD_REQUEST));
        let too_large = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
                          content-length: 0\r\n\r\n";
        assert_eq!(
            status_of(too_large),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        // Ours: an x-request-id, or a body, or not an error.
        let ours = b"HTTP/1.1 404 Not Found\r\nx-request-id: abc\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(status_of(ours), None);
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}";
        assert_eq!(status_of(with_body), None);
        let ok = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(status_of(ok), None);
        assert_eq!(status_of(b"{\"HTTP/1.1 400 \"}"), None);
        assert_eq!(status_of(b"HTTP/1.1 4"), None);
    }

    #[test]
    fn the_rewritten_answer_is_a_problem_that_closes() {
        let r = String::from_utf8(problem_response(StatusCode::URI_TOO_LONG)).expect("utf-8");
        let (head, body) = r.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
        let problem: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(problem["status"], 414);
        assert_eq!(problem["code"], "URI_TOO_LONG");
        let id = head
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .expect("a request id");
        assert_eq!(problem["requestId"], id);
    }
}
