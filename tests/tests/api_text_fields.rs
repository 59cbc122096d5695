//! Free-text fields (a withdrawal's destination, a rejection's reason, a currency's display
//! name) refuse control characters, as a user's name does, and count their length in
//! characters: a 400 that changes nothing.

use bourse_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_text_fields_refuse_control_characters() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let u = s.register("texts").await;
    s.fund(&admin, &u, "SEK", "100").await;

    for (i, bad) in ["SE12\u{0}34", "SE12\n34", "\u{1b}[31mSE1234", "SE\u{7f}"]
        .into_iter()
        .enumerate()
    {
        let body = json!({"currency": "SEK", "amount": "1", "externalId": format!("w{i}"),
            "destination": bad});
        let (status, v) = s
            .post("/v1/wallet/withdrawals", Some(&u.token), &body)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {v}");
        assert_eq!(v["code"], "VALIDATION_FAILED", "{v}");
        assert!(v["detail"].as_str().unwrap().contains("destination"), "{v}");
    }
    // Nothing was held.
    let (_, w) = s.get("/v1/wallet", Some(&u.token)).await;
    let sek = w["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["currency"] == "SEK")
        .unwrap()
        .clone();
    assert_eq!(sek["held"], "0.00", "{w}");
    // 256 characters of two bytes each are fine: the bound counts characters.
    let body = json!({"currency": "SEK", "amount": "1", "externalId": "wide",
        "destination": "é".repeat(256)});
    let (status, v) = s
        .post("/v1/wallet/withdrawals", Some(&u.token), &body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();

    // A rejection's reason.
    let (status, v) = s
        .post(
            &format!("/v1/admin/requests/{id}/reject"),
            Some(&admin),
            &json!({"reason": "bad\u{0}"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = s
        .get(&format!("/v1/wallet/requests/{id}"), Some(&u.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "pending", "{v}");

    // A currency's display name, shown on every public list.
    let (status, v) = s
        .post(
            "/v1/admin/currencies",
            Some(&admin),
            &json!({"currency": "QQQ", "minorAmountDecimals": 2, "displayName": "Q\u{0}Q"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (_, list) = s.get("/v1/currencies", None).await;
    assert!(
        !list
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["currency"] == "QQQ"),
        "{list}"
    );
    s.stop().await;
}
