//! The writer thread: journal appends and group commit.
//!
//! It takes every batch that is waiting (up to [`MAX_GROUP`]), appends their records, syncs
//! once (durability `Fsync`), and then hands the batches, in sequence order and as one
//! message, to the output thread ([`super::output`]), which runs the listener and the
//! replies while this thread syncs the next group. A write or sync error is fatal: the
//! pipeline is marked failed (every later submit is refused), the affected replies are
//! dropped uncalled (the caller sees its reply channel closed: outcome unknown), and nothing
//! is retried, because after a failed fsync the kernel may have dropped the dirty pages and
//! a retry could report success for data that is gone. Batches committed before the error
//! are still delivered.

use std::sync::Arc;
use std::time::Instant;

use super::batch::Batch;
use super::handoff::{HandoffReceiver, HandoffSender};
use super::journal::JournalWriter;
use super::output::OutputMsg;
use super::snapshot::SnapshotData;
use super::{Durability, Shared};

/// Most batches committed with one fsync.
const MAX_GROUP: usize = 64;

pub(crate) enum WriterMsg {
    Batch(Batch),
    /// Clean shutdown, with the final snapshot (if any command was ever applied).
    Stop(Option<SnapshotData>),
}

pub(crate) struct Writer {
    pub journal: JournalWriter,
    pub input: HandoffReceiver<WriterMsg>,
    /// Bounded: when the output thread falls behind, the writer waits (and through its own
    /// bounded input, so does the engine thread).
    pub to_output: HandoffSender<OutputMsg>,
    pub shared: Arc<Shared>,
    pub durability: Durability,
}

impl Writer {
    /// Runs until shutdown or a fatal error. On a clean stop the journal is synced and the
    /// stop (with the final snapshot) is passed on to the output thread.
    pub fn run(mut self) {
        let stop = commit_loop(
            &mut self.journal,
            &self.input,
            &self.shared,
            self.durability,
            &self.to_output,
        );
        if let Some(snap) = stop {
            // Durability `None` has not synced yet; the final snapshot needs the journal
            // durable up to its sequence.
            match self.journal.sync() {
                Ok(()) => {
                    let _ = self.to_output.send(OutputMsg::Stop(snap));
                }
                Err(e) => self
                    .shared
                    .fail(format!("journal sync at shutdown failed: {e}")),
            }
        }
    }
}

/// Appends, syncs and forwards groups of batches until a clean stop (`Some(final
/// snapshot)`) or a failure or a vanished engine thread (`None`).
fn commit_loop(
    journal: &mut JournalWriter,
    input: &HandoffReceiver<WriterMsg>,
    shared: &Shared,
    durability: Durability,
    to_output: &HandoffSender<OutputMsg>,
) -> Option<Option<SnapshotData>> {
    let mut group: Vec<Batch> = Vec::with_capacity(MAX_GROUP);
    let mut stop: Option<Option<SnapshotData>> = None;
    while stop.is_none() {
        match input.recv() {
            Ok(WriterMsg::Batch(b)) => group.push(b),
            Ok(WriterMsg::Stop(s)) => stop = Some(s),
            Err(_) => return None, // the engine thread is gone (failed)
        }
        while stop.is_none() && group.len() < MAX_GROUP {
            match input.try_recv() {
                Ok(WriterMsg::Batch(b)) => group.push(b),
                Ok(WriterMsg::Stop(s)) => stop = Some(s),
                Err(_) => break,
            }
        }
        if group.is_empty() {
            continue;
        }
        if let Err(e) = commit(journal, shared, durability, &group) {
            shared.fail(format!(
                "journal write to {} failed: {e}",
                journal.segment_path().display()
            ));
            return None; // the group's replies are dropped uncalled
        }
        let committed = std::mem::replace(&mut group, Vec::with_capacity(MAX_GROUP));
        if to_output.send(OutputMsg::Batches(committed)).is_err() {
            return None; // the output thread died (its guard recorded why)
        }
    }
    stop
}

fn commit(
    journal: &mut JournalWriter,
    shared: &Shared,
    durability: Durability,
    group: &[Batch],
) -> std::io::Result<()> {
    let c = &shared.counters;
    for b in group {
        journal.append(b.first_seq, &b.records)?;
        c.journal_bytes
            .fetch_add(b.records.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    // A snapshot is only written once the journal up to its sequence is durable, in
    // either durability mode (else a crash could leave a snapshot ahead of the journal).
    let snapshot_due = group.iter().any(|b| b.snapshot.is_some());
    if durability == Durability::Fsync || snapshot_due {
        let t = Instant::now();
        shared.router.writer_syncing(true);
        let synced = journal.sync();
        shared.router.writer_syncing(false);
        synced?;
        c.record_fsync(t.elapsed().as_nanos() as u64);
    }
    Ok(())
}
