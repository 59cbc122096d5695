//! A batch: what the engine thread applies, commits and delivers in one go, cleared and
//! reused so the steady state allocates nothing per command on the engine thread.

use super::snapshot::SnapshotData;
use super::{Processed, Reply};
use crate::command::Command;
use crate::event::Event;

/// Commands applied together, with their events and encoded journal records.
pub(crate) struct Batch {
    pub first_seq: u64,
    pub timestamp_ns: i64,
    pub commands: Vec<Command>,
    /// One per command, same order.
    pub replies: Vec<Reply>,
    /// `events[event_ends[i-1]..event_ends[i]]` are command `i`'s events.
    pub event_ends: Vec<usize>,
    pub events: Vec<Event>,
    /// Framed journal records of every command, ready to append.
    pub records: Vec<u8>,
    /// The engine state after this batch, to be written once the batch is durable.
    pub snapshot: Option<SnapshotData>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("first_seq", &self.first_seq)
            .field("commands", &self.commands.len())
            .finish()
    }
}

impl Batch {
    pub fn with_capacity(commands: usize) -> Self {
        Batch {
            first_seq: 0,
            timestamp_ns: 0,
            commands: Vec::with_capacity(commands),
            replies: Vec::with_capacity(commands),
            event_ends: Vec::with_capacity(commands),
            events: Vec::with_capacity(commands * 4),
            records: Vec::with_capacity(commands * 64),
            snapshot: None,
        }
    }

    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.commands.len() as u64 - 1
    }

    /// Empties the batch, keeping its allocations.
    pub fn clear(&mut self) {
        self.commands.clear();
        self.replies.clear();
        self.event_ends.clear();
        self.events.clear();
        self.records.clear();
        self.snapshot = None;
    }
}

/// The consumer view of a batch's commands (borrowing only the fields it needs, so the
/// caller can still drain `replies`).
pub(crate) fn processed<'a>(
    first_seq: u64,
    timestamp_ns: i64,
    commands: &'a [Command],
    event_ends: &[usize],
    events: &'a [Event],
    out: &mut Vec<Processed<'a>>,
) {
    let mut start = 0;
    for (i, (command, end)) in commands.iter().zip(event_ends).enumerate() {
        out.push(Processed {
            seq: first_seq + i as u64,
            timestamp_ns,
            command,
            events: &events[start..*end],
        });
        start = *end;
    }
}
