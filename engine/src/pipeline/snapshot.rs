//! Snapshot files: `data_dir/snapshots/SEQ.snap`, the engine's canonical state
//! ([`crate::state::encode`]) after command `SEQ`.
//!
//! ```text
//! header (36 bytes): magic "BRSSNAP1" | version u32 | seq u64 | timestamp_ns i64
//!                    | payload_len u32 | crc32 u32 (over the header's previous 32 bytes + payload)
//! payload: state::encode(engine)
//! ```
//! Written atomically: a temp file is written and fsynced, renamed into place, then the
//! directory is fsynced. A snapshot is only written once the journal holds its sequence
//! durably, so the journal is always at least as new as the newest snapshot. A crash while
//! writing leaves a `SEQ.snap.tmp` that is never read; recovery removes such leftovers
//! ([`remove_stale_temps`]) so they do not pile up across crashes.

use std::io;
use std::path::{Path, PathBuf};

use super::storage::Storage;

const MAGIC: &[u8; 8] = b"BRSSNAP1";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 36;
const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";

/// Snapshots kept; older ones are removed after a new one is in place.
pub const DEFAULT_SNAPSHOTS_KEPT: usize = 3;

/// An encoded snapshot waiting to be written.
#[derive(Debug)]
pub struct SnapshotData {
    pub seq: u64,
    pub timestamp_ns: i64,
    pub state: Vec<u8>,
}

/// A snapshot read back.
#[derive(Debug)]
pub struct LoadedSnapshot {
    pub seq: u64,
    pub timestamp_ns: i64,
    pub state: Vec<u8>,
    pub path: PathBuf,
}

pub fn snapshot_name(seq: u64) -> String {
    format!("{seq:020}{SUFFIX}")
}

pub fn parse_snapshot_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Snapshots in `dir`, newest first.
pub fn list_snapshots(storage: &dyn Storage, dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut v: Vec<(u64, PathBuf)> = storage
        .list(dir)?
        .into_iter()
        .filter_map(|n| parse_snapshot_name(&n).map(|s| (s, dir.join(n))))
        .collect();
    v.sort_by_key(|(s, _)| std::cmp::Reverse(*s));
    Ok(v)
}

fn encode(snap: &SnapshotData) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + snap.state.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&snap.seq.to_le_bytes());
    out.extend_from_slice(&snap.timestamp_ns.to_le_bytes());
    let len = u32::try_from(snap.state.len()).expect("snapshot under 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out);
    crc.update(&snap.state);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&snap.state);
    out
}

/// Writes `snap` atomically into `dir` and removes all but the newest `keep` snapshots.
pub fn write(
    storage: &dyn Storage,
    dir: &Path,
    snap: &SnapshotData,
    keep: usize,
) -> io::Result<()> {
    let bytes = encode(snap);
    let final_path = dir.join(snapshot_name(snap.seq));
    let tmp = dir.join(format!("{seq:020}{TEMP_SUFFIX}", seq = snap.seq));
    storage.write_synced(&tmp, &bytes)?;
    storage.rename(&tmp, &final_path)?;
    storage.sync_dir(dir)?;
    for (_, old) in list_snapshots(storage, dir)?.into_iter().skip(keep.max(1)) {
        storage.remove(&old)?;
    }
    Ok(())
}

/// Removes the temp files of snapshot writes that never finished (a crash between writing
/// the temp file and the rename) and returns their paths. Only names of the exact
/// `SEQ.snap.tmp` shape are touched.
pub fn remove_stale_temps(storage: &dyn Storage, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for name in storage.list(dir)? {
        let is_temp = name
            .strip_suffix(TEMP_SUFFIX)
            .is_some_and(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()));
        if is_temp {
            let path = dir.join(name);
            storage.remove(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Reads and checks a snapshot file (header, version, checksum, name matches content).
pub fn read(storage: &dyn Storage, path: &Path) -> Result<LoadedSnapshot, String> {
    let bytes = storage.read(path).map_err(|e| e.to_string())?;
    if bytes.len() < HEADER_LEN || &bytes[0..8] != MAGIC {
        return Err("not a snapshot (bad magic or too short)".into());
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let version = u32_at(8);
    if version != VERSION {
        return Err(format!("snapshot version {version} is not supported"));
    }
    let seq = u64_at(12);
    let timestamp_ns = u64_at(20) as i64;
    let len = u32_at(28) as usize;
    if bytes.len() != HEADER_LEN + len {
        return Err(format!(
            "snapshot is {} bytes, header says {}",
            bytes.len(),
            HEADER_LEN + len
        ));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[0..32]);
    crc.update(&bytes[HEADER_LEN..]);
    if crc.finalize() != u32_at(32) {
        return Err("snapshot checksum mismatch".into());
    }
    Ok(LoadedSnapshot {
        seq,
        timestamp_ns,
        state: bytes[HEADER_LEN..].to_vec(),
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::storage::SimDisk;

    #[test]
    fn write_read_keep() {
        let disk = SimDisk::new();
        let dir = Path::new("/s");
        for seq in 1..=5 {
            let snap = SnapshotData {
                seq,
                timestamp_ns: 10 * seq as i64,
                state: vec![seq as u8; 100],
            };
            write(&disk, dir, &snap, 2).unwrap();
        }
        let list = list_snapshots(&disk, dir).unwrap();
        assert_eq!(list.iter().map(|s| s.0).collect::<Vec<_>>(), vec![5, 4]);
        let s = read(&disk, &list[0].1).unwrap();
        assert_eq!((s.seq, s.timestamp_ns, s.state.len()), (5, 50, 100));
        let mut bytes = disk.file(&list[0].1).unwrap();
        bytes[50] ^= 0xff;
        disk.set_file(&list[0].1, bytes);
        assert!(read(&disk, &list[0].1).is_err());
    }

    #[test]
    fn stale_temps_are_removed_and_nothing_else() {
        let disk = SimDisk::new();
        let dir = Path::new("/s");
        let snap = SnapshotData {
            seq: 7,
            timestamp_ns: 70,
            state: vec![1; 10],
        };
        write(&disk, dir, &snap, 3).unwrap();
        let stale = dir.join(format!("{:020}.snap.tmp", 9));
        disk.set_file(&stale, vec![0; 5]);
        let unrelated = dir.join("notes.tmp");
        disk.set_file(&unrelated, vec![0; 5]);
        assert_eq!(remove_stale_temps(&disk, dir).unwrap(), vec![stale.clone()]);
        assert!(disk.file(&stale).is_none());
        assert!(disk.file(&unrelated).is_some());
        assert_eq!(list_snapshots(&disk, dir).unwrap().len(), 1);
        assert!(remove_stale_temps(&disk, dir).unwrap().is_empty());
    }
}
