//! Replay equivalence: a seeded random command stream run live, then recovered from the
//! journal alone and from a snapshot plus the journal tail, gives the same state hash, the
//! same query answers, and (for what is replayed) the same events and timestamps.

mod pipeline_support;

use std::sync::Arc;

use engine::pipeline::{
    FsStorage, Pipeline, PipelineConfig, PipelineError, Processed, StartOptions, snapshot,
};
use engine::{
    AccountId, Amount, ClientOrderId, Command, CurrencyId, Event, OrderId, PairId, PlaceOrder,
    Price, RejectReason, RequestId, RequestSpec, Side,
};
use pipeline_support::{Recorder, Stream, query_answers, setup, submit_wait};

const COMMANDS: usize = 6000;

/// Submits every command without waiting (retrying on Busy), then waits for every reply.
fn run_stream(p: &Pipeline, seed: u64) {
    let mut stream = Stream::new(seed);
    let (tx, rx) = crossbeam_channel::unbounded();
    for _ in 0..COMMANDS {
        let c = stream.next_command();
        loop {
            let tx = tx.clone();
            let r = p.submit(
                c.clone(),
                Box::new(move |pr: &Processed<'_>| {
                    let _ = tx.send(pr.seq);
                }),
            );
            if r.is_ok() {
                break;
            }
            std::thread::yield_now();
        }
    }
    drop(tx);
    assert_eq!(rx.iter().count(), COMMANDS);
}

#[test]
fn journal_only_and_snapshot_plus_tail_match_the_live_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = PipelineConfig::new(dir.path());
    config.snapshot_every = 1000;
    config.batch_max = 64; // many batches, so periodic snapshots land mid-stream
    let options = StartOptions {
        segment_bytes: 64 * 1024, // several segments
        ..StartOptions::default()
    };
    let live = Recorder::needing_nothing();
    let p = Pipeline::start_with(config.clone(), options.clone(), Box::new(live.clone())).unwrap();
    for c in setup() {
        submit_wait(&p, c);
    }
    run_stream(&p, 42);
    let hash = p.state_hash().unwrap();
    let answers = p.query(query_answers).unwrap();
    let audit_ok = p.query(|e| e.audit().iter().all(|a| a.ok())).unwrap();
    assert!(audit_ok);
    let last = p.last_seq();
    assert_eq!(last, (COMMANDS + 3) as u64);
    // A pair was added at run time and got its own ring.
    assert_eq!(p.stats().rings.len(), 3);
    // Snapshots are written by their own thread, behind the engine: wait (bounded) for one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while p.stats().snapshots_written == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        p.stats().snapshots_written >= 1,
        "no periodic snapshot within 30 s"
    );
    p.shutdown().unwrap();
    let live_seen = live.seen.lock().clone();
    let segments = std::fs::read_dir(dir.path().join("journal"))
        .unwrap()
        .count();
    assert!(segments > 2, "expected several segments, got {segments}");

    // (a) Journal only: a listener that has nothing forces replay from seq 1.
    let rec = Recorder::needing_all();
    let p = Pipeline::start_with(config.clone(), options.clone(), Box::new(rec.clone())).unwrap();
    let report = p.recovery_report().clone();
    assert_eq!(report.snapshot_seq, None);
    assert_eq!(report.records_replayed, last);
    assert_eq!(p.state_hash().unwrap(), hash);
    assert_eq!(p.query(query_answers).unwrap(), answers);
    p.shutdown().unwrap();
    assert_eq!(*rec.seen.lock(), live_seen);
    assert_eq!(rec.log.lock().last(), Some(&("recovered", last)));

    // (b) Snapshot + tail: a listener that has everything up to `need` gets a periodic
    // snapshot no newer than that, and only the commands after it.
    let need = last - 1500;
    let rec = Recorder {
        applied: need,
        ..Recorder::default()
    };
    let p = Pipeline::start_with(config.clone(), options.clone(), Box::new(rec.clone())).unwrap();
    let report = p.recovery_report().clone();
    let snap = report.snapshot_seq.expect("a periodic snapshot");
    assert!(snap <= need && snap > 0, "{report}");
    assert_eq!(report.records_replayed, last - snap);
    assert_eq!(report.records_delivered, last - need);
    assert_eq!(p.state_hash().unwrap(), hash);
    assert_eq!(p.query(query_answers).unwrap(), answers);
    p.shutdown().unwrap();
    let got = rec.seen.lock().clone();
    let want = &live_seen[need as usize..];
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(g == w, "replayed {g:?}\nlive {w:?}");
    }

    // (c) The final snapshot: nothing to replay.
    let p = Pipeline::start_with(config, options, Box::new(Recorder::needing_nothing())).unwrap();
    assert_eq!(p.recovery_report().snapshot_seq, Some(last));
    assert_eq!(p.state_hash().unwrap(), hash);
    p.shutdown().unwrap();
}

fn gtc(id: u64, account: u32, side: Side, price: u64, lots: u64) -> Command {
    Command::Place(
        PlaceOrder::limit(
            OrderId(id),
            AccountId(account),
            PairId(0),
            side,
            Price(price),
            Amount(lots),
        )
        .with_client_id(ClientOrderId::parse(&format!("c{id}")).expect("valid")),
    )
}

fn credit(request: u64, account: u32, currency: u16, amount: u64) -> Command {
    Command::DepositCredited(Box::new(RequestSpec {
        request: RequestId(request),
        account: AccountId(account),
        currency: CurrencyId(currency),
        amount,
        external_id: format!("ext-{request}"),
        destination: String::new(),
    }))
}

/// A rule change is replayed at the point its live run met it: a journal in which a
/// crossing GTC order on a full book was refused under rules version 1 (the rule before
/// it changed), then `SetRulesVersion { version: 2 }`, then the same order taken, recovers
/// (from the journal alone, and past a snapshot of the old format) to the live run's state
/// and outcomes: the first order refused again, the second trading again.
#[test]
fn a_journal_replays_each_order_under_the_rules_version_its_live_run_met() {
    let dir = tempfile::tempdir().unwrap();
    let config = PipelineConfig::new(dir.path());
    let live = Recorder::needing_nothing();
    let p = Pipeline::start_with(
        config.clone(),
        StartOptions::default(),
        Box::new(live.clone()),
    )
    .unwrap();
    assert_eq!(p.query(|e| e.rules_version()).unwrap(), 1, "genesis rules");
    for c in setup() {
        submit_wait(&p, c);
    }
    submit_wait(&p, Command::SetMaxOrdersPerBook { max: 2 });
    submit_wait(&p, credit(1, 1, 0, 500_000_000)); // alice: BTC
    submit_wait(&p, credit(2, 2, 1, 50_000_000)); // bob: SEK
    submit_wait(&p, credit(3, 3, 1, 50_000_000)); // carol: SEK
    submit_wait(&p, gtc(1, 2, Side::Buy, 9_900, 100));
    submit_wait(&p, gtc(2, 1, Side::Sell, 10_000, 300));
    // The book is full; carol's buy crosses the ask.
    let crossing = gtc(3, 3, Side::Buy, 10_050, 100);
    let refused = submit_wait(&p, crossing.clone());
    assert!(
        matches!(
            refused.events[..],
            [Event::Rejected {
                reason: RejectReason::BookFull,
                ..
            }]
        ),
        "{refused:?}"
    );
    let set = submit_wait(&p, Command::SetRulesVersion { version: 2 });
    assert_eq!(set.events, vec![Event::RulesVersionSet { version: 2 }]);
    // The same order again (its id was never used: a refused order takes none).
    let taken = submit_wait(&p, crossing);
    assert!(
        matches!(taken.events[0], Event::Accepted { .. }),
        "{taken:?}"
    );
    assert!(
        taken.events.iter().any(|e| matches!(e, Event::Trade(t)
            if t.maker_order == OrderId(2) && t.amount == Amount(100))),
        "{taken:?}"
    );
    let hash = p.state_hash().unwrap();
    let answers = p.query(query_answers).unwrap();
    let state = p.query(engine::state::encode).unwrap();
    let last = p.last_seq();
    p.shutdown().unwrap();
    let live_seen = live.seen.lock().clone();

    // (a) From the journal alone: the same outcomes, command by command, and state.
    let rec = Recorder::needing_all();
    let p = Pipeline::start_with(
        config.clone(),
        StartOptions::default(),
        Box::new(rec.clone()),
    )
    .unwrap();
    assert_eq!(p.recovery_report().snapshot_seq, None);
    assert_eq!(p.recovery_report().records_replayed, last);
    assert_eq!(p.query(|e| e.rules_version()).unwrap(), 2);
    assert_eq!(p.state_hash().unwrap(), hash);
    assert_eq!(p.query(query_answers).unwrap(), answers);
    p.shutdown().unwrap();
    assert_eq!(*rec.seen.lock(), live_seen);

    // (b) The only snapshot is of format 4 (the same state, without the rules version): it
    // is refused as the old format it is, and the whole journal is replayed instead.
    let snapshots = dir.path().join("snapshots");
    std::fs::remove_dir_all(&snapshots).unwrap();
    std::fs::create_dir_all(&snapshots).unwrap();
    assert_eq!(engine::state::STATE_VERSION, 5);
    assert_eq!(
        (state[0], state[state.len() - 1]),
        (5, 2),
        "version first, rules last"
    );
    let mut old = state[..state.len() - 1].to_vec();
    old[0] = 4;
    let data = snapshot::SnapshotData {
        seq: last,
        timestamp_ns: 0,
        state: old,
    };
    snapshot::write(&FsStorage, &snapshots, &data, 3).unwrap();
    let p = Pipeline::start_with(
        config,
        StartOptions::default(),
        Box::new(Recorder::needing_nothing()),
    )
    .unwrap();
    let report = p.recovery_report().clone();
    assert_eq!(report.snapshot_seq, None, "{report}");
    assert_eq!(report.snapshots_rejected.len(), 1, "{report}");
    assert!(
        report.snapshots_rejected[0].1.contains("state version 4"),
        "{report}"
    );
    assert_eq!(report.records_replayed, last);
    assert_eq!(p.state_hash().unwrap(), hash);
    p.shutdown().unwrap();
}

/// A journal that moves to matching rules this build does not know (a newer build wrote
/// it) stops the start instead of being replayed under older rules. Here the record is
/// made by submitting the version live (this build refuses it but journals the command, as
/// it journals every command); a newer build's snapshot would be refused as a newer format,
/// so the whole journal is replayed, as here without snapshots.
#[test]
fn a_journal_from_a_newer_build_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = PipelineConfig::new(dir.path());
    let p = Pipeline::start_with(
        config.clone(),
        StartOptions::default(),
        Box::new(Recorder::needing_nothing()),
    )
    .unwrap();
    let newer = engine::RULES_VERSION_CURRENT + 1;
    submit_wait(&p, Command::SetRulesVersion { version: newer });
    p.shutdown().unwrap();
    std::fs::remove_dir_all(dir.path().join("snapshots")).unwrap();
    let Err(err) = Pipeline::start_with(
        config,
        StartOptions::default(),
        Box::new(Recorder::needing_nothing()),
    ) else {
        panic!("a journal of a newer build was replayed");
    };
    assert!(
        matches!(
            err,
            PipelineError::NewerJournal { version, known, .. }
                if version == newer && known == engine::RULES_VERSION_CURRENT
        ),
        "{err}"
    );
}

#[test]
fn pipeline_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Pipeline>();
    check::<Arc<Pipeline>>();
}
