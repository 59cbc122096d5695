//! A history store (SQLite) damaged in the middle of its file, not in its header: pages
//! overwritten with garbage while the server was stopped, found by a read or by the writer
//! once the server runs again (the start opens the file without reading those pages).
//!
//! Before: a read that reached a bad page was a 500 `INTERNAL_ERROR` (an error line per
//! read) while other reads answered as if all was well, `/ready` stayed 200; the writer
//! meeting one stopped the store "after a write error", and the restart `/ready` asked for
//! reopened the same file, replayed into it and met the same page again, at every start.
//! Now the first such error stops the store (history reads 503, `/ready` 503, the
//! `bourse_history_store_damaged` gauge 1), orders are still accepted, and a marker in the
//! data dir makes the next start set the file aside and rebuild it from the journal.
//!
//! The market data store (`marketdata.sqlite`) damaged the same way used to stop every
//! start ("file is not a database" or a malformed table at load); now the start sets it
//! aside and the journal's replay rebuilds it (last test).

use std::path::Path;

use bourse_tests::*;

/// A store with some history: alice sells and bob buys `pairs` times at one price, so every
/// order is filled (closed) and each trade has two fills and a few transactions. Returns the
/// server, the two accounts and alice's first order.
async fn traded(pairs: usize) -> (TestServer, String, User, User, Value) {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    s.fund(&admin, &a, "BTC", "10").await;
    s.fund(&admin, &b, "SEK", "100000").await;
    let mut first = None;
    for i in 0..pairs {
        let sold = s
            .limit(&a, "BTC_SEK", "sell", "0.001", "1000", &format!("s{i}"))
            .await;
        first.get_or_insert(sold);
        s.limit(&b, "BTC_SEK", "buy", "0.001", "1000", &format!("b{i}"))
            .await;
    }
    (s, admin, a, b, first.expect("an order"))
}

/// The pages (SQLite's 1-based numbers) of the table or index `name` in the store at `db`,
/// leaves only or all of them, in the b-tree's order (the first leaf holds its lowest keys).
/// The store's WAL is checkpointed into the file first, so the pages hold what is stored.
fn pages_of(db: &Path, name: &str, leaves_only: bool) -> Vec<i64> {
    let conn = rusqlite::Connection::open(db).expect("open the store");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    let kind = if leaves_only { "leaf" } else { "%" };
    let pages = conn
        .prepare("SELECT pageno FROM dbstat WHERE name = ?1 AND pagetype LIKE ?2 ORDER BY path")
        .expect("dbstat")
        .query_map([name, kind], |r| r.get(0))
        .expect("pages")
        .collect::<Result<Vec<i64>, _>>()
        .expect("pages");
    assert!(!pages.is_empty(), "no pages of {name}");
    pages
}

/// Overwrites the 4 KiB pages `pages` of the file `db` with garbage (a few KiB past its
/// first pages: its header is left alone, so SQLite opens it without complaint).
fn overwrite(db: &Path, pages: &[i64]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(db)
        .expect("open");
    for &p in pages {
        assert!(p > 2, "page {p} is the header's");
        f.seek(SeekFrom::Start((p as u64 - 1) * 4096))
            .expect("seek");
        f.write_all(&[0x5a; 4096]).expect("write");
    }
    f.sync_all().expect("sync");
}

/// The names in the data dir that start with `prefix`.
fn files(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

async fn sign_in(s: &TestServer, u: &User) -> User {
    let (st, body) = s.token(&u.client_id, &u.secret, None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    User {
        token: body["access_token"].as_str().expect("token").to_string(),
        ..u.clone()
    }
}

/// A history read refused because the store is damaged: a 503 that says so, with nothing
/// of SQLite or the file in it.
fn assert_damaged_answer(what: &str, st: StatusCode, body: &Value) {
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
    assert_eq!(body["code"], "SERVICE_UNAVAILABLE", "{what}: {body}");
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains("damaged"), "{what}: {detail}");
    for internal in ["malformed", "SQLite", "sqlite", "/", "disk image"] {
        assert!(!detail.contains(internal), "{what}: {internal} in {detail}");
    }
}

async fn gauge(s: &TestServer, name: &str) -> String {
    let (st, text) = s.get_text("/metrics").await;
    assert_eq!(st, StatusCode::OK);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// After the restart: the store was set aside and rebuilt, every user's fills read and
/// their transactions add up to their wallets, the books balance.
async fn assert_rebuilt(s: &TestServer, users: &[&User]) {
    assert_eq!(files(&s.dir, "history.sqlite.rebuild").len(), 0);
    let aside = files(&s.dir, "history.sqlite.damaged-");
    assert!(
        aside.iter().any(|n| n.ends_with(".reason")),
        "the damaged store and why are kept aside: {aside:?}"
    );
    let (st, ready) = s.get("/ready", None).await;
    assert_eq!(st, StatusCode::OK, "{ready}");
    assert_eq!(gauge(s, "bourse_history_store_damaged").await, "0");
    for u in users {
        let u = sign_in(s, u).await;
        let (st, list) = s.get("/v1/fills?limit=1000", Some(&u.token)).await;
        assert_eq!(st, StatusCode::OK, "{list}");
        s.assert_transactions_match_wallet(&u).await;
    }
    s.assert_audit_ok(&s.admin_token().await).await;
}

/// Alice's order `id`, read after the rebuild.
async fn order_of(s: &TestServer, a: &User, id: &str) -> Value {
    let a = sign_in(s, a).await;
    let (st, order) = s.get(&format!("/v1/orders/{id}"), Some(&a.token)).await;
    assert_eq!(st, StatusCode::OK, "{order}");
    order
}

/// A bad page under alice's oldest orders, found by the first read of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_page_found_by_a_read_stops_the_store_and_the_next_start_rebuilds_it() {
    let (s, _admin, a, b, first) = traded(300).await;
    let first = id_of(&first).to_string();
    let s = s
        .restart_with(|dir| {
            let db = dir.join("history.sqlite");
            let leaves = pages_of(&db, "orders", true);
            assert!(leaves.len() > 4, "{leaves:?}");
            overwrite(&db, &leaves[..1]);
        })
        .await;
    // The start read nothing of those pages.
    let (st, ready) = s.get("/ready", None).await;
    assert_eq!(st, StatusCode::OK, "{ready}");
    let a = sign_in(&s, &a).await;
    let (st, body) = s.get(&format!("/v1/orders/{first}"), Some(&a.token)).await;
    assert_damaged_answer("the first read", st, &body);
    // Every read now, those that would miss the bad page too: history does not look whole
    // to one client and broken to the next.
    for path in [
        format!("/v1/orders/{first}"),
        "/v1/transactions".to_string(),
        "/v1/orders?status=open".to_string(),
    ] {
        let (st, body) = s.get(&path, Some(&a.token)).await;
        assert_damaged_answer(&path, st, &body);
    }
    let (st, ready) = s.get("/ready", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    let detail = ready["detail"].as_str().expect("detail");
    assert!(
        detail.contains("damaged") && detail.contains("restart"),
        "{detail}"
    );
    assert_eq!(gauge(&s, "bourse_history_store_damaged").await, "1");
    assert_eq!(gauge(&s, "bourse_history_store_failed").await, "1");
    // A new account waits for the restart: its id is chosen above the store's highest, and
    // a stopped store may not have told the start that.
    let (st, body) = s
        .post("/v1/users", None, &serde_json::json!({ "name": "late" }))
        .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("restarts")),
        "{body}"
    );
    // The engine and the journal are fine: orders are taken, and an open one cancelled.
    let placed = s
        .limit(&a, "BTC_SEK", "sell", "0.001", "2000", "after")
        .await;
    let placed = id_of(&placed).to_string();
    let (st, cancelled) = s
        .delete(&format!("/v1/orders/{placed}"), Some(&a.token))
        .await;
    assert_eq!(st, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let marker = std::fs::read_to_string(s.dir.join("history.sqlite.rebuild"))
        .expect("the rebuild marker is left for the next start");
    assert!(marker.contains("read"), "{marker}");
    let s = s.restart().await;
    assert_rebuilt(&s, &[&a, &b]).await;
    assert_eq!(order_of(&s, &a, &first).await["status"], "filled");
    assert_eq!(order_of(&s, &a, &placed).await["status"], "cancelled");
    s.stop().await;
}

/// A bad index under the account fills, which no start reads: found by the writer when
/// the next trade's fills are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_page_found_by_the_writer_is_rebuilt_at_the_next_start() {
    let (s, _admin, a, b, first) = traded(300).await;
    let first = id_of(&first).to_string();
    let s = s
        .restart_with(|dir| {
            let db = dir.join("history.sqlite");
            overwrite(&db, &pages_of(&db, "fills_account_trade", false));
        })
        .await;
    let (st, ready) = s.get("/ready", None).await;
    assert_eq!(st, StatusCode::OK, "{ready}");
    let a = sign_in(&s, &a).await;
    let b = sign_in(&s, &b).await;
    // A trade: its fills go to the bad index.
    let sold = s.limit(&a, "BTC_SEK", "sell", "0.001", "1000", "t-s").await;
    s.limit(&b, "BTC_SEK", "buy", "0.001", "1000", "t-b").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (st, ready) = s.get("/ready", None).await;
        if st == StatusCode::SERVICE_UNAVAILABLE {
            let detail = ready["detail"].as_str().expect("detail");
            assert!(detail.contains("damaged"), "{detail}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the writer did not report the damage: {ready}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(gauge(&s, "bourse_history_store_damaged").await, "1");
    let (st, body) = s.get(&format!("/v1/orders/{first}"), Some(&a.token)).await;
    assert_damaged_answer("a read after the writer's damage", st, &body);
    // Orders still taken while the store is down.
    let later = s
        .limit(&a, "BTC_SEK", "sell", "0.001", "1000", "later")
        .await;
    s.limit(&b, "BTC_SEK", "buy", "0.001", "1000", "later")
        .await;
    let marker = std::fs::read_to_string(s.dir.join("history.sqlite.rebuild")).expect("marker");
    assert!(marker.contains("writer"), "{marker}");
    let s = s.restart().await;
    assert_rebuilt(&s, &[&a, &b]).await;
    for id in [first.as_str(), id_of(&sold), id_of(&later)] {
        assert_eq!(order_of(&s, &a, id).await["status"], "filled");
    }
    let a = sign_in(&s, &a).await;
    let (_, fills) = s.get("/v1/fills?limit=1000", Some(&a.token)).await;
    assert_eq!(fills["meta"]["totalCount"], 302, "{}", fills["meta"]);
    s.stop().await;
}

/// With `history_check_on_start`, the start runs `PRAGMA quick_check` and sets a store
/// that fails it aside before serving anything from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_on_start_sets_a_bad_page_aside_before_serving() {
    let (s, _admin, a, _b, first) = traded(100).await;
    let first = id_of(&first).to_string();
    let kept = tempfile::tempdir().expect("tempdir");
    let copy = kept.path().to_path_buf();
    // Stopped, damaged, copied; then started from the copy with the check on.
    s.restart_with(|dir| {
        let db = dir.join("history.sqlite");
        let leaves = pages_of(&db, "orders", true);
        overwrite(&db, &leaves[..1]);
        copy_dir(dir, &copy);
    })
    .await
    .stop()
    .await;
    let mut config = test_config(&copy);
    config.history_check_on_start = true;
    let s = TestServer::start_with(config).await;
    assert_eq!(files(&s.dir, "history.sqlite.damaged-").len(), 1);
    assert_eq!(order_of(&s, &a, &first).await["status"], "filled");
    assert_eq!(gauge(&s, "bourse_history_store_damaged").await, "0");
    s.stop().await;
}

/// Copies a data dir (without its lock).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "lock" {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

/// A bad page that the start's own replay meets (here: the store behind the journal, as a
/// crash leaves it, and its account-fills index garbage): the writer reports it during the
/// start, and the start sets the store aside and rebuilds it rather than failing. It used
/// to fail every start ("history store: the history store has stopped") until the file
/// was removed by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_page_met_by_the_start_is_rebuilt_by_that_start() {
    let (s, _admin, a, b, first) = traded(300).await;
    let first = id_of(&first).to_string();
    let s = s
        .restart_with(|dir| {
            let db = dir.join("history.sqlite");
            let pages = pages_of(&db, "fills_account_trade", false);
            let conn = rusqlite::Connection::open(&db).expect("open");
            conn.execute(
                "UPDATE meta SET value = value - 100 WHERE key = 'applied_seq'",
                [],
            )
            .expect("behind");
            drop(conn);
            overwrite(&db, &pages);
        })
        .await;
    assert_rebuilt(&s, &[&a, &b]).await;
    assert_eq!(order_of(&s, &a, &first).await["status"], "filled");
    s.stop().await;
}

/// The set-aside copies' main files in the data dir (`history.sqlite.damaged-...` without
/// `-wal`, `-shm` or `.reason`), sorted.
fn copies(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = files(dir, "history.sqlite.damaged-")
        .into_iter()
        .filter(|n| !n.ends_with("-wal") && !n.ends_with("-shm") && !n.ends_with(".reason"))
        .collect();
    names.sort();
    names
}

/// A store set aside at start again and again (a supervisor restarting a server whose store
/// keeps being damaged): once by SQLite refusing its header, once by a rebuild marker. Only
/// the newest three copies stay (the two just made and the newest older one), with their
/// `.reason`; an operator's own copy is left alone. Copies used to pile up until the disk
/// was full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_set_asides_keep_only_the_newest_copies() {
    let (s, _admin, a, _b, first) = traded(1).await;
    let first = id_of(&first).to_string();
    let s = s
        .restart_with(|dir| {
            for name in [
                "history.sqlite.damaged-100",
                "history.sqlite.damaged-100.reason",
                "history.sqlite.damaged-200",
                "history.sqlite.damaged-200-1",
                "history.sqlite.damaged-200-1.reason",
                "history.sqlite.damaged-keep",
            ] {
                std::fs::write(dir.join(name), b"old").expect("plant");
            }
            let db = dir.join("history.sqlite");
            let mut bytes = std::fs::read(&db).expect("store");
            bytes[..100].copy_from_slice(&[0x5a; 100]);
            std::fs::write(&db, bytes).expect("garbage header");
        })
        .await;
    let after_one = copies(&s.dir);
    assert_eq!(after_one.len(), 4, "{after_one:?}");
    assert!(!after_one.contains(&"history.sqlite.damaged-100".to_string()));
    let s = s
        .restart_with(|dir| {
            std::fs::write(dir.join("history.sqlite.rebuild"), b"").expect("marker");
        })
        .await;
    let left = copies(&s.dir);
    assert_eq!(left.len(), 4, "{left:?}");
    assert!(left.contains(&"history.sqlite.damaged-keep".to_string()));
    assert!(left.contains(&"history.sqlite.damaged-200-1".to_string()));
    assert!(!left.contains(&"history.sqlite.damaged-200".to_string()));
    let all = files(&s.dir, "history.sqlite.damaged-");
    assert!(
        !all.contains(&"history.sqlite.damaged-100.reason".to_string()),
        "{all:?}"
    );
    assert!(
        all.contains(&"history.sqlite.damaged-200-1.reason".to_string()),
        "{all:?}"
    );
    assert_eq!(order_of(&s, &a, &first).await["status"], "filled");
    s.stop().await;
}

/// A bad page under the tokens table: a token signed in for before the damage, which the
/// restarted server's cache does not hold, is looked up in the store and meets the page.
/// It used to be a 401 "invalid or expired token" (the lookup turned any store error into
/// "no such token"), so a client threw a good token away; now it is a 503 that says the
/// store is damaged, on REST and on the WebSocket's `auth`. A made-up token, which the
/// (sound) index of the tokens table tells apart without reaching the bad page, is a 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_token_the_damaged_store_cannot_read_is_a_503_not_a_401() {
    use bourse_tests::ws::{connect, request};

    let s = TestServer::start().await;
    let a = s.register("alice").await;
    let s = s
        .restart_with(|dir| {
            let db = dir.join("history.sqlite");
            overwrite(&db, &pages_of(&db, "tokens", false));
        })
        .await;
    let made_up = "made-up-token";
    for round in ["first", "again (nothing cached)"] {
        let (st, body) = s.get("/v1/wallet", Some(&a.token)).await;
        assert_damaged_answer(&format!("wallet, {round}"), st, &body);
        let (st, body) = s
            .order(
                &a,
                json!({"pair": "BTC_SEK", "side": "buy", "type": "limit", "amount": "0.001",
                       "price": "1000", "clientId": format!("o-{round}")}),
            )
            .await;
        assert_damaged_answer(&format!("an order, {round}"), st, &body);
        let (st, body) = s.get("/v1/wallet", Some(made_up)).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["code"], "UNAUTHORIZED", "{body}");
    }
    // The token's read found the damage: the store is stopped as for any other read.
    let (st, ready) = s.get("/ready", None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(gauge(&s, "bourse_history_store_damaged").await, "1");
    // The WebSocket's `auth`: the same three-way answer, and the connection stays open.
    let mut ws = connect(&s.base).await;
    let r = request(&mut ws, 1, json!({"op": "auth", "id": 1, "token": a.token})).await;
    assert_eq!(r["op"], "error", "{r}");
    assert_eq!(r["code"], "SERVICE_UNAVAILABLE", "{r}");
    let r = request(&mut ws, 2, json!({"op": "auth", "id": 2, "token": made_up})).await;
    assert_eq!(r["code"], "UNAUTHORIZED", "{r}");
    let r = request(&mut ws, 3, json!({"op": "ping", "id": 3})).await;
    assert_eq!(r, json!({"op": "pong", "id": 3}));
    drop(ws);
    // The restart rebuilds the store, without tokens (they are not journaled): the client
    // signs in again.
    let s = s.restart().await;
    let (st, body) = s.get("/v1/wallet", Some(&a.token)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    assert_rebuilt(&s, &[&a]).await;
    s.stop().await;
}

/// The pair's trades and 1-minute candles, as REST serves them.
async fn market(s: &TestServer) -> (Value, Value) {
    let (st, trades) = s.get("/v1/pairs/BTC_SEK/trades?limit=1000", None).await;
    assert_eq!(st, StatusCode::OK, "{trades}");
    let (st, candles) = s.get("/v1/pairs/BTC_SEK/candles?interval=1m", None).await;
    assert_eq!(st, StatusCode::OK, "{candles}");
    (trades, candles)
}

/// The market data store with its trades' pages overwritten while the server was stopped:
/// the start used to fail loading it ("database disk image is malformed"), every time. Now it
/// sets the file aside, the replay of the journal rebuilds the same trades and candles, and
/// the store's gauges say its writer runs (they were 0 before the damage too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_market_data_store_is_set_aside_and_rebuilt_at_start() {
    let (s, _admin, _a, _b, _first) = traded(300).await;
    assert_eq!(gauge(&s, "bourse_marketdata_store_stopped").await, "0");
    assert_eq!(gauge(&s, "bourse_marketdata_store_damaged").await, "0");
    let before = market(&s).await;
    assert_eq!(before.0.as_array().map(Vec::len), Some(300), "{}", before.0);
    let s = s
        .restart_with(|dir| {
            let db = dir.join("marketdata.sqlite");
            let leaves = pages_of(&db, "trades", true);
            overwrite(&db, &leaves);
        })
        .await;
    let aside = files(&s.dir, "marketdata.sqlite.damaged-");
    assert!(!aside.is_empty(), "the damaged store is kept aside");
    let (st, ready) = s.get("/ready", None).await;
    assert_eq!(st, StatusCode::OK, "{ready}");
    assert_eq!(market(&s).await, before);
    assert_eq!(gauge(&s, "bourse_marketdata_store_stopped").await, "0");
    assert_eq!(gauge(&s, "bourse_marketdata_store_damaged").await, "0");
    s.stop().await;
}
