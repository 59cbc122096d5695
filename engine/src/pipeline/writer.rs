//! The writer thread: journal appends, group commit, then output.
//!
//! It takes every batch that is waiting (up to [`MAX_GROUP`]), appends their records, syncs
//! once (durability `Fsync`), and only then, batch by batch in sequence order, calls the
//! listener and runs the replies. A write or sync error is fatal: the pipeline is marked
//! failed (every later submit is refused), the affected replies are dropped uncalled (the
//! caller sees its reply channel closed: outcome unknown), and nothing is retried, because
//! after a failed fsync the kernel may have dropped the dirty pages and a retry could report
//! success for data that is gone.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::batch::{Batch, processed};
use super::journal::JournalWriter;
use super::snapshot::{self, SnapshotData};
use super::storage::Storage;
use super::{Durability, OutputListener, Processed, Shared};

/// Most batches committed with one fsync.
const MAX_GROUP: usize = 64;

pub(crate) enum WriterMsg {
    Batch(Batch),
    /// Clean shutdown, with the final snapshot (if any command was ever applied).
    Stop(Option<SnapshotData>),
}

pub(crate) struct Writer {
    pub journal: JournalWriter,
    pub input: Receiver<WriterMsg>,
    pub pool: Sender<Batch>,
    pub listener: Box<dyn OutputListener>,
    pub shared: Arc<Shared>,
    pub durability: Durability,
    pub storage: Arc<dyn Storage>,
    pub snapshot_dir: PathBuf,
    pub snapshots_kept: usize,
}

impl Writer {
    /// Runs until shutdown or a fatal error; returns the listener (for a clean shutdown).
    pub fn run(mut self) -> Box<dyn OutputListener> {
        let (snap_tx, snap_rx) = crossbeam_channel::bounded::<SnapshotData>(1);
        let snapshotter = self.spawn_snapshotter(snap_rx);
        let mut group: Vec<Batch> = Vec::with_capacity(MAX_GROUP);
        let mut stop: Option<Option<SnapshotData>> = None;
        while stop.is_none() {
            match self.input.recv() {
                Ok(WriterMsg::Batch(b)) => group.push(b),
                Ok(WriterMsg::Stop(s)) => stop = Some(s),
                Err(_) => break, // the engine thread is gone (failed)
            }
            while stop.is_none() && group.len() < MAX_GROUP {
                match self.input.try_recv() {
                    Ok(WriterMsg::Batch(b)) => group.push(b),
                    Ok(WriterMsg::Stop(s)) => stop = Some(s),
                    Err(_) => break,
                }
            }
            if group.is_empty() {
                continue;
            }
            if let Err(e) = self.commit(&group) {
                self.shared.fail(format!(
                    "journal write to {} failed: {e}",
                    self.journal.segment_path().display()
                ));
                drop(group); // replies dropped uncalled
                drop(snap_tx);
                let _ = snapshotter.map(JoinHandle::join);
                return self.listener;
            }
            for mut b in group.drain(..) {
                let mut views: Vec<Processed<'_>> = Vec::with_capacity(b.len());
                processed(
                    b.first_seq,
                    b.timestamp_ns,
                    &b.commands,
                    &b.event_ends,
                    &b.events,
                    &mut views,
                );
                self.listener.on_batch(&views);
                for (reply, p) in b.replies.drain(..).zip(views.iter()) {
                    reply(p);
                }
                self.shared.last_seq.store(b.last_seq(), Ordering::Release);
                if let Some(snap) = b.snapshot.take() {
                    match snap_tx.try_send(snap) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                            self.shared
                                .counters
                                .snapshots_skipped
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                drop(views);
                b.clear();
                let _ = self.pool.send(b);
            }
        }
        drop(snap_tx);
        if let Some(h) = snapshotter {
            let _ = h.join();
        }
        if let Some(Some(snap)) = stop {
            if let Err(e) = self.journal.sync() {
                self.shared
                    .fail(format!("journal sync at shutdown failed: {e}"));
            } else {
                self.write_snapshot(&snap);
            }
        }
        self.listener
    }

    fn commit(&mut self, group: &[Batch]) -> std::io::Result<()> {
        let c = &self.shared.counters;
        for b in group {
            self.journal.append(b.first_seq, &b.records)?;
            c.journal_bytes
                .fetch_add(b.records.len() as u64, Ordering::Relaxed);
        }
        // A snapshot is only written once the journal up to its sequence is durable, in
        // either durability mode (else a crash could leave a snapshot ahead of the journal).
        let snapshot_due = group.iter().any(|b| b.snapshot.is_some());
        if self.durability == Durability::Fsync || snapshot_due {
            let t = Instant::now();
            self.journal.sync()?;
            c.record_fsync(t.elapsed().as_nanos() as u64);
        }
        Ok(())
    }

    fn write_snapshot(&self, snap: &SnapshotData) {
        write_snapshot(
            &*self.storage,
            &self.snapshot_dir,
            snap,
            self.snapshots_kept,
            &self.shared,
        );
    }

    fn spawn_snapshotter(&self, rx: Receiver<SnapshotData>) -> Option<JoinHandle<()>> {
        let storage = self.storage.clone();
        let dir = self.snapshot_dir.clone();
        let keep = self.snapshots_kept;
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("bourse-snapshot".into())
            .spawn(move || {
                for snap in rx {
                    write_snapshot(&*storage, &dir, &snap, keep, &shared);
                }
            })
            .ok()
    }
}

/// Writes a snapshot; a failure is reported, not fatal (the journal still holds everything).
fn write_snapshot(
    storage: &dyn Storage,
    dir: &std::path::Path,
    snap: &SnapshotData,
    keep: usize,
    shared: &Shared,
) {
    match snapshot::write(storage, dir, snap, keep) {
        Ok(()) => {
            shared
                .counters
                .snapshots_written
                .fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            let msg = format!("snapshot {} in {} failed: {e}", snap.seq, dir.display());
            eprintln!("bourse pipeline: {msg}");
            *shared.snapshot_error.lock() = Some(msg);
        }
    }
}
