//! Replay equivalence: a seeded random command stream run live, then recovered from the
//! journal alone and from a snapshot plus the journal tail, gives the same state hash, the
//! same query answers, and (for what is replayed) the same events and timestamps.

mod pipeline_support;

use std::sync::Arc;

use engine::pipeline::{Pipeline, PipelineConfig, Processed, StartOptions};
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

#[test]
fn pipeline_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Pipeline>();
    check::<Arc<Pipeline>>();
}
