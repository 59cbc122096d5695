//! Start, submit, shutdown, restart: gap-free sequence numbers, replies only after the
//! listener saw the batch, the journal and a final snapshot on disk, state preserved.

mod pipeline_support;

use std::sync::Arc;

use engine::pipeline::{Durability, Pipeline, PipelineConfig, Processed};
use pipeline_support::{Recorder, Stream, setup, submit_wait};

#[test]
fn start_submit_shutdown_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = PipelineConfig::new(dir.path());
    config.durability = Durability::Fsync;
    let rec = Recorder::needing_nothing();
    let p = Pipeline::start(config.clone(), Box::new(rec.clone())).unwrap();
    for c in setup() {
        submit_wait(&p, c);
    }
    // Concurrent submitters; replies log their seq after the listener's batch entry.
    let p = Arc::new(p);
    let mut commands = Vec::new();
    let mut stream = Stream::new(1);
    for _ in 0..2000 {
        commands.push(stream.next_command());
    }
    let chunks: Vec<Vec<_>> = commands.chunks(500).map(|c| c.to_vec()).collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let p = p.clone();
            let log = rec.log.clone();
            std::thread::spawn(move || {
                let (tx, rx) = crossbeam_channel::unbounded();
                for c in chunk {
                    let tx = tx.clone();
                    let log = log.clone();
                    loop {
                        let tx = tx.clone();
                        let log = log.clone();
                        let r = p.submit(
                            c.clone(),
                            Box::new(move |pr: &Processed<'_>| {
                                log.lock().push(("reply", pr.seq));
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
                rx.iter().count()
            })
        })
        .collect();
    let replied: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(replied, 2000);
    let hash = p.state_hash().unwrap();
    assert_eq!(p.last_seq(), 2003);
    let stats = p.stats();
    assert_eq!(stats.commands, 2003);
    assert!(stats.fsyncs >= 1);
    let p = Arc::into_inner(p).unwrap();
    p.shutdown().unwrap();

    // Gap-free, and every reply after its batch was delivered.
    let seen = rec.seen.lock().clone();
    assert_eq!(
        seen.iter().map(|s| s.seq).collect::<Vec<_>>(),
        (1..=2003).collect::<Vec<_>>()
    );
    let log = rec.log.lock().clone();
    let mut delivered = std::collections::HashSet::new();
    for (what, seq) in log {
        match what {
            "batch" => assert!(delivered.insert(seq)),
            "reply" => assert!(delivered.contains(&seq), "reply {seq} before delivery"),
            _ => {}
        }
    }
    assert!(dir.path().join("journal/00000000000000000001.seg").exists());
    assert!(
        dir.path()
            .join("snapshots/00000000000000002003.snap")
            .exists()
    );

    // Restart from the final snapshot.
    let p = Pipeline::start(config.clone(), Box::new(Recorder::needing_nothing())).unwrap();
    assert_eq!(p.recovery_report().snapshot_seq, Some(2003));
    assert_eq!(p.recovery_report().records_replayed, 0);
    assert_eq!(p.state_hash().unwrap(), hash);
    let s = submit_wait(&p, Stream::new(2).next_command());
    assert_eq!(s.seq, 2004);
    p.shutdown().unwrap();
}
