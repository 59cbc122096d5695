//! Output: what happens to a batch once its journal records are durable, on the engine
//! thread right after the batch's commit ([`super::commit`]).
//!
//! One `listener.on_batch` over all the batch's commands (history store, market data), so
//! the listeners' own per-call costs (a queue hand-off to a store thread, a wake-up) are
//! paid once per batch; then the replies, `last_seq`, and the batch's snapshot, handed to
//! the snapshot thread, which writes it off the engine thread.
//!
//! Only durable batches get here, so nothing a consumer sees can be lost by a crash. On a
//! clean stop ([`Output::finish`]) the final snapshot is written after every batch before
//! it was delivered.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use super::batch::{Batch, processed};
use super::snapshot::{self, SnapshotData};
use super::storage::Storage;
use super::{OutputListener, Processed, Reply, Shared};

pub(crate) struct Output {
    listener: Box<dyn OutputListener>,
    shared: Arc<Shared>,
    storage: Arc<dyn Storage>,
    snapshot_dir: PathBuf,
    snapshots_kept: usize,
    /// The snapshot thread's queue (one waiting: a snapshot due while the last is still
    /// being written is skipped and counted) and the thread.
    snapshots: Option<(Sender<SnapshotData>, JoinHandle<()>)>,
    /// The batch's replies, taken out so the listener's view can borrow the batch.
    replies: Vec<Reply>,
    /// The allocation of the listener's view of a batch, kept empty between batches so the
    /// engine thread does not allocate one per batch (see [`recycle`]).
    views: Vec<Processed<'static>>,
}

impl Output {
    /// Starts the snapshot thread (without it, due snapshots are skipped and counted).
    pub fn new(
        listener: Box<dyn OutputListener>,
        shared: Arc<Shared>,
        storage: Arc<dyn Storage>,
        snapshot_dir: PathBuf,
        snapshots_kept: usize,
    ) -> Output {
        let (tx, rx) = crossbeam_channel::bounded::<SnapshotData>(1);
        let (storage2, dir, shared2) = (storage.clone(), snapshot_dir.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("bourse-snapshot".into())
            .spawn(move || {
                for snap in rx {
                    write_snapshot(&*storage2, &dir, &snap, snapshots_kept, &shared2);
                }
            })
            .ok();
        Output {
            listener,
            shared,
            storage,
            snapshot_dir,
            snapshots_kept,
            snapshots: thread.map(|t| (tx, t)),
            replies: Vec::new(),
            views: Vec::new(),
        }
    }

    /// Delivers a durable batch: `listener.on_batch` over all its commands, then every
    /// reply, `last_seq`, and the snapshot. Leaves the batch's commands in place (the caller
    /// clears it for reuse).
    pub fn deliver(&mut self, batch: &mut Batch) {
        self.replies.append(&mut batch.replies);
        let mut v: Vec<Processed<'_>> = recycle(std::mem::take(&mut self.views));
        v.reserve(batch.len());
        processed(
            batch.first_seq,
            batch.timestamp_ns,
            &batch.commands,
            &batch.event_ends,
            &batch.events,
            &mut v,
        );
        self.listener.on_batch(&v);
        for (reply, p) in self.replies.drain(..).zip(v.iter()) {
            reply(p);
        }
        self.views = recycle(v);
        self.shared
            .last_seq
            .store(batch.last_seq(), Ordering::Release);
        if let Some(snap) = batch.snapshot.take() {
            // A full queue (the last snapshot still being written) or no snapshot thread.
            let queued = self
                .snapshots
                .as_ref()
                .is_some_and(|(tx, _)| tx.try_send(snap).is_ok());
            if !queued {
                self.shared
                    .counters
                    .snapshots_skipped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Clean stop, with the journal durable up to `final_snapshot`'s sequence: lets the
    /// snapshot thread finish, writes the final snapshot, and gives the listener back.
    pub fn finish(mut self, final_snapshot: Option<SnapshotData>) -> Box<dyn OutputListener> {
        if let Some((tx, thread)) = self.snapshots.take() {
            drop(tx);
            let _ = thread.join();
        }
        if let Some(snap) = final_snapshot {
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
            tracing::error!(
                seq = snap.seq,
                dir = %dir.display(),
                error = %e,
                "snapshot write failed; the journal still holds everything, but recovery \
                 replays from the last snapshot written"
            );
            let msg = format!("snapshot {} in {} failed: {e}", snap.seq, dir.display());
            *shared.snapshot_error.lock() = Some(msg);
        }
    }
}

/// Empties `v` and gives its allocation back as a vector of another lifetime: the views of
/// one batch borrow that batch, so the vector that holds them cannot outlive it, but its
/// memory can. Collecting an emptied vector's `into_iter` into one of the same layout
/// reuses the allocation (std's in-place collection); nothing is converted, since nothing is
/// left in it.
// `filter_map` rather than `filter`: the point is the item type it returns.
#[allow(clippy::unnecessary_filter_map)]
fn recycle<'b>(mut v: Vec<Processed<'_>>) -> Vec<Processed<'b>> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

#[cfg(test)]
mod tests {
    use super::super::storage::FsStorage;
    use super::super::test_support::{log_of, shared};
    use super::*;

    /// The views' vector keeps its memory from batch to batch: same allocation, same
    /// capacity, empty.
    #[test]
    fn recycled_views_keep_their_allocation() {
        let v: Vec<Processed<'_>> = Vec::with_capacity(64);
        let (ptr, cap) = (v.as_ptr() as usize, v.capacity());
        let back: Vec<Processed<'static>> = recycle(v);
        assert_eq!(back.as_ptr() as usize, ptr);
        assert_eq!(back.capacity(), cap);
        assert!(back.is_empty());
    }

    /// A snapshot that cannot be written is an error in the `tracing` log, with the
    /// sequence, the directory and the I/O error as fields, and is kept for `/ready`; the
    /// pipeline goes on. It went to stderr with `eprintln!`, outside the server's log.
    #[test]
    fn a_failed_snapshot_is_logged_and_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // A file where the snapshots' directory should be: every write under it fails.
        let dir = tmp.path().join("snapshots");
        std::fs::write(&dir, b"not a directory").expect("write");
        let shared = shared(1);
        let snap = SnapshotData {
            seq: 7,
            timestamp_ns: 0,
            state: vec![1, 2, 3],
        };
        let log = log_of(|| write_snapshot(&FsStorage, &dir, &snap, 2, &shared));
        let line = log
            .lines()
            .find(|l| l.contains("snapshot write failed"))
            .unwrap_or_else(|| panic!("no failure in the log: {log:?}"));
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains("seq=7"), "{line}");
        assert!(line.contains(&format!("dir={}", dir.display())), "{line}");
        assert!(line.contains("error="), "{line}");
        let kept = shared
            .snapshot_error
            .lock()
            .clone()
            .expect("the error is kept");
        assert!(kept.contains("snapshot 7"), "{kept}");
        assert!(!shared.is_failed(), "a snapshot failure is not fatal");
        assert_eq!(shared.counters.snapshots_written.load(Ordering::Relaxed), 0);
    }
}
