//! The bound on one account's open orders (`max_open_orders_per_account`): a GTC order
//! past it is a 409 `TOO_MANY_OPEN_ORDERS` that changes nothing (no hold, the clientId stays
//! free); orders that cannot rest (IOC) and other accounts are not held back; a fill or a
//! cancel frees a place; and the count survives a restart.

use bourse_tests::*;

const BOUND: u32 = 3;

fn config(dir: &std::path::Path) -> api::Config {
    let mut c = test_config(dir);
    c.max_open_orders_per_account = BOUND;
    c
}

async fn buy(
    s: &TestServer,
    u: &User,
    tif: &str,
    price: &str,
    client_id: &str,
) -> (StatusCode, Value) {
    s.order(
        u,
        json!({"pair": "BTC_SEK", "side": "buy", "type": "limit", "timeInForce": tif,
               "amount": "0.001", "price": price, "clientId": client_id}),
    )
    .await
}

async fn refused(s: &TestServer, u: &User, client_id: &str) {
    let (st, body) = buy(s, u, "GTC", "100", client_id).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "TOO_MANY_OPEN_ORDERS", "{body}");
    assert_eq!(body["maxOpenOrders"], BOUND, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_holds_at_most_its_bound_of_open_orders() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_with(config(tmp.path())).await;
    let admin = s.admin_token().await;
    let (a, b) = (s.register("alice").await, s.register("bob").await);
    s.fund(&admin, &a, "SEK", "1000").await;
    s.fund(&admin, &b, "SEK", "1000").await;
    s.fund(&admin, &b, "BTC", "1").await;

    let mut open = Vec::new();
    for (price, cid) in [("100", "g1"), ("101", "g2"), ("102", "g3")] {
        open.push(s.limit(&a, "BTC_SEK", "buy", "0.001", price, cid).await);
    }
    let wallet = s.get_ok("/v1/wallet", Some(&a.token)).await;
    refused(&s, &a, "g4").await;
    assert_eq!(
        s.get_ok("/v1/wallet", Some(&a.token)).await,
        wallet,
        "nothing held"
    );
    let (st, _) = s.get("/v1/orders/by-client-id/g4", Some(&a.token)).await;
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "the refused order was not booked"
    );

    // A retry of a booked order is told so, with its id, even at the bound.
    let (st, dup) = buy(&s, &a, "GTC", "100", "g1").await;
    assert_eq!(st, StatusCode::CONFLICT, "{dup}");
    assert_eq!(dup["code"], "DUPLICATE_CLIENT_ID", "{dup}");
    assert_eq!(dup["orderId"], open[0]["id"], "{dup}");

    // An IOC cannot rest: it is not held back. Nor is another account.
    let (st, ioc) = buy(&s, &a, "IOC", "100", "i1").await;
    assert_eq!(
        (st, &ioc["status"]),
        (StatusCode::CREATED, &json!("expired")),
        "{ioc}"
    );
    s.limit(&b, "BTC_SEK", "buy", "0.001", "99", "b1").await;

    // A fill frees a place (bob sells into alice's best bid), and so does a cancel; the
    // refused clientId is still free.
    s.limit(&b, "BTC_SEK", "sell", "0.001", "102", "b2").await;
    s.limit(&a, "BTC_SEK", "buy", "0.001", "100", "g4").await;
    refused(&s, &a, "g5").await;
    s.cancel(&a, id_of(&open[0])).await;
    s.limit(&a, "BTC_SEK", "buy", "0.001", "100", "g5").await;
    refused(&s, &a, "g6").await;
    s.stop().await;

    // The count is rebuilt at start from the open orders.
    let s = TestServer::start_with(config(tmp.path())).await;
    refused(&s, &a, "g6").await;
    let (st, ioc) = buy(&s, &a, "IOC", "100", "i2").await;
    assert_eq!(st, StatusCode::CREATED, "{ioc}");
    s.stop().await;
}
