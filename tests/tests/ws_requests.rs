//! The shape of a client request on `GET /v1/ws` (README, Decisions): a message's `id` is a
//! string, an integer within 64 bits, or absent (null), and a reply echoes it unchanged;
//! anything else gets a `BAD_REQUEST` error without an id, and the connection stays open.

use bourse_tests::ws::{connect, next_text, send};
use bourse_tests::*;

/// An object, an array or a boolean as `id` is refused like a fraction is; they were echoed
/// whole in the pong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_is_not_a_string_or_an_integer_is_refused() {
    let s = TestServer::start().await;
    let mut ws = connect(&s.base).await;
    for id in [json!({"a": [1, 2]}), json!([1]), json!(true), json!(1.5)] {
        send(&mut ws, &json!({"op": "ping", "id": id})).await;
        let r = next_text(&mut ws).await;
        assert_eq!(r["op"], "error", "id {id}: {r}");
        assert_eq!(r["code"], "BAD_REQUEST", "id {id}: {r}");
        assert_eq!(r["id"], Value::Null, "id {id}: {r}");
    }
    for id in [
        json!("req-1"),
        json!(-5),
        json!(u64::MAX),
        json!(i64::MIN),
        Value::Null,
    ] {
        send(&mut ws, &json!({"op": "ping", "id": id})).await;
        assert_eq!(
            next_text(&mut ws).await,
            json!({"op": "pong", "id": id}),
            "id {id}"
        );
    }
}
