//! Group commit, on the engine thread: a batch's journal records are appended and synced
//! before anything of it is released.
//!
//! A batch is everything that queued in the rings while the engine thread was busy with the
//! previous one, its sync included, so one `fdatasync` covers as many commands as arrived
//! during the last: group commit without a timer or a thread of its own. (Until session 12
//! the engine, the journal writer and the output each had a thread, with a hand-off between
//! them; one thread does the three with half the context switches per command: in
//! `bourse bench http` the server's CPU per order placed fell by about 9 % (33.3 to 30.3 µs)
//! and creates per second rose by about 8 %, see `docs/performance-log.md`.)
//!
//! A write or sync error is fatal: the pipeline is marked failed (every later submit is
//! refused), the batch's replies are dropped uncalled (the caller sees its reply channel
//! closed: outcome unknown), and nothing is retried, because after a failed fsync the kernel
//! may have dropped the dirty pages and a retry could report success for data that is gone.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::batch::Batch;
use super::journal::JournalWriter;
use super::{Durability, Shared};

/// Appends `batch`'s records and, with durability `Fsync` (or a snapshot riding on the
/// batch), syncs them.
pub(crate) fn commit(
    journal: &mut JournalWriter,
    shared: &Shared,
    durability: Durability,
    batch: &Batch,
) -> std::io::Result<()> {
    let c = &shared.counters;
    journal.append(batch.first_seq, &batch.records)?;
    c.journal_bytes
        .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
    // A snapshot is only written once the journal up to its sequence is durable, in either
    // durability mode (else a crash could leave a snapshot ahead of the journal).
    if durability == Durability::Fsync || batch.snapshot.is_some() {
        let t = Instant::now();
        journal.sync()?;
        c.record_fsync(t.elapsed().as_nanos() as u64);
    }
    Ok(())
}
