//! A pipeline that fails (here: a journal write error) drops the replies of the commands
//! still queued in its rings, unrun: whoever submitted them hears that no outcome will come
//! (the API answers 503 and releases the command's idempotency key) instead of waiting for a
//! pipeline that will never sequence them.

mod pipeline_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engine::pipeline::{Durability, Pipeline, PipelineConfig, Processed, SimDisk, StartOptions};
use pipeline_support::{Recorder, Stream, setup, submit_wait};

struct OnDrop(Arc<AtomicU64>);
impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn replies_queued_when_the_pipeline_fails_are_released() {
    let disk = SimDisk::new();
    let mut config = PipelineConfig::new("/sim/data");
    config.durability = Durability::Fsync;
    config.batch_max = 1;
    config.ring_capacity = 1024;
    let options = StartOptions {
        storage: Arc::new(disk.clone()),
        ..StartOptions::default()
    };
    let p = Arc::new(
        Pipeline::start_with(config, options, Box::new(Recorder::needing_nothing())).unwrap(),
    );
    for c in setup() {
        submit_wait(&p, c);
    }
    // Hold the engine thread so the commands below queue in the rings.
    let (hold_tx, hold_rx) = crossbeam_channel::bounded::<()>(0);
    let (entered_tx, entered_rx) = crossbeam_channel::bounded::<()>(1);
    let q = {
        let p = p.clone();
        std::thread::spawn(move || {
            let _ = p.query(move |_| {
                entered_tx.send(()).unwrap();
                hold_rx.recv().unwrap();
            });
        })
    };
    entered_rx.recv().unwrap();
    // The next journal write fails.
    disk.crash_after(0);
    let (called, dropped) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut stream = Stream::new(7);
    let mut accepted = 0u64;
    for _ in 0..200 {
        let guard = OnDrop(dropped.clone());
        let called = called.clone();
        let reply = Box::new(move |_: &Processed<'_>| {
            called.fetch_add(1, Ordering::SeqCst);
            drop(guard);
        });
        if p.submit(stream.next_command(), reply).is_ok() {
            accepted += 1;
        }
    }
    hold_tx.send(()).unwrap();
    q.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.failure().is_none() {
        assert!(Instant::now() < deadline, "the pipeline did not fail");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The batch the engine thread had taken before the failure is dropped as the thread
    // stops; give it a moment.
    while dropped.load(Ordering::SeqCst) < accepted && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let settled = dropped.load(Ordering::SeqCst);
    assert!(accepted > 100, "only {accepted} commands queued");
    assert_eq!(
        called.load(Ordering::SeqCst),
        0,
        "a reply ran although nothing after the failure is durable"
    );
    assert_eq!(
        settled,
        accepted,
        "{} accepted replies neither ran nor were dropped after the pipeline failed",
        accepted - settled
    );
}
