//! The history store's deposit and withdrawal requests: a decision updates the stored row in
//! place, and a write never replaces another request.

use api::model::RequestRec;
use api::store;
use engine::RequestStatus;

fn pending(id: u64, account: u32, external_id: &str) -> RequestRec {
    RequestRec {
        id,
        external_id: external_id.to_string(),
        account,
        withdrawal: true,
        currency: 1,
        amount: 5_000,
        status: RequestStatus::Pending,
        destination: Some("iban".to_string()),
        reason: None,
        created_ns: 1_000,
        updated_ns: 1_000,
    }
}

fn get(conn: &rusqlite::Connection, id: u64) -> Option<RequestRec> {
    store::request_get(conn, id).expect("read")
}

/// Approve and reject change the status, the reason and the update time, nothing else.
#[test]
fn a_decision_updates_the_request_in_place() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conn = store::open(&store::db_path(tmp.path())).expect("open");
    let w = pending(1, 7, "w1");
    store::write_request(&conn, &w).expect("insert");
    assert_eq!(get(&conn, 1).as_ref(), Some(&w));

    let mut approved = w.clone();
    approved.status = RequestStatus::Completed;
    approved.updated_ns = 2_000;
    store::write_request(&conn, &approved).expect("approve");
    assert_eq!(get(&conn, 1).as_ref(), Some(&approved));

    let d = pending(2, 7, "d1");
    store::write_request(&conn, &d).expect("insert");
    let mut rejected = d.clone();
    rejected.status = RequestStatus::Rejected;
    rejected.reason = Some("no such transfer".to_string());
    rejected.updated_ns = 3_000;
    store::write_request(&conn, &rejected).expect("reject");
    assert_eq!(get(&conn, 2).as_ref(), Some(&rejected));
    assert_eq!(
        store::request_id_by_external(&conn, 7, "d1").expect("by external id"),
        Some(2)
    );
}

/// A write never replaces another request: a new id with a stored `(account, externalId)` is
/// an error (`INSERT OR REPLACE` deleted the stored request and put the new one in its
/// place), and a write to a known id does not change what the request was created with.
#[test]
fn a_write_never_replaces_another_request() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conn = store::open(&store::db_path(tmp.path())).expect("open");
    let first = pending(1, 7, "w1");
    store::write_request(&conn, &first).expect("insert");

    let clash = pending(2, 7, "w1");
    assert!(
        store::write_request(&conn, &clash).is_err(),
        "a second request with a stored externalId was written"
    );
    assert_eq!(get(&conn, 1).as_ref(), Some(&first));
    assert_eq!(get(&conn, 2), None);

    let mut other = pending(1, 8, "w2");
    other.amount = 1;
    other.status = RequestStatus::Completed;
    other.updated_ns = 2_000;
    store::write_request(&conn, &other).expect("update");
    let mut expected = first.clone();
    expected.status = RequestStatus::Completed;
    expected.updated_ns = 2_000;
    assert_eq!(get(&conn, 1).as_ref(), Some(&expected));
    assert_eq!(
        store::request_id_by_external(&conn, 8, "w2").expect("by external id"),
        None
    );
}
