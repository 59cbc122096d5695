//! Unsubscribing from one channel of several leaves the others exactly as they were. A
//! connection's subscriptions are a list, and the connection keeps indexes into it (the
//! subscriptions whose frames go out with the next write): removing one from the middle
//! shifts the ones after it, so a removal that left stale indexes, or took the wrong
//! entries, would silence or mix up the channels still subscribed. Here `ticker` sits
//! between `trades` and `book`; after it goes, a crossing pair of orders must still bring
//! the trade and gap-free book updates, and no ticker.

use std::time::Duration;

use bourse_tests::ws::{TEXT, connect, read_frame, request};
use bourse_tests::*;
use tokio::net::TcpStream;

/// The next text message, or None when none comes within `within` (pings skipped).
async fn within(ws: &mut TcpStream, within: Duration) -> Option<Value> {
    tokio::time::timeout(within, async {
        loop {
            let (opcode, payload) = read_frame(ws).await.expect("a frame");
            if opcode == TEXT {
                return serde_json::from_slice(&payload).expect("JSON message");
            }
        }
    })
    .await
    .ok()
}

/// The next message, which must come within 10 s; a ticker fails the test.
async fn next_no_ticker(ws: &mut TcpStream) -> Value {
    let m = within(ws, Duration::from_secs(10))
        .await
        .expect("a message within 10 s");
    assert_ne!(m["channel"], "ticker:BTC_SEK", "unsubscribed, yet: {m}");
    m
}

/// Checks a book message follows `seq` without a gap and returns its seq.
fn book_seq(m: &Value, seq: u64) -> u64 {
    let s = m["seq"].as_u64().expect("book seq");
    assert_eq!(s, seq + 1, "a gap in the book: {m}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_the_middle_channel_keeps_the_others_delivering() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let seller = s.register("seller").await;
    let buyer = s.register("buyer").await;
    s.fund(&admin, &seller, "BTC", "1").await;
    s.fund(&admin, &buyer, "SEK", "10000").await;

    let mut ws = connect(&s.base).await;
    let channels = json!(["trades:BTC_SEK", "ticker:BTC_SEK", "book:BTC_SEK"]);
    let r = request(
        &mut ws,
        1,
        json!({"op": "subscribe", "id": 1, "channels": channels}),
    )
    .await;
    assert_eq!(r["op"], "subscribed", "{r}");
    // The snapshot (a ticker sent at once, if any, is skipped: still subscribed then).
    let mut seq = loop {
        let m = within(&mut ws, Duration::from_secs(10))
            .await
            .expect("the book snapshot");
        if m["channel"] == "book:BTC_SEK" {
            assert_eq!(m["type"], "snapshot", "{m}");
            break m["seq"].as_u64().expect("seq");
        }
    };
    let r = request(
        &mut ws,
        2,
        json!({"op": "unsubscribe", "id": 2, "channels": ["ticker:BTC_SEK"]}),
    )
    .await;
    assert_eq!(r["op"], "unsubscribed", "{r}");

    // A resting ask (the top of the book moves: a ticker for its subscribers).
    s.limit(&seller, "BTC_SEK", "sell", "0.1", "1000", "ask")
        .await;
    let m = next_no_ticker(&mut ws).await;
    assert_eq!(m["channel"], "book:BTC_SEK", "{m}");
    assert_eq!(m["type"], "update", "{m}");
    seq = book_seq(&m, seq);
    assert_eq!(m["data"]["asks"][0][0], "1000.00", "{m}");

    // The crossing bid: one trade, and the ask level goes.
    s.limit(&buyer, "BTC_SEK", "buy", "0.1", "1000", "bid")
        .await;
    let (mut trades, mut emptied) = (0, false);
    while trades == 0 || !emptied {
        let m = next_no_ticker(&mut ws).await;
        match m["channel"].as_str() {
            Some("trades:BTC_SEK") => {
                trades += 1;
                assert_eq!(m["data"]["price"], "1000.00", "{m}");
            }
            Some("book:BTC_SEK") => {
                seq = book_seq(&m, seq);
                emptied |= m["data"]["asks"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|l| l[0] == "1000.00" && l[1] == "0"));
            }
            _ => panic!("unexpected message {m}"),
        }
    }
    assert_eq!(trades, 1);
    // Nothing more: in particular no ticker, which each order moved.
    if let Some(m) = within(&mut ws, Duration::from_millis(500)).await {
        panic!("unexpected message {m}");
    }
    // Gone before the stop (a client that never answers the close would hold it 10 s).
    drop(ws);
    s.stop().await;
}
