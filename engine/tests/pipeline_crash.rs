//! Simulated-disk crashes: the disk dies at a seeded point (every later operation fails, as
//! for a killed process), then loses what was never fsynced (keeping a seeded random part of
//! it, so records are torn). After recovery, every command whose reply was delivered is
//! present at its sequence number with the same events.

mod pipeline_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use engine::pipeline::{
    Durability, Pipeline, PipelineConfig, Processed, SimDisk, StartOptions, SubmitError,
};
use parking_lot::Mutex;
use pipeline_support::{Recorder, Rng, Seen, Stream, setup, submit_wait};

fn config() -> PipelineConfig {
    let mut c = PipelineConfig::new("/sim/data");
    c.durability = Durability::Fsync;
    c.snapshot_every = 300;
    c.batch_max = 32;
    c.ring_capacity = 1024;
    c
}

fn options(disk: &SimDisk) -> StartOptions {
    StartOptions {
        storage: Arc::new(disk.clone()),
        segment_bytes: 8 * 1024,
        snapshots_kept: 2,
    }
}

/// Drives commands from two threads until the pipeline stops; returns what was acknowledged.
fn drive(p: &Arc<Pipeline>, seed: u64, commands: usize) -> BTreeMap<u64, Seen> {
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let p = p.clone();
            let acked = acked.clone();
            std::thread::spawn(move || {
                let mut stream = Stream::new(seed * 10 + t);
                for _ in 0..commands / 2 {
                    let c = stream.next_command();
                    let acked = acked.clone();
                    let reply = Box::new(move |pr: &Processed<'_>| {
                        acked.lock().insert(pr.seq, Seen::of(pr));
                    });
                    match p.submit(c, reply) {
                        Ok(()) => {}
                        Err(SubmitError::Busy) => std::thread::sleep(Duration::from_micros(50)),
                        Err(SubmitError::Stopped) => return,
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    std::mem::take(&mut *acked.lock())
}

#[test]
fn acknowledged_commands_survive_seeded_crashes() {
    let mut total_acked = 0usize;
    let mut total_truncated = 0u64;
    for seed in 1..=12u64 {
        let disk = SimDisk::new();
        let mut rng = Rng::new(seed);
        // Several lives: crash, recover, crash again, with growing history.
        let mut all_acked: BTreeMap<u64, Seen> = BTreeMap::new();
        for life in 0..3 {
            let rec = Recorder::needing_nothing();
            let p = match Pipeline::start_with(config(), options(&disk), Box::new(rec)) {
                Ok(p) => p,
                Err(e) => {
                    for path in disk.paths() {
                        let len = disk.file(&path).unwrap().len();
                        eprintln!("{} {len}", path.display());
                    }
                    panic!("seed {seed} life {life}: {e}");
                }
            };
            if life == 0 {
                for c in setup() {
                    let s = submit_wait(&p, c);
                    all_acked.insert(s.seq, s);
                }
            }
            disk.crash_after(20 + rng.below(400));
            let p = Arc::new(p);
            let acked = drive(&p, seed * 100 + life, 4000);
            assert!(
                p.failure().is_some() || disk.ops() > 0,
                "the disk should have died"
            );
            let p = Arc::into_inner(p).unwrap();
            let _ = p.shutdown(); // an error: the pipeline failed
            disk.crash(seed * 7 + life);
            total_acked += acked.len();
            all_acked.extend(acked);
        }

        // Recover with a listener that needs everything: all history is delivered.
        let rec = Recorder::needing_all();
        let p = Pipeline::start_with(config(), options(&disk), Box::new(rec.clone())).unwrap();
        total_truncated += p.recovery_report().truncated_bytes;
        let audit_ok = p.query(|e| e.audit().iter().all(|a| a.ok())).unwrap();
        assert!(audit_ok);
        let invariants = p.query(|e| e.check_invariants()).unwrap();
        assert_eq!(invariants, Ok(()));
        p.shutdown().unwrap();
        let seen = rec.seen.lock().clone();
        // Gap-free from 1.
        for (i, s) in seen.iter().enumerate() {
            assert_eq!(s.seq, i as u64 + 1);
        }
        for (seq, a) in &all_acked {
            let s = seen
                .get(*seq as usize - 1)
                .unwrap_or_else(|| panic!("seed {seed}: acknowledged seq {seq} lost"));
            assert_eq!(s, a, "seed {seed}: seq {seq} differs after recovery");
        }
    }
    assert!(
        total_acked > 1000,
        "too few commands acknowledged: {total_acked}"
    );
    eprintln!("acknowledged {total_acked}, torn bytes truncated {total_truncated}");
}
