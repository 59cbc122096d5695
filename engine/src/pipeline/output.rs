//! The output thread: what happens to a batch once its journal records are durable.
//!
//! The writer thread hands every committed batch here, in sequence order, and goes straight
//! back to appending and syncing the next group, so the listener (history store, market
//! data) and the replies for one group run while the next group's fsync is in flight instead
//! of after it. Every batch waiting is delivered as one group (the batches of one fsync
//! usually arrive together): one `listener.on_batch` over all their commands, so the
//! listeners' own per-call costs (a queue hand-off to a store thread, a wake-up, a SQLite
//! transaction there) are paid once per group instead of once per batch; then the replies,
//! `last_seq`, each batch's snapshot (handed to the snapshot thread), and the batches back
//! to the pool.
//!
//! Only durable batches ever arrive, so nothing a consumer sees can be lost by a crash. On a
//! clean stop the final snapshot is written here, after every batch before it was delivered.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::batch::{Batch, processed};
use super::handoff::HandoffReceiver;
use super::snapshot::{self, SnapshotData};
use super::storage::Storage;
use super::{OutputListener, Processed, Reply, Shared};

/// Most committed batches delivered to the listener as one.
const MAX_GROUP: usize = 64;

pub(crate) enum OutputMsg {
    /// The batches of one fsync, in sequence order, whose records are durable: one message
    /// (one wake-up of this thread) per group commit rather than one per batch.
    Batches(Vec<Batch>),
    /// Clean shutdown: the journal is synced; the final snapshot, if any command was applied.
    Stop(Option<SnapshotData>),
}

pub(crate) struct Output {
    pub input: HandoffReceiver<OutputMsg>,
    pub pool: Sender<Batch>,
    pub listener: Box<dyn OutputListener>,
    pub shared: Arc<Shared>,
    pub storage: Arc<dyn Storage>,
    pub snapshot_dir: PathBuf,
    pub snapshots_kept: usize,
}

impl Output {
    /// Delivers batches until a stop or until the writer goes away (a failure); returns the
    /// listener.
    pub fn run(mut self) -> Box<dyn OutputListener> {
        let (snap_tx, snap_rx) = crossbeam_channel::bounded::<SnapshotData>(1);
        let snapshotter = self.spawn_snapshotter(snap_rx);
        let mut group: Vec<Batch> = Vec::with_capacity(MAX_GROUP);
        let mut replies: Vec<Reply> = Vec::new();
        let mut stop = None;
        while stop.is_none() {
            match self.input.recv() {
                Ok(OutputMsg::Batches(bs)) => group.extend(bs),
                Ok(OutputMsg::Stop(snap)) => stop = Some(snap),
                Err(_) => break, // the writer is gone (a failure)
            }
            while stop.is_none() && group.len() < MAX_GROUP {
                match self.input.try_recv() {
                    Ok(OutputMsg::Batches(bs)) => group.extend(bs),
                    Ok(OutputMsg::Stop(snap)) => stop = Some(snap),
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.deliver(&mut group, &mut replies, &snap_tx);
            }
        }
        drop(snap_tx);
        if let Some(h) = snapshotter {
            let _ = h.join();
        }
        if let Some(snap) = stop.flatten() {
            write_snapshot(
                &*self.storage,
                &self.snapshot_dir,
                &snap,
                self.snapshots_kept,
                &self.shared,
            );
        }
        self.listener
    }

    /// Delivers `group` (consecutive batches, in sequence order) as one: one
    /// `listener.on_batch` over all their commands, then every reply, `last_seq`, the
    /// snapshots, and the batches back to the pool.
    fn deliver(
        &mut self,
        group: &mut Vec<Batch>,
        replies: &mut Vec<Reply>,
        snap_tx: &Sender<SnapshotData>,
    ) {
        // The replies are taken out first so the listener's view can borrow the batches.
        for b in group.iter_mut() {
            replies.append(&mut b.replies);
        }
        let commands = group.iter().map(Batch::len).sum();
        let mut v: Vec<Processed<'_>> = Vec::with_capacity(commands);
        for b in group.iter() {
            processed(
                b.first_seq,
                b.timestamp_ns,
                &b.commands,
                &b.event_ends,
                &b.events,
                &mut v,
            );
        }
        self.listener.on_batch(&v);
        for (reply, p) in replies.drain(..).zip(v.iter()) {
            reply(p);
        }
        drop(v);
        for mut b in group.drain(..) {
            self.shared.last_seq.store(b.last_seq(), Ordering::Release);
            if let Some(snap) = b.snapshot.take()
                && let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                    snap_tx.try_send(snap)
            {
                self.shared
                    .counters
                    .snapshots_skipped
                    .fetch_add(1, Ordering::Relaxed);
            }
            b.clear();
            let _ = self.pool.send(b);
        }
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
