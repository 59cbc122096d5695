//! The durable pipeline: sequencer, per-pair rings, the engine thread, the journal with group
//! commit, snapshots and recovery.
//!
//! ```text
//! submit(cmd, reply) --> per-pair ArrayQueue (full: Err(Busy), nothing lost, nothing held)
//!   engine thread: pop, assign seq + batch timestamp, Engine::apply -> events,
//!                  encode journal record; hand the batch to the writer
//!   writer thread: append records, fsync once per batch (group commit)
//!   output:        listener.on_batch(batch) (history store, market data), then the replies
//! ```
//! A reply, and every event a consumer sees, is released only after the batch is durable.

use std::path::PathBuf;

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

/// A consumer of outcomes (history store, market data). Called on the output thread, in
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
