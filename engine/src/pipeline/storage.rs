//! The file operations the journal and snapshots need, behind a small trait.
//!
//! Two implementations: [`FsStorage`] (the real file system: `write`, `fdatasync`, `rename`,
//! directory fsync) and [`SimDisk`], a test double that keeps what was written but not yet
//! synced apart from what is durable, and on a (seeded) crash loses all or a random part of
//! the unsynced tail of every file. Paths are whatever the pipeline passes (under
//! `data_dir`); `SimDisk` treats them as plain keys.
//!
//! [`FsStorage`]'s append files are written over zeros laid down ahead of the writer
//! ([`PREFILL_BYTES`] at a time): an `fdatasync` after an append that grows the file must
//! also commit the file system's journal (the new size, the new blocks), one after an
//! overwrite flushes the data alone. On this project's disk (ext4) that made a sync of a
//! batch about 30 % shorter (mean 95-103 against 135-145 us, `python3
//! benches/scripts/fsync_prefill.py /work`; `fallocate` instead of zeros
//! gave half of that, its unwritten extents still need a commit when first written), and
//! under `bourse bench http` the mean sync fell from 336-484 to 286-321 us (how it was
//! measured: `docs/performance-log.md`, session 13). Large appends
//! ([`PREFILL_MAX_APPEND`]) skip the zeros: they amortize the commit themselves. A file so
//! written ends in zeros until [`AppendFile::finish`] cuts them; recovery reads a zero tail
//! as the end of the journal (a zero header is never a valid record) and cuts it too.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// A file opened for appending.
pub trait AppendFile: Send + fmt::Debug {
    /// Appends all of `buf` (to the OS; not durable until [`AppendFile::sync_data`]).
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes every byte appended so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Makes every byte appended so far durable and leaves the file exactly that long (cuts
    /// the zeros written ahead), before the file is closed for good.
    fn finish(&mut self) -> io::Result<()>;
}

/// Zeros [`FsStorage`] writes ahead of an append file's end at a time (a sync that grows
/// the file comes once per this many bytes appended instead of at every batch).
pub const PREFILL_BYTES: u64 = 1 << 20;

/// Appends of at least this many bytes are written without zeros ahead (in
/// `bourse bench pipeline`, batches of ~120 KB, writing every byte twice raised the ack
/// p99 from 1.2-1.3 to 2.3-2.8 ms for no shorter sync).
pub const PREFILL_MAX_APPEND: usize = 64 << 10;

/// File operations over a directory tree.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the files directly in `dir` (not sorted).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens (creating it if needed) `path` for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;
    /// Creates or replaces `path` with `bytes` and makes the content durable (not the name:
    /// see [`Storage::sync_dir`]).
    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Cuts `path` to `len` bytes, durably.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsStorage;

#[derive(Debug)]
struct FsAppend {
    file: File,
    /// Bytes appended: where the next append goes.
    end: u64,
    /// The file's length: zeros from `end` to here.
    prefilled: u64,
    /// Writing zeros ahead failed once (no space): appends go on without them.
    prefill_failed: bool,
}

impl AppendFile for FsAppend {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let new_end = self.end + buf.len() as u64;
        // A large append pays the file system's journal commit over its own bytes: only
        // small ones (a closed loop's batches) are worth the zeros' doubled writes.
        if new_end > self.prefilled && !self.prefill_failed && buf.len() < PREFILL_MAX_APPEND {
            // Zeros ahead are a speed-up, not a need: where they do not fit (a disk that
            // is nearly full) the records are written without them, and only a record that
            // itself cannot be written is an error.
            static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
            let target = new_end + PREFILL_BYTES;
            while self.prefilled < target {
                let n = (target - self.prefilled).min(ZEROS.len() as u64);
                if self
                    .file
                    .write_all_at(&ZEROS[..n as usize], self.prefilled)
                    .is_err()
                {
                    // Part of the chunk may be there: the file's length says how much.
                    self.prefilled = self.file.metadata()?.len().max(self.end);
                    self.prefill_failed = true;
                    break;
                }
                self.prefilled += n;
            }
        }
        self.file.write_all_at(buf, self.end)?;
        self.end = new_end;
        self.prefilled = self.prefilled.max(new_end);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.file.set_len(self.end)?;
        self.prefilled = self.end;
        self.file.sync_all()
    }
}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        let end = file.metadata()?.len();
        Ok(Box::new(FsAppend {
            file,
            end,
            prefilled: end,
            prefill_failed: false,
        }))
    }

    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = File::create(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

// ----- the simulated disk ---------------------------------------------------------------

#[derive(Debug, Default)]
struct SimFile {
    data: Vec<u8>,
    /// Bytes of `data` that are durable.
    synced: usize,
}

#[derive(Debug)]
struct SimState {
    files: BTreeMap<PathBuf, SimFile>,
    /// Operations performed (appends, syncs, writes, renames, ...).
    ops: u64,
    /// After this many operations the disk "dies": every further operation fails.
    crash_at: Option<u64>,
    dead: bool,
}

/// A disk in memory that can crash. Every operation counts; at the seeded crash point the disk
/// dies (every operation fails with an I/O error, as a killed process would stop), and
/// [`SimDisk::crash`] then drops data that was never synced (keeping a seeded random part of
/// each file's unsynced tail, to produce torn records) and revives the disk for a restart.
///
/// Names (creation, rename, removal) are modelled as durable at once; only file contents
/// have a volatile part. That is the weaker guarantee for the journal (whose safety rests
/// on `fdatasync` of contents), which is what this double exists to check.
#[derive(Clone, Debug)]
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
}

impl Default for SimDisk {
    fn default() -> Self {
        Self::new()
    }
}

fn dead() -> io::Error {
    io::Error::other("simulated disk crashed")
}

impl SimDisk {
    pub fn new() -> Self {
        SimDisk {
            state: Arc::new(Mutex::new(SimState {
                files: BTreeMap::new(),
                ops: 0,
                crash_at: None,
                dead: false,
            })),
        }
    }

    /// Makes the disk die after `ops` more operations.
    pub fn crash_after(&self, ops: u64) {
        let mut s = self.state.lock();
        s.crash_at = Some(s.ops + ops);
    }

    /// Operations performed so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// True once the crash point was reached.
    pub fn is_dead(&self) -> bool {
        self.state.lock().dead
    }

    /// Power loss: every file keeps its synced bytes plus a seeded random prefix of its
    /// unsynced tail (possibly none). The disk then works again.
    pub fn crash(&self, seed: u64) {
        let mut s = self.state.lock();
        let mut rng = seed | 1;
        for file in s.files.values_mut() {
            let unsynced = file.data.len() - file.synced;
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let keep = if unsynced == 0 || rng.is_multiple_of(3) {
                0
            } else {
                (rng >> 8) as usize % (unsynced + 1)
            };
            let len = file.synced + keep;
            file.data.truncate(len);
            file.synced = len;
        }
        s.dead = false;
        s.crash_at = None;
    }

    /// A file's current content (synced or not), for tests that corrupt files.
    pub fn file(&self, path: &Path) -> Option<Vec<u8>> {
        self.state.lock().files.get(path).map(|f| f.data.clone())
    }

    /// Replaces a file's content durably (tests: corruption).
    pub fn set_file(&self, path: &Path, data: Vec<u8>) {
        let mut s = self.state.lock();
        let synced = data.len();
        s.files.insert(path.to_path_buf(), SimFile { data, synced });
    }

    /// Every file path, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state.lock().files.keys().cloned().collect()
    }

    fn op<R>(&self, f: impl FnOnce(&mut SimState) -> io::Result<R>) -> io::Result<R> {
        let mut s = self.state.lock();
        if s.dead {
            return Err(dead());
        }
        s.ops += 1;
        if s.crash_at.is_some_and(|at| s.ops > at) {
            s.dead = true;
            return Err(dead());
        }
        f(&mut s)
    }
}

#[derive(Debug)]
struct SimAppend {
    disk: SimDisk,
    path: PathBuf,
}

impl AppendFile for SimAppend {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.disk.op(|s| {
            let file = s.files.get_mut(&self.path).ok_or_else(not_found)?;
            file.data.extend_from_slice(buf);
            Ok(())
        })
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.disk.op(|s| {
            let file = s.files.get_mut(&self.path).ok_or_else(not_found)?;
            file.synced = file.data.len();
            Ok(())
        })
    }

    fn finish(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

fn not_found() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no such simulated file")
}

impl Storage for SimDisk {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        self.op(|_| Ok(()))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.op(|s| {
            Ok(s.files
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect())
        })
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.op(|s| {
            s.files
                .get(path)
                .map(|f| f.data.clone())
                .ok_or_else(not_found)
        })
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        self.op(|s| {
            s.files.entry(path.to_path_buf()).or_default();
            Ok(())
        })?;
        Ok(Box::new(SimAppend {
            disk: self.clone(),
            path: path.to_path_buf(),
        }))
    }

    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.op(|s| {
            s.files.insert(
                path.to_path_buf(),
                SimFile {
                    data: bytes.to_vec(),
                    synced: bytes.len(),
                },
            );
            Ok(())
        })
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.op(|s| {
            let file = s.files.get_mut(path).ok_or_else(not_found)?;
            let len = usize::try_from(len).map_err(io::Error::other)?;
            file.data.truncate(len);
            file.synced = file.synced.min(len);
            Ok(())
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.op(|s| {
            let file = s.files.remove(from).ok_or_else(not_found)?;
            s.files.insert(to.to_path_buf(), file);
            Ok(())
        })
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.op(|s| s.files.remove(path).map(|_| ()).ok_or_else(not_found))
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        self.op(|_| Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends land over zeros written ahead; `finish` cuts them; reopening goes on at the
    /// end.
    #[test]
    fn fs_appends_write_over_zeros_and_finish_cuts_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seg");
        let mut f = FsStorage.open_append(&p).unwrap();
        f.append(b"hello").unwrap();
        f.append(b" world").unwrap();
        f.sync_data().unwrap();
        let data = fs::read(&p).unwrap();
        assert_eq!(data.len() as u64, 5 + PREFILL_BYTES);
        assert_eq!(&data[..11], b"hello world");
        assert!(data[11..].iter().all(|&b| b == 0));
        // A large append past the zeros is written without new ones.
        let big = vec![7u8; PREFILL_BYTES as usize];
        f.append(&big).unwrap();
        let data = fs::read(&p).unwrap();
        assert_eq!(data.len(), 11 + big.len());
        assert!(data[11..].iter().all(|&b| b == 7));
        // A small one past the end lays zeros down again after it.
        f.append(b"?").unwrap();
        let data = fs::read(&p).unwrap();
        assert_eq!(data.len() as u64, 12 + big.len() as u64 + PREFILL_BYTES);
        assert_eq!(data[11 + big.len()], b'?');
        assert!(data[12 + big.len()..].iter().all(|&b| b == 0));
        f.finish().unwrap();
        assert_eq!(fs::read(&p).unwrap().len(), 12 + big.len());
        drop(f);
        let mut f = FsStorage.open_append(&p).unwrap();
        f.append(b"!").unwrap();
        f.finish().unwrap();
        let data = fs::read(&p).unwrap();
        assert_eq!(data.len(), 13 + big.len());
        assert_eq!(data[data.len() - 1], b'!');
    }

    #[test]
    fn crash_loses_unsynced_data_only() {
        let disk = SimDisk::new();
        let p = Path::new("/d/a");
        let mut f = disk.open_append(p).unwrap();
        f.append(b"hello").unwrap();
        f.sync_data().unwrap();
        f.append(b" world").unwrap();
        disk.crash_after(0);
        assert!(f.append(b"!").is_err());
        assert!(disk.is_dead());
        disk.crash(7);
        let data = disk.read(p).unwrap();
        assert!(data.starts_with(b"hello"));
        assert!(data.len() <= 11);
    }
}
