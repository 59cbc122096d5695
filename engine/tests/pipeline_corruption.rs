//! Journal damage: a flipped byte in the middle stops start-up with an error naming the file
//! and the offset; a tail cut mid-record is a torn write and is truncated. The zeros the
//! writer lays down ahead of its appends are cut at start without being called damage.

mod pipeline_support;

use engine::pipeline::{Pipeline, PipelineConfig, PipelineError, Processed};
use pipeline_support::{Recorder, Stream, setup, submit_wait};

const COMMANDS: u64 = 3000;

fn fill(config: &PipelineConfig) -> Vec<pipeline_support::Seen> {
    let rec = Recorder::needing_nothing();
    let p = Pipeline::start(config.clone(), Box::new(rec.clone())).unwrap();
    for c in setup() {
        submit_wait(&p, c);
    }
    let mut stream = Stream::new(5);
    let (tx, rx) = crossbeam_channel::unbounded();
    for _ in 3..COMMANDS {
        let tx = tx.clone();
        p.submit(
            stream.next_command(),
            Box::new(move |pr: &Processed<'_>| {
                let _ = tx.send(pr.seq);
            }),
        )
        .unwrap();
    }
    drop(tx);
    assert_eq!(rx.iter().count() as u64, COMMANDS - 3);
    p.shutdown().unwrap();
    rec.seen.lock().clone()
}

/// Fills the journal and returns the state hash of a clean restart from it.
fn fill_and_hash(config: &PipelineConfig) -> u64 {
    fill(config);
    let p = Pipeline::start(config.clone(), Box::new(Recorder::needing_nothing())).unwrap();
    let hash = p.state_hash().unwrap();
    p.shutdown().unwrap();
    hash
}

#[test]
fn flipped_byte_refuses_and_torn_tail_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let config = PipelineConfig::new(dir.path());
    let live = fill(&config);
    let seg = dir.path().join("journal/00000000000000000001.seg");
    // A clean start cuts the zeros written ahead: `original` is the records alone.
    Pipeline::start(config.clone(), Box::new(Recorder::needing_nothing()))
        .unwrap()
        .shutdown()
        .unwrap();
    let original = std::fs::read(&seg).unwrap();

    // A flipped byte in the middle: refused, with file and offset.
    let mut damaged = original.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x40;
    std::fs::write(&seg, &damaged).unwrap();
    let err = Pipeline::start(config.clone(), Box::new(Recorder::needing_all())).unwrap_err();
    match &err {
        PipelineError::Corrupt { file, offset, .. } => {
            assert_eq!(file, &seg);
            assert!(
                *offset <= mid as u64 && mid as u64 - *offset < 1024,
                "{err}"
            );
        }
        other => panic!("expected corruption, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("00000000000000000001.seg") && text.contains("at byte"),
        "{text}"
    );
    // Nothing was truncated by the failed start.
    assert_eq!(std::fs::read(&seg).unwrap(), damaged);

    // A tail cut mid-record: everything before it comes back.
    std::fs::write(&seg, &original[..original.len() - 5]).unwrap();
    let rec = Recorder::needing_all();
    let p = Pipeline::start(config.clone(), Box::new(rec.clone())).unwrap();
    let report = p.recovery_report().clone();
    assert_eq!(report.last_seq, COMMANDS - 1);
    assert!(report.truncated_bytes > 0 && report.truncated_bytes < 1024);
    assert_eq!(report.truncated_file.as_ref(), Some(&seg));
    // The next command reuses the lost (never acknowledged) sequence number.
    let s = submit_wait(&p, Stream::new(99).next_command());
    assert_eq!(s.seq, COMMANDS);
    p.shutdown().unwrap();
    let seen = rec.seen.lock().clone();
    assert_eq!(seen[..COMMANDS as usize - 1], live[..COMMANDS as usize - 1]);

    // The truncated journal plus the new record reads back clean.
    let p = Pipeline::start(config, Box::new(Recorder::needing_all())).unwrap();
    assert_eq!(p.recovery_report().last_seq, COMMANDS);
    assert_eq!(p.recovery_report().truncated_bytes, 0);
    p.shutdown().unwrap();
}

#[test]
fn zeros_written_ahead_are_cut_at_start_and_not_reported_as_torn() {
    let dir = tempfile::tempdir().unwrap();
    let config = PipelineConfig::new(dir.path());
    fill(&config);
    let seg = dir.path().join("journal/00000000000000000001.seg");
    let written = std::fs::read(&seg).unwrap();
    let prefill = engine::pipeline::storage::PREFILL_BYTES as usize;

    let p = Pipeline::start(config.clone(), Box::new(Recorder::needing_nothing())).unwrap();
    let report = p.recovery_report().clone();
    assert_eq!(report.last_seq, COMMANDS);
    assert_eq!(report.truncated_bytes, 0, "{report}");
    assert_eq!(report.truncated_file, None);
    // The segment ended in zeros (at most the amount written ahead), now cut.
    let records = std::fs::metadata(&seg).unwrap().len() as usize;
    assert!(
        records > 0 && records < written.len(),
        "{records} of {}",
        written.len()
    );
    assert!(written.len() - records <= prefill);
    assert!(written[records..].iter().all(|&b| b == 0));
    // Appends go on where the records end, over new zeros.
    let s = submit_wait(&p, Stream::new(99).next_command());
    assert_eq!(s.seq, COMMANDS + 1);
    p.shutdown().unwrap();
    let after = std::fs::read(&seg).unwrap();
    assert_eq!(after[..records], written[..records]);

    let p = Pipeline::start(config, Box::new(Recorder::needing_nothing())).unwrap();
    assert_eq!(p.recovery_report().last_seq, COMMANDS + 1);
    assert_eq!(p.recovery_report().truncated_bytes, 0);
    p.shutdown().unwrap();
}

#[test]
fn corrupt_snapshot_falls_back_to_an_older_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = PipelineConfig::new(dir.path());
    let hash = fill_and_hash(&config);
    for entry in std::fs::read_dir(dir.path().join("snapshots")).unwrap() {
        let path = entry.unwrap().path();
        let mut b = std::fs::read(&path).unwrap();
        let n = b.len() - 3;
        b[n] ^= 1;
        std::fs::write(&path, b).unwrap();
    }
    let p = Pipeline::start(config, Box::new(Recorder::needing_nothing())).unwrap();
    let report = p.recovery_report().clone();
    assert_eq!(report.snapshot_seq, None);
    assert!(!report.snapshots_rejected.is_empty());
    assert_eq!(p.state_hash().unwrap(), hash);
    p.shutdown().unwrap();
}

#[test]
fn unfinished_snapshot_write_is_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = PipelineConfig::new(dir.path());
    let hash = fill_and_hash(&config);
    // A crash between writing a snapshot's temp file and renaming it leaves this behind.
    let stale = dir
        .path()
        .join("snapshots")
        .join(format!("{:020}.snap.tmp", u64::MAX / 2));
    std::fs::write(&stale, b"half a snapshot").unwrap();
    let p = Pipeline::start(config, Box::new(Recorder::needing_nothing())).unwrap();
    assert_eq!(p.recovery_report().stale_temps_removed, vec![stale.clone()]);
    assert!(!stale.exists());
    assert_eq!(p.state_hash().unwrap(), hash);
    p.shutdown().unwrap();
}
