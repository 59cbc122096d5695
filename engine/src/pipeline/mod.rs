//! The durable pipeline: sequencer, per-pair rings, the engine thread, the journal with group
//! commit, snapshots and recovery.
//!
//! ```text
//! submit(cmd, reply) --> per-pair ArrayQueue (full: Err(Busy), nothing lost, nothing held)
//!   engine thread: pop what queued, assign seq + batch timestamp, Engine::apply -> events,
//!                  encode journal records; append them and fsync once (group commit);
//!                  then listener.on_batch(batch) (history store, market data) and the replies
//! ```
//! A reply, and every event a consumer sees, is released only after the batch is durable.
//!
//! # Files
//! - `data_dir/journal/NNNNNNNNNNNNNNNNNNNN.seg`: the journal ([`journal`], framing in
//!   [`record`]). Never pruned: it is the full history, so a lost read model (the history
//!   store) can be rebuilt by replaying from sequence 1 (start with a listener whose
//!   `applied_seq()` is 0).
//! - `data_dir/snapshots/NNNNNNNNNNNNNNNNNNNN.snap`: engine snapshots ([`snapshot`]), the
//!   newest few kept; they bound the engine's recovery time.
//!
//! # Threads
//! Submitters (any thread, e.g. tokio tasks) push to rings ([`ring`]); the engine thread
//! ([`sequencer`]) owns the [`Engine`], commits each batch to the journal ([`commit`]) and
//! delivers it ([`output`]); a snapshot thread writes snapshot files off the hot path. One
//! thread for the three steps (there were three threads with queues between them until
//! session 12): each hand-off cost a wake-up, and on a loaded 2-core machine a woken thread
//! waits for a core, so fewer hand-offs are both less CPU per command and a shorter tail.
//!
//! # Replies
//! A reply runs on the engine thread: keep it short (send on a channel). A reply that is
//! dropped without being called means the pipeline failed (journal I/O error) or stopped
//! before the command was durable: its outcome is unknown to the caller, and after a
//! restart the command is either fully there or absent.

mod batch;
mod commit;
pub mod journal;
mod output;
pub mod record;
pub mod recovery;
mod ring;
mod sequencer;
pub mod snapshot;
mod stats;
pub mod storage;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::Mutex;

pub use recovery::RecoveryReport;
pub use sequencer::unix_now_ns;
pub use stats::{FSYNC_BUCKETS, PipelineStats, RingStats};
pub use storage::{FsStorage, SimDisk, Storage};

use crate::command::Command;
use crate::engine::{Engine, EngineLimits};
use crate::event::Event;

/// Whether the journal fsyncs before acknowledging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// fsync (fdatasync) once per batch before any reply of the batch is released.
    #[default]
    Fsync,
    /// Write to the OS only: survives a process crash, not a power loss. For benchmarks.
    None,
}

/// Pipeline settings.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Holds `journal/` and `snapshots/`.
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// Slots per ring (one ring per pair plus one for account and operator commands).
    pub ring_capacity: usize,
    /// Most commands per group-commit batch.
    pub batch_max: usize,
    /// Write a snapshot every this many commands (0: only on shutdown).
    pub snapshot_every: u64,
    pub limits: EngineLimits,
}

impl PipelineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        PipelineConfig {
            data_dir: data_dir.into(),
            durability: Durability::Fsync,
            ring_capacity: 65_536,
            batch_max: 4096,
            snapshot_every: 1_000_000,
            limits: EngineLimits::default(),
        }
    }
}

/// One sequenced, executed command as consumers see it.
#[derive(Clone, Copy, Debug)]
pub struct Processed<'a> {
    /// Gap-free, from 1.
    pub seq: u64,
    /// Unix nanoseconds, assigned by the sequencer once per batch, never decreasing.
    pub timestamp_ns: i64,
    pub command: &'a Command,
    pub events: &'a [Event],
}

/// A consumer of outcomes (history store, market data). Called on the engine thread, in
/// sequence order, after the batch is durable and before its replies are released.
pub trait OutputListener: Send + 'static {
    /// The highest sequence this consumer has already applied durably (0: none). Recovery
    /// starts from a snapshot no newer than the smallest of these, so that every consumer
    /// sees every event it is missing; a consumer skips batches it already has.
    fn applied_seq(&self) -> u64;
    /// Called once after recovery (replayed batches have been delivered), with the engine
    /// as it stands at `last_seq`, so consumers can initialise derived state (book levels,
    /// balances, id counters).
    fn on_recovered(&mut self, engine: &Engine, last_seq: u64);
    /// A batch of processed commands (during replay too).
    fn on_batch(&mut self, batch: &[Processed<'_>]);
}

/// Called with the command's outcome once it is durable and the listeners have seen it.
pub type Reply = Box<dyn FnOnce(&Processed<'_>) + Send>;

/// Composes consumers: each sees every batch; recovery serves the one that needs the most.
impl OutputListener for Vec<Box<dyn OutputListener>> {
    fn applied_seq(&self) -> u64 {
        self.iter()
            .map(|l| l.applied_seq())
            .min()
            .unwrap_or(u64::MAX)
    }

    fn on_recovered(&mut self, engine: &Engine, last_seq: u64) {
        for l in self.iter_mut() {
            l.on_recovered(engine, last_seq);
        }
    }

    fn on_batch(&mut self, batch: &[Processed<'_>]) {
        for l in self.iter_mut() {
            l.on_batch(batch);
        }
    }
}

/// A listener that needs nothing and ignores everything (benchmarks, tests).
#[derive(Clone, Copy, Debug, Default)]
pub struct NullListener;

impl OutputListener for NullListener {
    fn applied_seq(&self) -> u64 {
        u64::MAX
    }
    fn on_recovered(&mut self, _engine: &Engine, _last_seq: u64) {}
    fn on_batch(&mut self, _batch: &[Processed<'_>]) {}
}

/// Why a command was not accepted. Nothing was queued; the caller still owns the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The command's ring is full: try again later (HTTP 503).
    #[error("the engine is busy")]
    Busy,
    /// The pipeline is shutting down or has failed ([`Pipeline::failure`] says why).
    #[error("the engine has stopped")]
    Stopped,
}

/// Why the pipeline could not start (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Damage before the journal's tail: recovery refuses to guess.
    #[error("journal is corrupt: {file} at byte {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The journal asks for matching rules this build does not have (written by a newer
    /// build): replaying it under older rules could book what never happened, so recovery
    /// stops instead.
    #[error(
        "journal {file} at byte {offset} moves to matching rules version {version}, but this \
         build knows versions up to {known}: run the build that wrote it, or a newer one"
    )]
    NewerJournal {
        file: PathBuf,
        offset: u64,
        version: u32,
        known: u32,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot spawn a pipeline thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The pipeline failed while running (journal I/O error, a panicking thread).
    #[error("the pipeline failed: {0}")]
    Failed(String),
}

/// Tuning and the storage backend, beyond [`PipelineConfig`].
#[derive(Clone, Debug)]
pub struct StartOptions {
    pub storage: Arc<dyn Storage>,
    /// Roll journal segments at about this size.
    pub segment_bytes: u64,
    /// Snapshot files kept.
    pub snapshots_kept: usize,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            storage: Arc::new(FsStorage),
            segment_bytes: journal::DEFAULT_SEGMENT_BYTES,
            snapshots_kept: snapshot::DEFAULT_SNAPSHOTS_KEPT,
        }
    }
}

/// State shared by the pipeline handle and its threads.
#[derive(Debug)]
pub(crate) struct Shared {
    router: ring::Router,
    counters: stats::Counters,
    /// Last sequence durable and delivered (its reply has run).
    last_seq: AtomicU64,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
    snapshot_error: Mutex<Option<String>>,
}

impl Shared {
    fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Marks the pipeline failed: loud (an error in the log, through `tracing` like the rest
    /// of the server's log), final, no retry.
    fn fail(&self, why: String) {
        tracing::error!(
            reason = %why,
            last_durable_seq = self.last_seq.load(Ordering::Acquire),
            "the pipeline failed: the engine has stopped for good; restart to recover"
        );
        {
            let mut f = self.failure.lock();
            if f.is_none() {
                *f = Some(why);
            }
        }
        self.failed.store(true, Ordering::Release);
        self.router.quiesce();
        // Nothing queued will be sequenced now (the engine thread stops at its next turn,
        // or has panicked): drop those commands' replies, so their submitters stop waiting
        // and release what they hold. Never sequenced, they are not in the journal.
        self.router.discard_queued();
        self.router.wake();
    }
}

/// Marks the pipeline failed if a pipeline thread unwinds.
struct PanicGuard(Arc<Shared>, &'static str);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail(format!("the {} thread panicked", self.1));
        }
    }
}

/// The running pipeline. `Send + Sync`: share it behind an `Arc`.
#[derive(Debug)]
pub struct Pipeline {
    shared: Arc<Shared>,
    control: crossbeam_channel::Sender<sequencer::Control>,
    /// Gives the listener back on a clean stop.
    engine_thread: Option<JoinHandle<Option<Box<dyn OutputListener>>>>,
    report: RecoveryReport,
}

impl std::fmt::Debug for dyn OutputListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputListener")
    }
}

impl std::fmt::Debug for sequencer::Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control")
    }
}

impl Pipeline {
    /// Recovers from `config.data_dir` on the real file system and starts the threads.
    pub fn start(
        config: PipelineConfig,
        listener: Box<dyn OutputListener>,
    ) -> Result<Pipeline, PipelineError> {
        Self::start_with(config, StartOptions::default(), listener)
    }

    /// [`Pipeline::start`] with another storage backend or tuning.
    pub fn start_with(
        config: PipelineConfig,
        options: StartOptions,
        mut listener: Box<dyn OutputListener>,
    ) -> Result<Pipeline, PipelineError> {
        if config.batch_max == 0 || config.ring_capacity == 0 {
            return Err(PipelineError::Config(
                "batch_max and ring_capacity must be at least 1".into(),
            ));
        }
        let storage = options.storage.clone();
        let recovered =
            recovery::recover(&storage, &config.data_dir, config.limits, &mut *listener)?;
        let journal_dir = config.data_dir.join("journal");
        let journal = journal::JournalWriter::open(
            storage.clone(),
            &journal_dir,
            recovered.current_segment.clone(),
            recovered.last_seq + 1,
            options.segment_bytes,
        )
        .map_err(|source| PipelineError::Io {
            op: "open journal segment in",
            path: journal_dir.clone(),
            source,
        })?;

        let router = ring::Router::new(config.ring_capacity);
        let mut pairs = 0usize;
        while recovered
            .engine
            .pair(crate::ids::PairId(pairs as u16))
            .is_some()
        {
            pairs += 1;
        }
        router.ensure_pairs(pairs);
        let shared = Arc::new(Shared {
            router,
            counters: stats::Counters::default(),
            last_seq: AtomicU64::new(recovered.last_seq),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            snapshot_error: Mutex::new(None),
        });

        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        let output = output::Output::new(
            listener,
            shared.clone(),
            storage,
            config.data_dir.join("snapshots"),
            options.snapshots_kept,
        );
        let seq = sequencer::Sequencer {
            engine: recovered.engine,
            shared: shared.clone(),
            control: control_rx,
            journal,
            durability: config.durability,
            output,
            batch_max: config.batch_max,
            snapshot_every: config.snapshot_every,
            next_seq: recovered.last_seq + 1,
            last_timestamp_ns: recovered.last_timestamp_ns,
        };
        let guard_shared = shared.clone();
        let engine_thread = std::thread::Builder::new()
            .name("bourse-engine".into())
            .spawn(move || {
                let _guard = PanicGuard(guard_shared, "engine");
                seq.run()
            })
            .map_err(PipelineError::Spawn)?;
        shared
            .router
            .set_engine_thread(engine_thread.thread().clone());

        Ok(Pipeline {
            shared,
            control: control_tx,
            engine_thread: Some(engine_thread),
            report: recovered.report,
        })
    }

    /// Queues a command. `reply` runs (on the engine thread) once the command is durable and
    /// the listener has seen it. Never blocks: a full ring is [`SubmitError::Busy`].
    pub fn submit(&self, command: Command, reply: Reply) -> Result<(), SubmitError> {
        self.shared.router.submit(command, reply)
    }

    /// The last sequence number that is durable and whose reply has run.
    pub fn last_seq(&self) -> u64 {
        self.shared.last_seq.load(Ordering::Acquire)
    }

    /// Runs `f` on the engine thread against the engine as it stands (every command
    /// sequenced so far applied, durable or not yet). Blocks the caller until answered;
    /// don't call it from an async task without `spawn_blocking`.
    pub fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> R + Send + 'static,
    ) -> Result<R, SubmitError> {
        self.query_at(move |e, _| f(e))
    }

    /// [`Pipeline::query`], with the sequence number of the last command the engine has
    /// applied (sequenced: it may not be durable or delivered yet). Two answers with the
    /// same number saw the same engine, so whatever a listener holds once it has been
    /// delivered up to that number is what the engine held then (the audit's consistent
    /// cut).
    pub fn query_at<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine, u64) -> R + Send + 'static,
    ) -> Result<R, SubmitError> {
        if self.shared.is_failed() || self.shared.router.is_stopped() {
            return Err(SubmitError::Stopped);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let job: sequencer::QueryJob = Box::new(move |e: &Engine, seq| {
            let _ = tx.send(f(e, seq));
        });
        self.control
            .send(sequencer::Control::Query(job))
            .map_err(|_| SubmitError::Stopped)?;
        self.shared.router.wake_always();
        rx.recv().map_err(|_| SubmitError::Stopped)
    }

    /// The engine's state hash (see [`crate::state::state_hash`]), asked of the engine thread.
    pub fn state_hash(&self) -> Result<u64, SubmitError> {
        self.query(|e| e.state_hash())
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> PipelineStats {
        let mut s = self.shared.counters.snapshot();
        s.busy_rejections = self.shared.router.busy_count();
        s.rings = self
            .shared
            .router
            .occupancy()
            .into_iter()
            .map(|(pair, len, capacity)| RingStats {
                pair,
                len,
                capacity,
            })
            .collect();
        s.last_seq = self.last_seq();
        s.failed = self.has_failed();
        s
    }

    /// What start-up recovery did.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Whether the pipeline has failed for good (cheap: one atomic load, for probes).
    pub fn has_failed(&self) -> bool {
        self.shared.is_failed()
    }

    /// Why the pipeline failed, if it did (journal I/O error, a panicking thread).
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.lock().clone()
    }

    /// The last snapshot write error, if any (not fatal: the journal has everything).
    pub fn snapshot_error(&self) -> Option<String> {
        self.shared.snapshot_error.lock().clone()
    }

    /// Stops accepting commands, runs every accepted one to durability (replies included),
    /// writes a final snapshot and joins the threads. Returns the listener.
    pub fn shutdown(mut self) -> Result<Box<dyn OutputListener>, PipelineError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<Box<dyn OutputListener>, PipelineError> {
        self.shared.router.quiesce();
        let _ = self.control.send(sequencer::Control::Shutdown);
        self.shared.router.wake_always();
        let listener = self
            .engine_thread
            .take()
            .map(|h| h.join())
            .transpose()
            .map_err(|_| PipelineError::Failed("the engine thread panicked".into()))?
            .flatten();
        if let Some(why) = self.failure() {
            return Err(PipelineError::Failed(why));
        }
        listener.ok_or_else(|| PipelineError::Failed("already stopped".into()))
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if self.engine_thread.is_some() {
            let _ = self.stop();
        }
    }
}

/// What a pipeline test needs of [`Shared`] and of the log.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A fresh [`Shared`] with `pairs` rings, nothing failed.
    pub(crate) fn shared(pairs: usize) -> Shared {
        let router = ring::Router::new(16);
        router.ensure_pairs(pairs);
        Shared {
            router,
            counters: stats::Counters::default(),
            last_seq: AtomicU64::new(41),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            snapshot_error: Mutex::new(None),
        }
    }

    /// The `tracing` log `f` writes on this thread, as plain text lines.
    pub(crate) use crate::log_capture::log_of;
}

#[cfg(test)]
mod tests {
    use super::test_support::{log_of, shared};

    /// The fatal failure is an error in the `tracing` log, with its reason and the last
    /// durable sequence as fields, and it marks the pipeline failed. It went to stderr with
    /// `eprintln!`, outside the server's log and its format (a log shipper reading the
    /// server's log never saw it).
    #[test]
    fn the_fatal_failure_is_logged_as_an_error() {
        let shared = shared(1);
        let log = log_of(|| shared.fail("journal append failed: disk full".to_string()));
        let line = log
            .lines()
            .find(|l| l.contains("the engine has stopped"))
            .unwrap_or_else(|| panic!("no failure in the log: {log:?}"));
        assert!(line.contains("ERROR"), "{line}");
        assert!(
            line.contains("reason=journal append failed: disk full"),
            "{line}"
        );
        assert!(line.contains("last_durable_seq=41"), "{line}");
        assert!(shared.is_failed());
        assert_eq!(
            shared.failure.lock().as_deref(),
            Some("journal append failed: disk full")
        );
    }
}
