//! Start-up recovery: newest usable snapshot, then the journal tail.
//!
//! 0. Temp files of snapshot writes a crash interrupted are removed (they were never renamed
//!    into place, so nothing refers to them).
//! 1. `need` = the listener's [`OutputListener::applied_seq`] (`u64::MAX`: needs nothing).
//! 2. The newest snapshot with `seq <= need` that reads back valid (checksum, decode) is
//!    loaded; invalid ones are skipped and reported. Without one, replay starts from an
//!    empty engine at sequence 1 (the journal is never pruned).
//! 3. Journal segments from the one holding `snapshot.seq + 1` are read in order; every
//!    record is checked (length, checksum, sequence continuity) and applied. Segments wholly
//!    covered by the snapshot are not read.
//! 4. A bad record in the last segment with no valid record after it is a torn tail (a
//!    write that was never acknowledged), or the zeros the writer lays down ahead of its
//!    appends ([`super::storage::PREFILL_BYTES`]): the segment is truncated there. A bad record
//!    anywhere else, or followed by a valid one, is corruption: start-up stops with an error
//!    naming the file and the byte offset. So does a record a newer build wrote that this
//!    one cannot honour: an unknown command (it does not decode) or a matching-rules version
//!    past [`crate::RULES_VERSION_CURRENT`] (replayed under older rules it could book trades
//!    that never happened).
//! 5. Replayed commands with `seq > need` are delivered to the listener in batches, then
//!    [`OutputListener::on_recovered`] is called.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch::processed;
use super::journal::list_segments;
use super::record::{self, HEADER_LEN};
use super::snapshot;
use super::storage::Storage;
use super::{OutputListener, PipelineError, Processed};
use crate::command::Command;
use crate::engine::{Engine, EngineLimits};
use crate::event::Event;
use crate::state;

/// Commands per `on_batch` call during replay.
const REPLAY_BATCH: usize = 4096;

/// What recovery did, for the start-up log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Sequence and file of the snapshot loaded, if any.
    pub snapshot_seq: Option<u64>,
    pub snapshot_path: Option<PathBuf>,
    /// Snapshots that could not be used, with the reason.
    pub snapshots_rejected: Vec<(PathBuf, String)>,
    /// Journal records applied after the snapshot.
    pub records_replayed: u64,
    /// Of those, delivered to the listener.
    pub records_delivered: u64,
    /// The last sequence number after recovery (0: empty journal).
    pub last_seq: u64,
    /// Bytes cut from the end of the last segment (a torn, never acknowledged write).
    pub truncated_bytes: u64,
    pub truncated_file: Option<PathBuf>,
    pub segments_read: usize,
    /// Temp files of unfinished snapshot writes that were removed.
    pub stale_temps_removed: Vec<PathBuf>,
    pub elapsed: Duration,
}

impl RecoveryReport {
    /// Replay speed in commands per second (0 when nothing was replayed).
    pub fn replay_commands_per_s(&self) -> u64 {
        let us = self.elapsed.as_micros().max(1);
        (u128::from(self.records_replayed) * 1_000_000 / us) as u64
    }
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.snapshot_path {
            Some(p) => write!(
                f,
                "snapshot {} ({})",
                self.snapshot_seq.unwrap_or(0),
                p.display()
            )?,
            None => write!(f, "no snapshot")?,
        }
        write!(
            f,
            ", replayed {} records from {} segments ({} delivered), last seq {}, {:?}",
            self.records_replayed,
            self.segments_read,
            self.records_delivered,
            self.last_seq,
            self.elapsed
        )?;
        if let Some(p) = &self.truncated_file {
            write!(
                f,
                ", truncated torn tail of {} bytes in {}",
                self.truncated_bytes,
                p.display()
            )?;
        }
        for p in &self.stale_temps_removed {
            write!(f, ", removed unfinished snapshot {}", p.display())?;
        }
        for (p, why) in &self.snapshots_rejected {
            write!(f, ", skipped snapshot {}: {why}", p.display())?;
        }
        Ok(())
    }
}

/// The recovered state the pipeline starts from.
pub(crate) struct Recovered {
    pub engine: Engine,
    pub last_seq: u64,
    pub last_timestamp_ns: i64,
    /// The segment to keep appending to, with its valid length.
    pub current_segment: Option<(PathBuf, u64)>,
    pub report: RecoveryReport,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError {
    let path = path.to_path_buf();
    move |source| PipelineError::Io { op, path, source }
}

/// Delivers replayed commands to the listener in batches.
struct Delivery<'l> {
    listener: &'l mut dyn OutputListener,
    first_seq: u64,
    timestamp: Vec<i64>,
    commands: Vec<Command>,
    event_ends: Vec<usize>,
    events: Vec<Event>,
    delivered: u64,
}

impl Delivery<'_> {
    fn push(&mut self, seq: u64, ts: i64, command: Command, events: &[Event]) {
        if self.commands.is_empty() {
            self.first_seq = seq;
        }
        self.timestamp.push(ts);
        self.commands.push(command);
        self.events.extend_from_slice(events);
        self.event_ends.push(self.events.len());
        if self.commands.len() >= REPLAY_BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.commands.is_empty() {
            return;
        }
        let mut views: Vec<Processed<'_>> = Vec::with_capacity(self.commands.len());
        processed(
            self.first_seq,
            0,
            &self.commands,
            &self.event_ends,
            &self.events,
            &mut views,
        );
        // Each replayed command keeps the timestamp it was sequenced with.
        for (v, ts) in views.iter_mut().zip(&self.timestamp) {
            v.timestamp_ns = *ts;
        }
        self.listener.on_batch(&views);
        self.delivered += views.len() as u64;
        drop(views);
        self.timestamp.clear();
        self.commands.clear();
        self.event_ends.clear();
        self.events.clear();
    }
}

/// Looks for a valid record with a later sequence number after a bad one at `from`: if there
/// is one, the bad record is not a torn tail but damage in the middle.
fn valid_record_after(buf: &[u8], from: usize, expected_seq: u64) -> Option<usize> {
    let mut pos = from + 1;
    while pos + HEADER_LEN <= buf.len() {
        let seq = u64::from_le_bytes(buf[pos + 4..pos + 12].try_into().expect("8 bytes"));
        if seq >= expected_seq
            && seq - expected_seq < (1 << 32)
            && record::parse(&buf[pos..]).is_ok()
        {
            return Some(pos);
        }
        pos += 1;
    }
    None
}

pub(crate) fn recover(
    storage: &Arc<dyn Storage>,
    data_dir: &Path,
    limits: EngineLimits,
    listener: &mut dyn OutputListener,
) -> Result<Recovered, PipelineError> {
    let started = Instant::now();
    let journal_dir = data_dir.join("journal");
    let snapshot_dir = data_dir.join("snapshots");
    storage
        .create_dir_all(&journal_dir)
        .map_err(io_err("create", &journal_dir))?;
    storage
        .create_dir_all(&snapshot_dir)
        .map_err(io_err("create", &snapshot_dir))?;
    let mut report = RecoveryReport {
        stale_temps_removed: snapshot::remove_stale_temps(&**storage, &snapshot_dir)
            .map_err(io_err("clean", &snapshot_dir))?,
        ..RecoveryReport::default()
    };
    let need = listener.applied_seq();

    // 1. The snapshot.
    let mut engine = None;
    let mut last_seq = 0u64;
    let mut last_ts = 0i64;
    let snaps = snapshot::list_snapshots(&**storage, &snapshot_dir)
        .map_err(io_err("list", &snapshot_dir))?;
    for (seq, path) in snaps {
        if seq > need {
            continue;
        }
        let loaded = snapshot::read(&**storage, &path).and_then(|s| {
            if s.seq != seq {
                return Err(format!("holds seq {} but is named {seq}", s.seq));
            }
            let e = state::decode(&s.state, limits).map_err(|e| e.to_string())?;
            Ok((s, e))
        });
        match loaded {
            Ok((s, e)) => {
                engine = Some(e);
                last_seq = s.seq;
                last_ts = s.timestamp_ns;
                report.snapshot_seq = Some(s.seq);
                report.snapshot_path = Some(path);
                break;
            }
            Err(why) => report.snapshots_rejected.push((path, why)),
        }
    }
    let mut engine = engine.unwrap_or_else(|| Engine::new(limits));
    let snapshot_seq = last_seq;

    // 2. The journal tail.
    let segments = list_segments(&**storage, &journal_dir).map_err(io_err("list", &journal_dir))?;
    let first = segments
        .iter()
        .rposition(|(s, _)| *s <= snapshot_seq + 1)
        .unwrap_or(0);
    let mut delivery = Delivery {
        listener,
        first_seq: 0,
        timestamp: Vec::new(),
        commands: Vec::with_capacity(REPLAY_BATCH),
        event_ends: Vec::with_capacity(REPLAY_BATCH),
        events: Vec::new(),
        delivered: 0,
    };
    let mut events = Vec::with_capacity(64);
    let mut current_segment = None;
    // The highest sequence the journal holds (records before the snapshot included).
    let mut journal_seq = 0u64;
    for (idx, (name_seq, path)) in segments.iter().enumerate().skip(first) {
        let is_last = idx + 1 == segments.len();
        let buf = storage.read(path).map_err(io_err("read", path))?;
        report.segments_read += 1;
        let corrupt = |offset: usize, reason: String| PipelineError::Corrupt {
            file: path.clone(),
            offset: offset as u64,
            reason,
        };
        // Segments are contiguous: each starts right after the previous one's last record.
        if journal_seq == 0 {
            journal_seq = name_seq.saturating_sub(1);
        } else if *name_seq != journal_seq + 1 {
            return Err(corrupt(
                0,
                format!(
                    "segment starts at seq {name_seq} but the journal so far ends at {journal_seq}"
                ),
            ));
        }
        let mut off = 0usize;
        // The segment's bytes up to the end of its last valid record.
        let mut valid = buf.len() as u64;
        while off < buf.len() {
            let rec = match record::parse(&buf[off..]) {
                Ok(r) => r,
                Err(bad) => {
                    let expected = journal_seq + 1;
                    if let Some(at) = valid_record_after(&buf, off, expected) {
                        return Err(corrupt(
                            off,
                            format!("bad record ({bad:?}) followed by a valid one at byte {at}"),
                        ));
                    }
                    if !is_last {
                        return Err(corrupt(
                            off,
                            format!("bad record ({bad:?}) before the last segment"),
                        ));
                    }
                    // Zeros are the space the writer lays down ahead of its appends
                    // (`storage::PREFILL_BYTES`), not a torn write: cut without a report.
                    if buf[off..].iter().any(|&b| b != 0) {
                        report.truncated_bytes = (buf.len() - off) as u64;
                        report.truncated_file = Some(path.clone());
                    }
                    storage
                        .truncate(path, off as u64)
                        .map_err(io_err("truncate", path))?;
                    valid = off as u64;
                    break;
                }
            };
            if rec.seq != journal_seq + 1 {
                return Err(corrupt(
                    off,
                    format!("seq {} where {} was expected", rec.seq, journal_seq + 1),
                ));
            }
            journal_seq = rec.seq;
            if rec.seq > snapshot_seq {
                if rec.seq != last_seq + 1 {
                    return Err(corrupt(
                        off,
                        format!("seq {} where {} was expected", rec.seq, last_seq + 1),
                    ));
                }
                let (ts, command) = record::decode_payload(rec.payload)
                    .map_err(|e| corrupt(off, format!("undecodable command: {e}")))?;
                if let Command::SetRulesVersion { version } = command
                    && version > crate::RULES_VERSION_CURRENT
                {
                    return Err(PipelineError::NewerJournal {
                        file: path.clone(),
                        offset: off as u64,
                        version,
                        known: crate::RULES_VERSION_CURRENT,
                    });
                }
                events.clear();
                engine.apply(&command, &mut events);
                last_seq = rec.seq;
                last_ts = ts;
                report.records_replayed += 1;
                if rec.seq > need {
                    delivery.push(rec.seq, ts, command, &events);
                }
            }
            off += rec.len;
        }
        if is_last {
            if valid == 0 && *name_seq != last_seq + 1 {
                // An empty segment whose name no longer fits: start a fresh one.
                storage.remove(path).map_err(io_err("remove", path))?;
            } else {
                current_segment = Some((path.clone(), valid));
            }
        }
    }
    delivery.flush();
    report.records_delivered = delivery.delivered;
    let listener = delivery.listener;
    if journal_seq < snapshot_seq {
        return Err(PipelineError::Corrupt {
            file: journal_dir,
            offset: 0,
            reason: format!(
                "the journal ends at seq {journal_seq}, before snapshot seq {snapshot_seq}"
            ),
        });
    }
    listener.on_recovered(&engine, last_seq);
    report.last_seq = last_seq;
    report.elapsed = started.elapsed();
    Ok(Recovered {
        engine,
        last_seq,
        last_timestamp_ns: last_ts,
        current_segment,
        report,
    })
}
