//! The journal: append-only segment files in `data_dir/journal/`, each named by the sequence
//! number of its first record (`00000000000000000001.seg`), rolled at about 64 MiB.
//!
//! Segments are never pruned: the journal is the complete history, so a read model (the
//! history store) that is lost can be rebuilt by replaying from sequence 1. Snapshots only
//! bound the time to rebuild the engine itself.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::storage::{AppendFile, Storage};

/// Roll to a new segment once the current one holds this many bytes.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

const SUFFIX: &str = ".seg";

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SUFFIX}")
}

/// The first sequence number a segment file name stands for.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, ordered by first sequence.
pub fn list_segments(storage: &dyn Storage, dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments: Vec<(u64, PathBuf)> = storage
        .list(dir)?
        .into_iter()
        .filter_map(|name| parse_segment_name(&name).map(|seq| (seq, dir.join(name))))
        .collect();
    segments.sort_by_key(|(seq, _)| *seq);
    Ok(segments)
}

/// Appends records to the current segment and rolls segments.
#[derive(Debug)]
pub struct JournalWriter {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    file: Box<dyn AppendFile>,
    path: PathBuf,
    /// Bytes in the current segment.
    len: u64,
    segment_bytes: u64,
    /// Appended since the last sync.
    dirty: bool,
}

impl JournalWriter {
    /// Continues the segment at `path` (which holds `len` valid bytes), or starts a new one
    /// at `next_seq` when there is none.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        current: Option<(PathBuf, u64)>,
        next_seq: u64,
        segment_bytes: u64,
    ) -> io::Result<Self> {
        let (path, len) = match current {
            Some(c) => c,
            None => (dir.join(segment_name(next_seq)), 0),
        };
        let file = storage.open_append(&path)?;
        if len == 0 {
            storage.sync_dir(dir)?;
        }
        Ok(JournalWriter {
            storage,
            dir: dir.to_path_buf(),
            file,
            path,
            len,
            segment_bytes,
            dirty: false,
        })
    }

    /// Appends the records of one batch (whose first sequence is `first_seq`), rolling to a
    /// new segment first when the current one is full. A batch never spans two segments.
    pub fn append(&mut self, first_seq: u64, records: &[u8]) -> io::Result<()> {
        if self.len > 0 && self.len + records.len() as u64 > self.segment_bytes {
            self.roll(first_seq)?;
        }
        self.file.append(records)?;
        self.len += records.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    fn roll(&mut self, first_seq: u64) -> io::Result<()> {
        // The old segment's tail must be durable, and its zeros written ahead cut, before
        // records after it are: recovery only tolerates a torn (or zero) tail in the last
        // segment.
        self.file.finish()?;
        self.dirty = false;
        let path = self.dir.join(segment_name(first_seq));
        self.file = self.storage.open_append(&path)?;
        self.storage.sync_dir(&self.dir)?;
        self.path = path;
        self.len = 0;
        Ok(())
    }

    pub fn segment_path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_name(&segment_name(123_456)), Some(123_456));
        assert_eq!(parse_segment_name("1.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000001.seg.tmp"), None);
    }
}
