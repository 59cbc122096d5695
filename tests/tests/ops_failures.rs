//! What clients and the operator are told when the disk fails under the server.
//!
//! The history store (SQLite) stopping on a write error (a full disk) left a server that
//! answered `/ready` 200, every history read with a 500 `INTERNAL_ERROR` (and an error line
//! in the log per read), and every sign-in with 401 `invalid_client`, so clients took their
//! credentials for wrong. A journal that cannot be written stopped the engine for good, and
//! `/ready` said only "not ready" while orders were told "the engine is stopping"; `/health`
//! still answered 200, so a supervisor probing liveness never restarted the process.

use bourse_tests::*;

async fn token_of(s: &TestServer, u: &User) -> (StatusCode, Value) {
    s.token(&u.client_id, &u.secret, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_history_store_is_reported_not_hidden() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let a = s.register("alice").await;
    s.fund(&admin, &a, "SEK", "1000").await;
    let placed = s.limit(&a, "BTC_SEK", "buy", "0.001", "1000", "o1").await;
    // What the store thread does on a write error (a full disk): it stops for good.
    s.state().model.fail_store();
    let (st, ready) = s.get("/ready", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["code"], "SERVICE_UNAVAILABLE");
    let detail = ready["detail"].as_str().unwrap();
    assert!(detail.contains("history store"), "{detail}");
    assert!(detail.contains("restart"), "{detail}");
    // Reads are a 503 saying what is wrong, never an internal error.
    for path in [
        format!("/v1/orders/{}", id_of(&placed)),
        "/v1/orders".to_string(),
        "/v1/transactions".to_string(),
    ] {
        let (st, body) = s.get(&path, Some(&a.token)).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert_eq!(body["code"], "SERVICE_UNAVAILABLE", "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains("history"),
            "{body}"
        );
    }
    // A sign-in with good credentials is not told its credentials are wrong.
    let (st, body) = token_of(&s, &a).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_ne!(body["error"], "invalid_client", "{body}");
    // A restart rebuilds what the store missed from the journal, and all is well again.
    let s = s.restart().await;
    let (st, ready) = s.get("/ready", None).await;
    assert_eq!(st, StatusCode::OK, "{ready}");
    let (st, body) = token_of(&s, &a).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let (st, order) = s
        .get(&format!("/v1/orders/{}", id_of(&placed)), Some(token))
        .await;
    assert_eq!(st, StatusCode::OK, "{order}");
    s.stop().await;
}

/// Needs root (a tmpfs mount): the journal's directory on a 256 KiB tmpfs that orders fill.
/// Skips, saying why, where it cannot mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_cannot_be_written_stops_the_engine_loudly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mnt = tmp.path().join("small");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        println!("SKIP: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    std::fs::create_dir_all(mnt.join("journal")).unwrap();
    std::os::unix::fs::symlink(mnt.join("journal"), dir.join("journal")).unwrap();
    let s = TestServer::start_with(test_config(&dir)).await;
    let admin = s.admin_token().await;
    let a = s.register("alice").await;
    s.fund(&admin, &a, "SEK", "100000000").await;
    let mut acked = Vec::new();
    let mut refused = None;
    // 256 KiB of journal is a few thousand of orders; every one is acknowledged or refused.
    for i in 0..100_000 {
        let (st, body) = s
            .order(
                &a,
                json!({"pair": "BTC_SEK", "side": "buy", "type": "limit", "amount": "0.001",
                       "price": "1000", "clientId": format!("c{i}-{}", "x".repeat(50))}),
            )
            .await;
        match st {
            StatusCode::CREATED => acked.push(id_of(&body).to_string()),
            _ => {
                refused = Some((st, body));
                break;
            }
        }
    }
    let (st, body) = refused.expect("the journal fills up");
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // Later orders are told the engine has stopped (not that it is stopping), with no path.
    let (st, body) = s
        .order(
            &a,
            json!({"pair": "BTC_SEK", "side": "buy", "type": "limit", "amount": "0.001",
                   "price": "1000", "clientId": "after"}),
        )
        .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("stopped") && detail.contains("restart"),
        "{detail}"
    );
    assert!(!detail.contains('/'), "a path reached the client: {detail}");
    let (st, ready) = s.get("/ready", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    let detail = ready["detail"].as_str().unwrap();
    assert!(detail.contains("storage failure"), "{detail}");
    assert!(!detail.contains(&mnt.display().to_string()), "{detail}");
    // Liveness fails too, so a supervisor restarts the process; the dashboard shows it.
    let (st, health) = s.get("/health", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["code"], "SERVICE_UNAVAILABLE", "{health}");
    let detail = health["detail"].as_str().unwrap();
    assert!(detail.contains("restart"), "{detail}");
    let (st, text) = s.get_text("/metrics").await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        text.lines().any(|l| l == "bourse_engine_failed 1"),
        "no failed gauge:\n{text}"
    );
    // Stopping reports the failure; with room again, every acknowledged order is there.
    let stopped = s.stop_result().await;
    assert!(
        matches!(&stopped, Err(api::server_error::ServerError::Pipeline(_))),
        "{stopped:?}"
    );
    let _ = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&mnt)
        .status();
    let s = TestServer::start_with(test_config(&dir)).await;
    let (_, token) = token_of(&s, &a).await;
    let token = token["access_token"].as_str().unwrap().to_string();
    for id in &acked {
        let (st, body) = s.get(&format!("/v1/orders/{id}"), Some(&token)).await;
        assert_eq!(st, StatusCode::OK, "acknowledged order {id} lost: {body}");
    }
    s.assert_audit_ok(&s.admin_token().await).await;
    s.stop().await;
}

/// A damaged history store (here: garbage where its header was) stopped the start with
/// "history store: file is not a database", naming neither the file nor the remedy, though
/// the journal holds everything the store does. It is set aside and rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_history_store_is_set_aside_and_rebuilt() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let a = s.register("alice").await;
    s.fund(&admin, &a, "SEK", "1000").await;
    let placed = s.limit(&a, "BTC_SEK", "buy", "0.001", "1000", "o1").await;
    let s = s
        .restart_with(|dir| {
            let db = dir.join("history.sqlite");
            let mut bytes = std::fs::read(&db).unwrap();
            bytes[..100].copy_from_slice(&[0x5a; 100]);
            std::fs::write(&db, bytes).unwrap();
        })
        .await;
    let aside: Vec<String> = std::fs::read_dir(&s.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("history.sqlite.damaged-"))
        .collect();
    assert!(!aside.is_empty(), "the damaged store is kept aside");
    let (st, token) = token_of(&s, &a).await;
    assert_eq!(st, StatusCode::OK, "{token}");
    let token = token["access_token"].as_str().unwrap();
    let (st, order) = s
        .get(&format!("/v1/orders/{}", id_of(&placed)), Some(token))
        .await;
    assert_eq!(st, StatusCode::OK, "{order}");
    s.assert_audit_ok(&s.admin_token().await).await;
    s.stop().await;
}
