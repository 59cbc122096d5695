//! The engine thread: the sequencer, the only owner of the [`Engine`], the journal's group
//! commit and the output.
//!
//! Loop: take up to `batch_max` commands from the rings (round-robin, a quantum per ring so
//! one busy pair cannot starve the others), read the clock once, give each command the next
//! sequence number, apply it, frame its journal record; append the batch to the journal and
//! sync it ([`super::commit`]); then deliver it ([`super::output`]: listeners, replies,
//! snapshot). Whatever queues during one batch's sync forms the next batch, which is what
//! makes group commit work without a timer. Idle: park (with a timeout as a safety net),
//! never spin; a submit unparks it only when it is parked, so while it works (syncs
//! included) submitters make no system call to wake it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;

use super::batch::Batch;
use super::journal::JournalWriter;
use super::output::Output;
use super::snapshot::SnapshotData;
use super::{Durability, OutputListener, Shared, commit, record};
use crate::engine::Engine;
use crate::ids::PairId;
use crate::state;

/// A read-only query against the engine as it stands, told the sequence number of the last
/// command the engine has applied (on this thread, every command applied has also been
/// delivered when a query runs).
pub(crate) type QueryJob = Box<dyn FnOnce(&Engine, u64) + Send>;

/// A message to the engine thread outside the rings.
pub(crate) enum Control {
    /// Run a query ([`QueryJob`]).
    Query(QueryJob),
    /// Drain every ring, write a final snapshot, stop.
    Shutdown,
}

/// Longest park while idle (a wake-up is normally immediate via `unpark`).
const PARK: Duration = Duration::from_millis(5);

/// Commands taken from one ring per round-robin pass.
const QUANTUM: usize = 256;

pub(crate) struct Sequencer {
    pub engine: Engine,
    pub shared: Arc<Shared>,
    pub control: Receiver<Control>,
    pub journal: JournalWriter,
    pub durability: Durability,
    pub output: Output,
    pub batch_max: usize,
    pub snapshot_every: u64,
    /// The next sequence number to assign.
    pub next_seq: u64,
    pub last_timestamp_ns: i64,
}

/// The wall clock as Unix time in nanoseconds (0 before 1970, saturated in 2262): the clock
/// of batch timestamps, and the one the crates above compare expiries with (tokens, the
/// ticker's rolling window), so that they all read time the same way.
pub fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl Sequencer {
    /// Runs until a clean stop (the listener is given back) or a failure (`None`: the
    /// failure is recorded in the shared state).
    pub fn run(mut self) -> Option<Box<dyn OutputListener>> {
        let shared = self.shared.clone();
        let router = &shared.router;
        let mut batch = Batch::with_capacity(self.batch_max);
        let mut cursor = 0usize;
        let mut since_snapshot = 0u64;
        let mut shutting_down = false;
        loop {
            while let Ok(msg) = self.control.try_recv() {
                match msg {
                    Control::Query(f) => f(&self.engine, self.next_seq - 1),
                    Control::Shutdown => shutting_down = true,
                }
            }
            if shared.is_failed() {
                return None;
            }
            self.fill(&mut batch, &mut cursor);
            if batch.is_empty() {
                if shutting_down && router.is_empty() {
                    break;
                }
                router.set_sleeping(true);
                if router.is_empty() && self.control.is_empty() && !shutting_down {
                    std::thread::park_timeout(PARK);
                }
                router.set_sleeping(false);
                continue;
            }
            self.execute(&mut batch);
            since_snapshot += batch.len() as u64;
            if self.snapshot_every > 0 && since_snapshot >= self.snapshot_every {
                since_snapshot = 0;
                batch.snapshot = Some(self.snapshot());
            }
            if let Err(e) = commit::commit(&mut self.journal, &shared, self.durability, &batch) {
                shared.fail(format!(
                    "journal write to {} failed: {e}",
                    self.journal.segment_path().display()
                ));
                return None; // the batch's replies are dropped uncalled
            }
            self.output.deliver(&mut batch);
            batch.clear();
        }
        // Clean shutdown: every accepted command has been sequenced and delivered. With
        // durability `None` the journal has not been synced: the final snapshot needs it
        // durable up to its sequence.
        if let Err(e) = self.journal.sync() {
            shared.fail(format!("journal sync at shutdown failed: {e}"));
            return None;
        }
        let last_seq = self.next_seq - 1;
        let final_snapshot = (last_seq > 0).then(|| self.snapshot());
        Some(self.output.finish(final_snapshot))
    }

    fn snapshot(&self) -> SnapshotData {
        SnapshotData {
            seq: self.next_seq - 1,
            timestamp_ns: self.last_timestamp_ns,
            state: state::encode(&self.engine),
        }
    }

    /// Takes commands from the rings into `batch`, round-robin.
    fn fill(&self, batch: &mut Batch, cursor: &mut usize) {
        let router = &self.shared.router;
        let rings = router.ring_count();
        *cursor = (*cursor + 1) % rings;
        loop {
            let before = batch.commands.len();
            for k in 0..rings {
                let ring = router.ring((*cursor + k) % rings);
                let mut taken = 0;
                while taken < QUANTUM && batch.commands.len() < self.batch_max {
                    let Some(job) = ring.pop() else { break };
                    batch.commands.push(job.command);
                    batch.replies.push(job.reply);
                    taken += 1;
                }
                if batch.commands.len() >= self.batch_max {
                    return;
                }
            }
            if batch.commands.len() == before {
                return;
            }
        }
    }

    /// Sequences and applies the commands in `batch`, framing their records.
    fn execute(&mut self, batch: &mut Batch) {
        let ts = unix_now_ns().max(self.last_timestamp_ns);
        self.last_timestamp_ns = ts;
        batch.first_seq = self.next_seq;
        batch.timestamp_ns = ts;
        for command in &batch.commands {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.engine.apply(command, &mut batch.events);
            batch.event_ends.push(batch.events.len());
            record::encode_into(&mut batch.records, seq, ts, command);
        }
        // Pairs added by this batch get their rings now.
        let router = &self.shared.router;
        let mut pairs = router.ring_count() - 1;
        while self.engine.pair(PairId(pairs as u16)).is_some() {
            pairs += 1;
        }
        router.ensure_pairs(pairs);
        let c = &self.shared.counters;
        c.commands
            .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        c.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
