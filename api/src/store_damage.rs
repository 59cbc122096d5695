//! A damaged history store: what happens when SQLite says its file is corrupt, while the
//! server runs or at start, and how the next start rebuilds it.
//!
//! The history store is a read model: everything in it but the sign-in tokens is rebuilt
//! from the journal when it is lost. SQLite notices damage only where it reads: a garbled
//! header when the file is opened (set aside at start, [`crate::server`]), a bad page in the
//! middle of the file when a query or a write reaches that page, which may be hours later.
//! Such a page used to be a 500 `INTERNAL_ERROR` for every read that reached it (an error
//! line in the log per read) while the reads that missed it answered as if all was well;
//! on the writer it stopped the store as a write error does, and the restart that `/ready`
//! asked for reopened the same file (its header is fine), replayed into it and failed on
//! the same page again, at every start.
//!
//! Now the first `SQLITE_CORRUPT` or `SQLITE_NOTADB` from the writer or from any read goes
//! through [`report`], which
//! - marks the store damaged ([`ReadModel::damage_store`], which also stops it): the writer
//!   commits nothing more to a file that is to be replaced anyway, every history read is a
//!   503 `SERVICE_UNAVAILABLE` that says the history store is damaged (no SQL, no path), as
//!   for a stopped store, `/ready` is a 503 that says so and `bourse_history_store_damaged`
//!   is 1;
//! - logs it once (the file, SQLite's error, whether the writer or a read found it);
//! - leaves the marker `history.sqlite.rebuild` beside the store ([`marker_path`]), so the
//!   next start sets the file aside as `history.sqlite.damaged-<unix seconds>` (its marker
//!   beside it as `...damaged-<unix seconds>.reason`; only the newest
//!   [`feed::damaged_store::SET_ASIDE_KEPT`] such copies are kept) and rebuilds the store from the
//!   journal ([`feed::damaged_store::take_marker`]), as it does for a header SQLite cannot read. An operator may
//!   create the marker by hand (empty will do) to have the next start rebuild the store.
//!
//! Orders keep being accepted: the engine, the ledger and the journal do not depend on the
//! store, and placing or cancelling an open order reads nothing from it (a repeated
//! `clientId`, which is settled by the store, is a 503 rather than a 409, and is never taken
//! twice). What stops until the restart is everything read from the store: order and fill
//! lookups and lists, transactions, deposits and withdrawals, and sign-ins (the clients
//! table); tokens already in the server's cache keep working, and one that is not is still
//! looked up in the store's tokens table, which may well be readable: when that read fails,
//! the request is a 503 that says the store is damaged, not a 401 (the token may be good,
//! and a client told 401 throws it away). The restart replays the whole journal into the
//! new store (as for a deleted one), during which `/ready` says the server is recovering.
//!
//! At start, `history_check_on_start` (off by default) runs SQLite's `PRAGMA quick_check`
//! over the whole file before it is opened ([`quick_check`]) and treats a failure as damage.
//! It reads every page, so its cost grows with the history for ever: on a store of a million
//! orders (with a million fills and two million transactions, 377 MB) it took 0.81-0.88 s
//! with the file in the page cache (release build, 3 runs; `cargo test --release -p
//! bourse-api --lib quick_check_timing -- --ignored --nocapture`), more from a cold disk,
//! and every start would pay it before serving. It is off by default because a bad page is
//! found anyway by the first read or write that reaches it, as above, at no cost to the
//! start; an operator who would rather have a start that is slower by that much and sure
//! of the whole file turns it on.

use std::path::Path;

use crate::state::ReadModel;
use crate::store;

/// The marker and the set-aside at start are shared with the market data store:
/// [`feed::damaged_store`].
pub use feed::damaged_store::marker_path;

/// Which side of the store met the damage (for the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoundBy {
    /// The store thread, committing a group of batches.
    Writer,
    /// A handler's read.
    Read,
}

impl FoundBy {
    fn as_str(self) -> &'static str {
        match self {
            FoundBy::Writer => "writer",
            FoundBy::Read => "read",
        }
    }
}

/// Looks at an error the store at `db` returned: when SQLite says the file is damaged
/// ([`store::is_damaged`]), the store is marked damaged and, the first time, the damage is
/// logged and the rebuild marker left (see the module doc). Returns whether it was damage.
pub fn report(model: &ReadModel, db: &Path, e: &rusqlite::Error, found_by: FoundBy) -> bool {
    if !store::is_damaged(e) {
        return false;
    }
    if !model.damage_store() {
        return true;
    }
    tracing::error!(
        file = %db.display(),
        error = %e,
        found_by = found_by.as_str(),
        "the history store is damaged: it is stopped (history reads and sign-ins are a 503, \
         orders are still accepted); restart the server, which sets the file aside and \
         rebuilds the store from the journal"
    );
    feed::damaged_store::leave_marker(db, "history store", found_by.as_str(), e);
    true
}

/// SQLite's `PRAGMA quick_check` of the store at `db` (every page read; see the module doc
/// for what it costs): `Ok(None)` when it passes, `Ok(Some(first problem))` when it finds
/// one. An error that says the file is damaged ([`store::is_damaged`]) is damage too, for
/// the caller to tell apart.
pub fn quick_check(db: &Path) -> rusqlite::Result<Option<String>> {
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // `quick_check(1)`: stop at the first problem, one is enough to set the file aside.
    let first: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
    Ok((first != "ok").then_some(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corrupt() -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some("database disk image is malformed".into()),
        )
    }

    /// The first damage is logged once and leaves the marker; later ones (every read that
    /// was already running) only count as damage; other errors are not damage.
    #[test]
    fn damage_is_logged_once_and_leaves_the_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = store::db_path(dir.path());
        let model = ReadModel::default();
        let text = engine::log_capture::log_of(|| {
            let busy = rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                None,
            );
            assert!(!report(&model, &db, &busy, FoundBy::Writer));
            assert!(!model.store_failed() && !model.store_damaged());
            assert!(!marker_path(&db).exists());
            assert!(report(&model, &db, &corrupt(), FoundBy::Read));
            assert!(report(&model, &db, &corrupt(), FoundBy::Writer));
        });
        assert!(model.store_damaged() && model.store_failed());
        assert_eq!(
            text.matches("the history store is damaged").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("found_by=\"read\"") || text.contains("found_by=read"),
            "{text}"
        );
        let marker = std::fs::read_to_string(marker_path(&db)).expect("marker");
        assert!(marker.contains("malformed"), "{marker}");
    }

    /// What `quick_check` says of a sound store, of one with garbage over pages in the middle
    /// (an index's leaves), and of one with garbage over its header.
    #[test]
    fn quick_check_finds_a_bad_page_in_the_middle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = store::db_path(dir.path());
        let conn = store::open(&db).expect("open");
        fill(&conn, 20_000);
        let leaves: Vec<i64> = conn
            .prepare(
                "SELECT pageno FROM dbstat WHERE name = 'orders_account' AND pagetype = 'leaf'",
            )
            .expect("dbstat")
            .query_map([], |r| r.get(0))
            .expect("pages")
            .collect::<Result<_, _>>()
            .expect("pages");
        drop(conn);
        assert_eq!(quick_check(&db).expect("check"), None);
        let len = std::fs::metadata(&db).expect("len").len();
        assert!(
            leaves.len() > 4 && len > 1 << 20,
            "{} pages, {len} bytes",
            leaves.len()
        );
        overwrite_pages(&db, &leaves[leaves.len() / 2..leaves.len() / 2 + 2]);
        let found = quick_check(&db).expect("check");
        assert!(found.is_some(), "a bad page passed");
        std::fs::write(&db, [0x5a; 8192]).expect("header");
        let e = quick_check(&db).expect_err("not a database");
        assert!(store::is_damaged(&e), "{e}");
    }

    /// Overwrites the 4 KiB pages `pages` (1-based, SQLite's numbering) with garbage.
    fn overwrite_pages(db: &Path, pages: &[i64]) {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(db)
            .expect("open");
        for &p in pages {
            let at = u64::try_from(p - 1).expect("page") * 4096;
            f.seek(SeekFrom::Start(at)).expect("seek");
            f.write_all(&[0x5a; 4096]).expect("write");
        }
        f.sync_all().expect("sync");
    }

    /// `orders` orders on 1,000 accounts, each with a fill and two transactions, in the
    /// store's own schema and through its own writes.
    fn fill(conn: &rusqlite::Connection, orders: u64) {
        use crate::model::{FillRec, OrderRec, TxRec, TxType};
        for chunk in (1..=orders).collect::<Vec<_>>().chunks(100_000) {
            conn.execute_batch("BEGIN").expect("begin");
            for &id in chunk {
                let account = (id % 1_000) as u32 + 1;
                let ts = 1_700_000_000_000_000_000 + id as i64 * 1_000_000;
                let order = OrderRec {
                    id,
                    account,
                    client_id: format!("c-{id}"),
                    pair: 0,
                    side: if id % 2 == 0 {
                        engine::Side::Buy
                    } else {
                        engine::Side::Sell
                    },
                    market: false,
                    tif: engine::TimeInForce::Gtc,
                    post_only: false,
                    price: Some(100_000 + id % 500),
                    amount: Some(1_000),
                    quote_amount: None,
                    filled: 1_000,
                    filled_quote: 100_000_000,
                    value_sum: 100_000_000,
                    fee: 100,
                    status: engine::OrderStatus::Filled,
                    reject_reason: None,
                    created_ns: ts,
                    updated_ns: ts,
                    fills: Vec::new(),
                };
                store::write_order(conn, &order).expect("order");
                store::write_fill(
                    conn,
                    &FillRec {
                        trade_id: id.div_ceil(2),
                        order_id: id,
                        account,
                        pair: 0,
                        side: order.side,
                        price: 100_000,
                        amount: 1_000,
                        quote: 100_000_000,
                        fee: 100,
                        maker: id % 2 == 0,
                        ts_ns: ts,
                    },
                )
                .expect("fill");
                for (currency, delta) in [(0u16, 1_000i64), (1, -100_000_000)] {
                    store::write_tx(
                        conn,
                        &TxRec {
                            id: 0,
                            account,
                            currency,
                            kind: TxType::OrderExecution,
                            delta,
                            balance_after: delta,
                            ts_ns: ts,
                            refs: vec![(id.to_string(), "ORDER_EXECUTION")],
                        },
                    )
                    .expect("tx");
                }
            }
            conn.execute_batch("COMMIT").expect("commit");
        }
    }

    /// The figure in the module doc: `PRAGMA quick_check` of a store of a million orders
    /// (a fill and two transactions each), three times. A measurement, not a check of
    /// speed: `cargo test --release -p bourse-api --lib quick_check_timing -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "a timing; run it by hand (see its doc)"]
    fn quick_check_timing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = store::db_path(dir.path());
        let conn = store::open(&db).expect("open");
        fill(&conn, 1_000_000);
        drop(conn);
        let len = std::fs::metadata(&db).expect("len").len();
        for _ in 0..3 {
            let t = std::time::Instant::now();
            assert_eq!(quick_check(&db).expect("check"), None);
            eprintln!("quick_check of {len} bytes: {:?}", t.elapsed());
        }
    }
}
