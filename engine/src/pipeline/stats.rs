//! Counters for `/metrics`: plain relaxed atomics written by the engine thread.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ids::PairId;

/// Fsync latency buckets: bucket `i` counts syncs that took under `2^i` microseconds
/// (the last bucket takes everything slower).
pub const FSYNC_BUCKETS: usize = 24;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub commands: AtomicU64,
    pub batches: AtomicU64,
    pub journal_bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_ns_sum: AtomicU64,
    pub fsync_ns_max: AtomicU64,
    pub fsync_us_buckets: [AtomicU64; FSYNC_BUCKETS],
    pub snapshots_written: AtomicU64,
    pub snapshots_skipped: AtomicU64,
}

impl Counters {
    pub fn record_fsync(&self, ns: u64) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_ns_sum.fetch_add(ns, Ordering::Relaxed);
        self.fsync_ns_max.fetch_max(ns, Ordering::Relaxed);
        let us = ns / 1000;
        let bucket = (64 - us.leading_zeros() as usize).min(FSYNC_BUCKETS - 1);
        self.fsync_us_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// One ring's fill level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingStats {
    /// The pair, or `None` for the control ring.
    pub pair: Option<PairId>,
    pub len: usize,
    pub capacity: usize,
}

/// A point-in-time copy of the pipeline's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Commands sequenced and applied since start (replay not included).
    pub commands: u64,
    /// Batches committed.
    pub batches: u64,
    /// Submits refused because a ring was full.
    pub busy_rejections: u64,
    pub rings: Vec<RingStats>,
    /// Journal bytes appended since start.
    pub journal_bytes: u64,
    pub fsyncs: u64,
    pub fsync_ns_sum: u64,
    pub fsync_ns_max: u64,
    /// Bucket `i`: fsyncs faster than `2^i` microseconds and not faster than `2^(i-1)`
    /// (bucket 0: under 1 us); the last bucket is open-ended.
    pub fsync_us_buckets: [u64; FSYNC_BUCKETS],
    pub snapshots_written: u64,
    /// Periodic snapshots dropped because the previous one was still being written.
    pub snapshots_skipped: u64,
    pub last_seq: u64,
    /// The pipeline has failed for good ([`super::Pipeline::has_failed`]).
    pub failed: bool,
}

impl Counters {
    pub fn snapshot(&self) -> PipelineStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut buckets = [0u64; FSYNC_BUCKETS];
        for (b, a) in buckets.iter_mut().zip(&self.fsync_us_buckets) {
            *b = load(a);
        }
        PipelineStats {
            commands: load(&self.commands),
            batches: load(&self.batches),
            journal_bytes: load(&self.journal_bytes),
            fsyncs: load(&self.fsyncs),
            fsync_ns_sum: load(&self.fsync_ns_sum),
            fsync_ns_max: load(&self.fsync_ns_max),
            fsync_us_buckets: buckets,
            snapshots_written: load(&self.snapshots_written),
            snapshots_skipped: load(&self.snapshots_skipped),
            ..PipelineStats::default()
        }
    }
}
