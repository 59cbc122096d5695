//! The fan-out of one channel: a ring of encoded messages that every subscriber reads at its
//! own pace through a [`Cursor`].
//!
//! The publisher appends without waking anyone ([`Bus::push`]) and wakes the waiting
//! subscribers once per pipeline batch ([`Bus::wake`]), so a batch of N messages costs one
//! wake-up per connection, not N. A subscriber drains every message it has not seen in one
//! lock acquisition; its backlog (`head - pos`) is its queue, bounded by the connection's
//! `queue_bound`, and a subscriber more than `capacity` behind has lost messages (lagged).
//! A ring grows (up to [`MAX_SLOTS`]) rather than overwrite a message no subscriber has
//! been woken for yet, so one batch's burst, however large, is lost only by subscribers
//! that were already behind.
//! The frames of a ring lie back to back in one byte ring (grown so that the last
//! `capacity` frames always fit), so a subscriber takes everything it has not seen of a
//! channel with one copy, under the read lock, with no per-message allocation, pointer
//! chasing or reference counting.
//!
//! A connection holds the read lock for the duration of its (non-blocking) `writev`, so
//! the publisher must not wait for the write lock: a reader preempted inside the system
//! call would hold up the engine thread, and with it every channel and the pipeline (in
//! `bourse bench ws` with 1000 subscribers at 10,000 trades/s, 56-63 % of the output
//! thread's sleeps were in this wait). So [`Bus::push`] only *tries* the write lock; when
//! readers hold the ring the frame is staged (in order, behind any staged before it) and
//! goes into the ring at the first chance: the publisher's next push or wake, or the
//! reader that leaves the ring last ([`RingRead`]'s drop sees the staged flag; both sides
//! fence, so a frame staged while a reader held the ring is always seen by that reader or
//! a later one). Staged frames older than [`STAGED_MAX_AGE`] at a push or wake are moved
//! in by waiting for the write lock, as before, so a stream of overlapping readers cannot
//! hold them back for long. A new subscriber's cursor starts past the staged frames (ahead
//! of the ring's head until they are in): they are older than whatever snapshot it was
//! given. Readers never wait for a ring's write lock: only publishers do.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError,
};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use axum::body::Bytes;

/// Most slots a ring grows to for a burst ([`Bus::put`]): room for a cancel-all of the
/// 100,000 open orders an account may hold by default, at ~24 bytes a slot plus the frames.
/// A burst beyond it overruns the subscribers as before (they are told they lagged).
pub const MAX_SLOTS: u64 = 1 << 17;

/// How long a staged frame may wait for readers to leave the ring before a push or a wake
/// waits for the write lock to move it in.
pub const STAGED_MAX_AGE: Duration = Duration::from_millis(1);

/// A server WebSocket frame (FIN set, unmasked) around `payload`.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut f = Vec::with_capacity(n + 10);
    f.push(0x80 | opcode);
    if n < 126 {
        f.push(n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        f.push(126);
        f.extend_from_slice(&n.to_be_bytes());
    } else {
        f.push(127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(payload);
    f
}

/// One encoded message as every subscriber of a channel receives it: the whole WebSocket
/// text frame, since server frames are not masked and so are the same bytes for every
/// connection. Built once per channel; connections copy it into their write buffers.
#[derive(Clone, Debug)]
pub struct Published {
    /// The channel's seq (the book seq for book channels).
    pub seq: u64,
    frame: Bytes,
    start: usize,
}

impl Published {
    pub fn new(seq: u64, text: &str) -> Published {
        let frame = frame(0x1, text.as_bytes());
        Published {
            seq,
            start: frame.len() - text.len(),
            frame: Bytes::from(frame),
        }
    }

    /// A message from its whole frame (as a ring holds it).
    fn from_frame(seq: u64, frame: Vec<u8>) -> Published {
        let start = match frame.get(1).map(|b| b & 0x7f) {
            Some(126) => 4,
            Some(127) => 10,
            _ => 2,
        };
        Published {
            seq,
            start: start.min(frame.len()),
            frame: Bytes::from(frame),
        }
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.frame[self.start..]).unwrap_or_default()
    }

    /// The frame as written to a socket.
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// The frame, shared (a reference count, not a copy: a snapshot queued on many
    /// connections is held once).
    pub fn frame_shared(&self) -> Bytes {
        self.frame.clone()
    }
}

/// Where one message's frame sits in the byte ring.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    seq: u64,
    /// Absolute byte offset (bytes ever written before it).
    start: u64,
    len: u32,
}

/// The frames of the last `cap` messages, back to back in one byte ring, and where each
/// one starts. A subscriber's pending frames of a channel are one contiguous run of bytes
/// (two pieces when the ring wraps), so taking them is one copy, not one per message.
#[derive(Debug)]
struct Ring {
    slots: Vec<Slot>,
    /// A power of two; grows so that the last `cap` frames always fit.
    data: Vec<u8>,
    /// Bytes ever written.
    bytes_head: u64,
}

impl Ring {
    fn pos(&self, abs: u64) -> usize {
        (abs & (self.data.len() as u64 - 1)) as usize
    }

    fn write_at(&mut self, abs: u64, src: &[u8]) {
        let at = self.pos(abs);
        let first = src.len().min(self.data.len() - at);
        self.data[at..at + first].copy_from_slice(&src[..first]);
        self.data[..src.len() - first].copy_from_slice(&src[first..]);
    }

    fn read_into(&self, abs: u64, len: usize, out: &mut Vec<u8>) {
        let at = self.pos(abs);
        let first = len.min(self.data.len() - at);
        out.extend_from_slice(&self.data[at..at + first]);
        out.extend_from_slice(&self.data[..len - first]);
    }

    /// Re-lays the slots of messages `head - slots.len() .. head` over `new_cap` slots;
    /// returns `new_cap`. Their bytes stay where they are.
    fn grow_slots(&mut self, head: u64, new_cap: u64) -> u64 {
        let old_cap = self.slots.len() as u64;
        let mut grown = vec![Slot::default(); new_cap as usize];
        for i in head.saturating_sub(old_cap)..head {
            grown[(i % new_cap) as usize] = self.slots[(i % old_cap) as usize];
        }
        self.slots = grown;
        new_cap
    }

    /// Makes room for `extra` more bytes while keeping everything from `keep_from` on.
    fn reserve(&mut self, keep_from: u64, extra: usize) {
        let needed = (self.bytes_head - keep_from) as usize + extra;
        if needed <= self.data.len() {
            return;
        }
        let mut grown = Ring {
            slots: Vec::new(),
            data: vec![0; needed.next_power_of_two()],
            bytes_head: self.bytes_head,
        };
        let live = (self.bytes_head - keep_from) as usize;
        let mut tmp = Vec::with_capacity(live);
        self.read_into(keep_from, live, &mut tmp);
        grown.write_at(keep_from, &tmp);
        self.data = grown.data;
    }
}

/// Frames pushed while readers held the ring, waiting to go in (see the module docs).
#[derive(Debug, Default)]
struct Staged {
    /// The frames, back to back.
    bytes: Vec<u8>,
    /// Each frame's seq and length, in order.
    frames: Vec<(u64, usize)>,
    /// When the oldest was staged.
    since: Option<Instant>,
}

/// One channel's ring.
#[derive(Debug)]
pub struct Bus {
    ring: RwLock<Ring>,
    staged: Mutex<Staged>,
    /// Set while `staged` holds frames (read by readers leaving the ring).
    has_staged: AtomicBool,
    /// Slots in the ring (`ring.slots.len()`, mirrored for lock-free looks): `capacity` at
    /// first, grown by a burst ([`Bus::put`]), never shrunk.
    cap: AtomicU64,
    /// `head` at the last wake-up of the subscribers: messages from here on have not been
    /// announced to anyone yet.
    woken_head: AtomicU64,
    /// Messages ever pushed (written under the `ring` write lock).
    head: AtomicU64,
    receivers: AtomicUsize,
    /// Bumped by every wake; a cursor registered in the current generation is still waiting.
    generation: AtomicU64,
    wakers: Mutex<Vec<Waker>>,
    dirty: AtomicBool,
}

/// A ring held for reading (see [`Bus::read`]). Dropping it moves staged frames in if
/// they are waiting and no other reader holds the ring.
#[derive(Debug)]
pub struct RingRead<'a> {
    bus: &'a Bus,
    guard: Option<RwLockReadGuard<'a, Ring>>,
}

impl RingRead<'_> {
    fn ring(&self) -> &Ring {
        self.guard.as_ref().expect("held until dropped")
    }
}

impl Drop for RingRead<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.bus.after_read();
    }
}

/// A run of frames a cursor has not taken: `msgs` messages in `len` bytes from the
/// absolute offset `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peek {
    pub msgs: u64,
    pub start: u64,
    pub len: usize,
}

/// The subscriber fell more than the ring's capacity behind: messages were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged;

/// The WebSocket header of a FIN text-or-other frame with `n` payload bytes.
fn header(opcode: u8, n: usize, out: &mut [u8; 10]) -> usize {
    out[0] = 0x80 | opcode;
    if n < 126 {
        out[1] = n as u8;
        2
    } else if let Ok(n) = u16::try_from(n) {
        out[1] = 126;
        out[2..4].copy_from_slice(&n.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(n as u64).to_be_bytes());
        10
    }
}

impl Bus {
    pub fn new(capacity: usize) -> Arc<Bus> {
        let cap = capacity.max(1);
        Arc::new(Bus {
            ring: RwLock::new(Ring {
                slots: vec![Slot::default(); cap],
                data: vec![0; 4096],
                bytes_head: 0,
            }),
            staged: Mutex::new(Staged::default()),
            has_staged: AtomicBool::new(false),
            cap: AtomicU64::new(cap as u64),
            woken_head: AtomicU64::new(0),
            head: AtomicU64::new(0),
            receivers: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            wakers: Mutex::new(Vec::new()),
            dirty: AtomicBool::new(false),
        })
    }

    // The locks are std's, not parking_lot's: contended, a parking_lot lock spins with up
    // to seven `sched_yield`s before it sleeps, and a thread in `sched_yield` stays runnable
    // behind every other, so when the lock comes free it waits its turn (milliseconds on a
    // busy machine). The engine thread appending here while connections write from the ring
    // spent ~45 % of its switches in `sched_yield`. std's locks spin briefly and then sleep
    // on a futex, and the unlocking thread wakes them. Poisoning is ignored like
    // parking_lot did: the ring is only changed by `put` (and the `reserve` in it), which
    // does not panic half-way.
    fn ring_write(&self) -> RwLockWriteGuard<'_, Ring> {
        self.ring.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The ring write-locked if no reader holds it.
    fn try_ring_write(&self) -> Option<RwLockWriteGuard<'_, Ring>> {
        match self.ring.try_write() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    fn staged(&self) -> MutexGuard<'_, Staged> {
        self.staged.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wakers(&self) -> MutexGuard<'_, Vec<Waker>> {
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn receiver_count(&self) -> usize {
        self.receivers.load(Ordering::Relaxed)
    }

    /// Appends a message (its text frame built in place); subscribers are woken by the
    /// next [`Bus::wake`].
    pub fn push_text(&self, seq: u64, text: &str) {
        let mut hdr = [0u8; 10];
        let n = header(0x1, text.len(), &mut hdr);
        self.append(seq, &hdr[..n], text.as_bytes());
    }

    /// Appends a ready-made message; subscribers are woken by the next [`Bus::wake`].
    pub fn push(&self, p: Published) {
        self.append(p.seq, &[], &p.frame);
    }

    /// Puts a frame (`a` then `b`) into the write-locked ring as the next message.
    ///
    /// A full ring drops its oldest message to make room, unless that message has not been
    /// announced to any subscriber yet (it came after the last [`Bus::wake`]): then no
    /// reader, however fast, could have taken it, and the ring doubles its slots instead (up
    /// to [`MAX_SLOTS`]). So one command that makes more messages than the ring holds (a
    /// cancel-all of an account's 12,000 orders, a market order sweeping 9,000 resting
    /// orders) reaches every subscriber that keeps up, instead of overrunning all of them
    /// before any was woken (they were closed as slow consumers).
    fn put(&self, ring: &mut Ring, seq: u64, a: &[u8], b: &[u8]) {
        let len = a.len() + b.len();
        let h = self.head.load(Ordering::Relaxed);
        let mut cap = ring.slots.len() as u64;
        if h >= cap && h - cap >= self.woken_head.load(Ordering::Relaxed) && cap < MAX_SLOTS {
            cap = ring.grow_slots(h, (cap * 2).min(MAX_SLOTS));
            self.cap.store(cap, Ordering::Release);
        }
        // After this push the ring holds messages h + 1 - cap ..= h: keep their bytes.
        let keep_from = if h + 1 > cap {
            ring.slots[((h + 1 - cap) % cap) as usize].start
        } else {
            0
        };
        ring.reserve(keep_from, len);
        let start = ring.bytes_head;
        ring.write_at(start, a);
        ring.write_at(start + a.len() as u64, b);
        ring.bytes_head += len as u64;
        ring.slots[(h % cap) as usize] = Slot {
            seq,
            start,
            len: u32::try_from(len).unwrap_or(u32::MAX),
        };
        self.head.store(h + 1, Ordering::Release);
    }

    fn append(&self, seq: u64, a: &[u8], b: &[u8]) {
        let mut st = self.staged();
        if st.frames.is_empty()
            && let Some(mut ring) = self.try_ring_write()
        {
            self.put(&mut ring, seq, a, b);
            drop(ring);
            self.dirty.store(true, Ordering::Release);
            return;
        }
        st.bytes.extend_from_slice(a);
        st.bytes.extend_from_slice(b);
        st.frames.push((seq, a.len() + b.len()));
        st.since.get_or_insert_with(Instant::now);
        self.has_staged.store(true, Ordering::SeqCst);
        // The reader that held the ring may have left before it could see the flag: try
        // again now (the fence pairs with the one in `after_read`).
        fence(Ordering::SeqCst);
        self.move_in(st);
    }

    /// Publishers only: moves the staged frames in if no reader holds the ring, or, once
    /// the oldest has waited [`STAGED_MAX_AGE`], by waiting for the readers to leave.
    fn move_in(&self, mut st: MutexGuard<'_, Staged>) {
        if !self.try_move_in(&mut st) && st.since.is_some_and(|t| t.elapsed() >= STAGED_MAX_AGE) {
            drop(st);
            self.move_in_waiting();
        }
    }

    /// Moves the staged frames into the ring if no reader holds it. True when frames
    /// went in.
    fn try_move_in(&self, st: &mut Staged) -> bool {
        if st.frames.is_empty() {
            return false;
        }
        match self.try_ring_write() {
            Some(mut ring) => {
                self.put_staged(&mut ring, st);
                true
            }
            None => false,
        }
    }

    /// Waits for the readers to leave the ring and moves the staged frames in. The ring
    /// is locked before the staging area (elsewhere the staging area is held only with
    /// `try_write`s on the ring), so waiting here never deadlocks with a reader.
    fn move_in_waiting(&self) {
        let mut ring = self.ring_write();
        let mut st = self.staged();
        if !st.frames.is_empty() {
            self.put_staged(&mut ring, &mut st);
        }
    }

    fn put_staged(&self, ring: &mut Ring, st: &mut Staged) {
        let mut at = 0;
        for &(seq, len) in &st.frames {
            self.put(ring, seq, &st.bytes[at..at + len], &[]);
            at += len;
        }
        st.bytes.clear();
        st.frames.clear();
        st.since = None;
        self.has_staged.store(false, Ordering::SeqCst);
        self.dirty.store(true, Ordering::Release);
    }

    /// A reader left the ring: move staged frames in (and wake the subscribers) if no
    /// other reader holds it. Never waits for a ring lock: the reader may still hold other
    /// rings (a connection drops its read guards one by one), and waiting here for this
    /// ring's write lock could close a cycle with another connection that holds this ring
    /// and waits the same way for one of those.
    fn after_read(&self) {
        fence(Ordering::SeqCst);
        if !self.has_staged.load(Ordering::SeqCst) {
            return;
        }
        let moved = self.try_move_in(&mut self.staged());
        if moved {
            self.wake_subscribers();
        }
    }

    /// The ring, read-locked, for [`Cursor::peek`] and [`Cursor::consume`] of this bus's
    /// cursors: the frames can be handed to a vectored write without copying while it is held.
    pub fn read(&self) -> RingRead<'_> {
        RingRead {
            bus: self,
            guard: Some(self.ring.read().unwrap_or_else(PoisonError::into_inner)),
        }
    }

    /// Wakes the waiting subscribers if anything was pushed since the last wake (staged
    /// frames are moved in first if the ring is free or they are older than
    /// [`STAGED_MAX_AGE`]). Publishers only: it may wait for the ring's readers.
    pub fn wake(&self) {
        if self.has_staged.load(Ordering::SeqCst) {
            self.move_in(self.staged());
        }
        self.wake_subscribers();
    }

    /// Wakes the waiting subscribers if anything went into the ring since the last wake.
    fn wake_subscribers(&self) {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        self.woken_head
            .store(self.head.load(Ordering::Acquire), Ordering::Relaxed);
        let wakers = {
            let mut w = self.wakers();
            self.generation.fetch_add(1, Ordering::AcqRel);
            std::mem::take(&mut *w)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Pushes and wakes at once (publishers outside the batch loop).
    pub fn send(&self, seq: u64, text: &str) {
        self.push_text(seq, text);
        self.wake();
    }

    /// A cursor at the end of the ring: it sees the messages pushed from now on. Staged
    /// frames are older than the subscription, so the cursor starts past them: ahead of
    /// `head` until they are moved in (every change of `head` happens under the staging
    /// lock, so the two are read together). It does not move them in itself: that could
    /// wait for the readers while the caller holds the feed's state, which the output
    /// thread needs.
    pub fn subscribe(self: &Arc<Bus>) -> Cursor {
        let pos = {
            let st = self.staged();
            self.head.load(Ordering::Acquire) + st.frames.len() as u64
        };
        self.receivers.fetch_add(1, Ordering::Relaxed);
        Cursor {
            pos,
            bus: self.clone(),
            registered: u64::MAX,
        }
    }
}

/// A subscriber's position in a [`Bus`].
#[derive(Debug)]
pub struct Cursor {
    bus: Arc<Bus>,
    pos: u64,
    registered: u64,
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.bus.receivers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Cursor {
    /// Messages pushed and not yet taken.
    pub fn backlog(&self) -> u64 {
        self.bus
            .head
            .load(Ordering::Acquire)
            .saturating_sub(self.pos)
    }

    pub fn lagged(&self) -> bool {
        // `cap` is stored before the `head` that needed it, so this `head` comes with a cap
        // at least as large as the one it was pushed under.
        let backlog = self.backlog();
        backlog > self.bus.cap.load(Ordering::Acquire)
    }

    /// Messages ever pushed into the ring: the end of what it holds now (a bound for
    /// [`Cursor::peek_until`]).
    pub fn end(&self) -> u64 {
        self.bus.head.load(Ordering::Acquire)
    }

    /// Messages ever pushed that this cursor has taken or skipped.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Appends up to `max` messages to `out`. `Err(Lagged)` (nothing taken) when messages
    /// were overwritten before this cursor read them.
    pub fn recv_into(
        &mut self,
        out: &mut impl Extend<Published>,
        max: usize,
    ) -> Result<usize, Lagged> {
        if self.bus.head.load(Ordering::Acquire) <= self.pos {
            return Ok(0);
        }
        let held = self.bus.read();
        let ring = held.ring();
        let head = self.bus.head.load(Ordering::Acquire);
        let cap = ring.slots.len() as u64;
        if head - self.pos > cap {
            return Err(Lagged);
        }
        let end = head.min(self.pos.saturating_add(max as u64));
        out.extend((self.pos..end).map(|i| {
            let slot = ring.slots[(i % cap) as usize];
            let mut frame = Vec::with_capacity(slot.len as usize);
            ring.read_into(slot.start, slot.len as usize, &mut frame);
            Published::from_frame(slot.seq, frame)
        }));
        let n = (end - self.pos) as usize;
        self.pos = end;
        Ok(n)
    }

    /// Appends the frames of the messages not yet taken (those with seq above `min_seq`) to
    /// `out` until it holds `max_bytes`. `Err(Lagged)` (nothing taken) when messages were
    /// overwritten before this cursor read them. The frames lie back to back in the ring:
    /// one copy (two when the ring wraps) under the read lock, whatever their number.
    pub fn copy_into(
        &mut self,
        out: &mut Vec<u8>,
        max_bytes: usize,
        min_seq: u64,
    ) -> Result<usize, Lagged> {
        if self.bus.head.load(Ordering::Acquire) <= self.pos {
            return Ok(0);
        }
        let held = self.bus.read();
        let ring = held.ring();
        let head = self.bus.head.load(Ordering::Acquire);
        let cap = ring.slots.len() as u64;
        if head - self.pos > cap {
            return Err(Lagged);
        }
        let slot = |i: u64| ring.slots[(i % cap) as usize];
        // Seqs rise along the ring: the messages at or below `min_seq` come first.
        while self.pos < head && slot(self.pos).seq <= min_seq {
            self.pos += 1;
        }
        if self.pos == head {
            return Ok(0);
        }
        let start = slot(self.pos).start;
        let last = slot(head - 1);
        let all_end = last.start + u64::from(last.len);
        if out.len() + ((all_end - start) as usize) <= max_bytes {
            // Everything fits (the usual case): no walk over the slots.
            let n = (head - self.pos) as usize;
            self.pos = head;
            ring.read_into(start, (all_end - start) as usize, out);
            return Ok(n);
        }
        let mut end = start;
        let mut n = 0;
        while self.pos < head && out.len() + ((end - start) as usize) < max_bytes {
            let s = slot(self.pos);
            end = s.start + u64::from(s.len);
            self.pos += 1;
            n += 1;
        }
        ring.read_into(start, (end - start) as usize, out);
        Ok(n)
    }

    /// The cursor's ring (to read-lock with [`Bus::read`] for [`Cursor::peek`]).
    pub fn bus(&self) -> &Arc<Bus> {
        &self.bus
    }

    /// The run of frames this cursor has not taken (those with seq above `min_seq`), up to
    /// about `max_bytes` (at least one frame), as a place in `ring`; `None` when there is
    /// nothing. Messages at or below `min_seq` are skipped for good (they are never to be
    /// sent); the others are taken by [`Cursor::consume`], once written.
    pub fn peek(
        &mut self,
        ring: &RingRead<'_>,
        max_bytes: usize,
        min_seq: u64,
    ) -> Result<Option<Peek>, Lagged> {
        self.peek_until(ring, max_bytes, min_seq, u64::MAX)
    }

    /// [`Cursor::peek`] of the messages before `until` only (a [`Cursor::end`]): a
    /// connection closing for a shutdown writes what the ring held when it learned of it.
    pub fn peek_until(
        &mut self,
        ring: &RingRead<'_>,
        max_bytes: usize,
        min_seq: u64,
        until: u64,
    ) -> Result<Option<Peek>, Lagged> {
        let head = self.bus.head.load(Ordering::Acquire);
        if head <= self.pos {
            // Nothing, or (a new cursor) staged frames it skips are not in yet.
            return Ok(None);
        }
        let cap = ring.ring().slots.len() as u64;
        if head - self.pos > cap {
            return Err(Lagged);
        }
        let head = head.min(until);
        let slot = |i: u64| ring.ring().slots[(i % cap) as usize];
        while self.pos < head && slot(self.pos).seq <= min_seq {
            self.pos += 1;
        }
        let pos = self.pos;
        if pos >= head {
            return Ok(None);
        }
        let start = slot(pos).start;
        let last = slot(head - 1);
        let mut end = last.start + u64::from(last.len);
        let mut msgs = head - pos;
        if (end - start) as usize > max_bytes {
            end = start;
            msgs = 0;
            while pos + msgs < head && ((end - start) as usize) < max_bytes {
                let s = slot(pos + msgs);
                end = s.start + u64::from(s.len);
                msgs += 1;
            }
        }
        Ok(Some(Peek {
            msgs,
            start,
            len: (end - start) as usize,
        }))
    }

    /// The bytes of a [`Peek`]: one slice, or two where the ring wraps.
    pub fn slices<'r>(ring: &'r RingRead<'_>, peek: &Peek) -> [&'r [u8]; 2] {
        let data = &ring.ring().data;
        let at = ring.ring().pos(peek.start);
        let first = peek.len.min(data.len() - at);
        [&data[at..at + first], &data[..peek.len - first]]
    }

    /// Takes what a write of `written` bytes of `peek` sent: the whole frames, and a frame
    /// cut short, whose unsent rest is appended to `rest` (it must be written next). Frames
    /// not reached stay for the next write.
    pub fn consume(
        &mut self,
        ring: &RingRead<'_>,
        peek: &Peek,
        written: usize,
        rest: &mut Vec<u8>,
    ) {
        if written >= peek.len {
            self.pos += peek.msgs;
            return;
        }
        let cap = ring.ring().slots.len() as u64;
        for _ in 0..peek.msgs {
            let s = ring.ring().slots[(self.pos % cap) as usize];
            let from = (s.start - peek.start) as usize;
            if from >= written {
                return;
            }
            self.pos += 1;
            let to = from + s.len as usize;
            if to > written {
                let sent = written - from;
                ring.ring()
                    .read_into(s.start + sent as u64, s.len as usize - sent, rest);
                return;
            }
        }
    }

    /// Appends only the newest message's frame, skipping the rest (conflation).
    pub fn latest_into(&mut self, out: &mut Vec<u8>) -> bool {
        if self.bus.head.load(Ordering::Acquire) <= self.pos {
            return false;
        }
        let held = self.bus.read();
        let ring = held.ring();
        let head = self.bus.head.load(Ordering::Acquire);
        self.pos = head;
        let s = ring.slots[((head - 1) % ring.slots.len() as u64) as usize];
        ring.read_into(s.start, s.len as usize, out);
        true
    }

    /// Only the newest message, skipping the rest (conflation).
    pub fn latest(&mut self) -> Option<Published> {
        if self.bus.head.load(Ordering::Acquire) <= self.pos {
            return None;
        }
        let held = self.bus.read();
        let ring = held.ring();
        let head = self.bus.head.load(Ordering::Acquire);
        self.pos = head;
        let s = ring.slots[((head - 1) % ring.slots.len() as u64) as usize];
        let mut frame = Vec::with_capacity(s.len as usize);
        ring.read_into(s.start, s.len as usize, &mut frame);
        Some(Published::from_frame(s.seq, frame))
    }

    /// Arranges for `cx` to be woken at the next batch; true when messages are already
    /// waiting (the caller should read again instead of sleeping).
    pub fn register(&mut self, cx: &Context<'_>) -> bool {
        let generation = self.bus.generation.load(Ordering::Acquire);
        if self.registered != generation {
            let mut w = self.bus.wakers();
            w.push(cx.waker().clone());
            // Stable while the lock is held: `wake` bumps it under the same lock.
            self.registered = self.bus.generation.load(Ordering::Acquire);
        }
        self.bus.head.load(Ordering::Acquire) > self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(seq: u64) -> String {
        // Sizes from 1 byte to past the 16-bit frame length, so that frames wrap the byte
        // ring at every offset and the ring grows.
        let n = match seq % 7 {
            0 => 70_000,
            1 => 1,
            2 => 125,
            3 => 126,
            _ => (seq * 37 % 3000) as usize,
        };
        format!("{seq}:{}", "x".repeat(n))
    }

    /// Against a naive model: what a cursor copies is exactly the frames of the messages
    /// after its position (above `min_seq`), up to the byte budget; a cursor more than
    /// `capacity` behind is told it lagged.
    #[test]
    fn copies_what_a_naive_ring_holds() {
        let bus = Bus::new(8);
        let mut fast = bus.subscribe();
        let mut slow = bus.subscribe();
        let mut model: Vec<Vec<u8>> = Vec::new();
        let mut fast_at = 0usize;
        let mut rng = 12345u64;
        for seq in 1..=400u64 {
            bus.push_text(seq, &text(seq));
            // Announced one by one: the ring keeps its 8 slots (it grows only for messages
            // not yet announced, see `a_burst_grows_the_ring_until_it_is_announced`).
            bus.wake();
            model.push(frame(0x1, text(seq).as_bytes()));
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if rng >> 61 == 0 {
                continue;
            }
            let budget = [1, 200, 5000, 100_000, usize::MAX][(rng >> 33) as usize % 5];
            let min_seq = if rng >> 40 & 3 == 0 { seq - 1 } else { 0 };
            let mut out = Vec::new();
            let n = fast.copy_into(&mut out, budget, min_seq).unwrap();
            let mut expect = Vec::new();
            let mut taken = 0;
            let rest: usize = model[fast_at..]
                .iter()
                .enumerate()
                .filter(|(i, _)| (fast_at + i) as u64 + 1 > min_seq)
                .map(|(_, f)| f.len())
                .sum();
            let budget = if rest <= budget { usize::MAX } else { budget };
            while fast_at < model.len() {
                if (fast_at as u64 + 1) <= min_seq {
                    fast_at += 1;
                    continue;
                }
                if expect.len() >= budget {
                    break;
                }
                expect.extend_from_slice(&model[fast_at]);
                fast_at += 1;
                taken += 1;
            }
            assert_eq!(n, taken, "at {seq}");
            assert!(out == expect, "frames at {seq}");
        }
        assert_eq!(slow.copy_into(&mut Vec::new(), usize::MAX, 0), Err(Lagged));
        let latest = fast.latest();
        assert!(latest.is_none());
        bus.push_text(401, "last");
        let p = slow.latest().unwrap();
        assert_eq!((p.seq, p.text()), (401, "last"));
        let mut got = Vec::new();
        fast.recv_into(&mut got, 10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].text(), "last");
        assert_eq!(got[0].frame(), frame(0x1, b"last").as_slice());
    }

    /// A burst pushed before any wake-up is held whole, however large (up to `MAX_SLOTS`):
    /// the ring grows instead of dropping messages no subscriber was told of. Once
    /// announced, messages are dropped as usual when a subscriber falls `capacity` behind.
    #[test]
    fn a_burst_grows_the_ring_until_it_is_announced() {
        let bus = Bus::new(8);
        let mut reader = bus.subscribe();
        let mut late = bus.subscribe();
        for seq in 1..=1000u64 {
            bus.push_text(seq, &format!("m{seq}"));
        }
        bus.wake();
        let mut got = Vec::new();
        assert_eq!(reader.recv_into(&mut got, usize::MAX), Ok(1000));
        let seqs: Vec<u64> = got.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
        assert_eq!(got[999].text(), "m1000");
        assert!(!late.lagged());
        // After the wake-up, the grown ring (1024 slots) drops the oldest again: a
        // subscriber still at the start of the burst falls behind and is told so.
        got.clear();
        for seq in 1001..=2100u64 {
            bus.push_text(seq, &format!("m{seq}"));
            bus.wake();
            assert_eq!(reader.recv_into(&mut got, usize::MAX), Ok(1));
        }
        assert_eq!(got.last().map(|p| p.seq), Some(2100));
        assert!(late.lagged());
        assert_eq!(late.copy_into(&mut Vec::new(), usize::MAX, 0), Err(Lagged));
        // Growth stops at MAX_SLOTS: a burst past it overruns even a fresh subscriber.
        let bus = Bus::new(8);
        let fresh = bus.subscribe();
        for seq in 1..=MAX_SLOTS + 10 {
            bus.push_text(seq, "x");
        }
        assert!(fresh.lagged());
    }

    /// Vectored writes from the ring that stop anywhere (short writes): the bytes sent, plus
    /// the rest of a frame cut short, written next, are exactly the frames in order.
    #[test]
    fn short_writes_from_the_ring_keep_frames_whole() {
        let bus = Bus::new(16);
        let mut cur = bus.subscribe();
        let mut expect = Vec::new();
        let mut sent = Vec::new();
        let mut rng = 99u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            rng >> 33
        };
        let mut seq = 0;
        for _ in 0..2000 {
            for _ in 0..next() % 4 {
                seq += 1;
                bus.push_text(seq, &text(seq));
                expect.extend_from_slice(&frame(0x1, text(seq).as_bytes()));
            }
            let ring = bus.read();
            let room = [1, 100, 4000, 1 << 20][next() as usize % 4];
            let Some(p) = cur.peek(&ring, room, 0).unwrap() else {
                continue;
            };
            let [a, b] = Cursor::slices(&ring, &p);
            assert_eq!(a.len() + b.len(), p.len);
            let written = (next() as usize) % (p.len + 1);
            let all: Vec<u8> = a.iter().chain(b).copied().collect();
            sent.extend_from_slice(&all[..written]);
            let mut rest = Vec::new();
            if written > 0 {
                cur.consume(&ring, &p, written, &mut rest);
            }
            sent.extend_from_slice(&rest);
            assert!(sent.len() <= expect.len());
            assert!(sent == expect[..sent.len()], "bytes differ after {seq}");
        }
        let ring = bus.read();
        if let Some(p) = cur.peek(&ring, usize::MAX, 0).unwrap() {
            let [a, b] = Cursor::slices(&ring, &p);
            sent.extend_from_slice(a);
            sent.extend_from_slice(b);
            cur.consume(&ring, &p, p.len, &mut Vec::new());
        }
        assert!(sent == expect);
        assert_eq!(cur.backlog(), 0);
    }

    fn texts(cur: &mut Cursor) -> Vec<String> {
        let mut got = Vec::new();
        cur.recv_into(&mut got, 1000).unwrap();
        got.iter().map(|p| p.text().to_string()).collect()
    }

    /// Frames pushed while a reader holds the ring wait (the push does not) and go in, in
    /// order, when the reader leaves; a subscriber that comes while frames are staged
    /// starts behind them.
    #[test]
    fn frames_pushed_under_a_reader_go_in_when_it_leaves() {
        let bus = Bus::new(64);
        let mut cur = bus.subscribe();
        bus.push_text(1, "one");
        let held = bus.read();
        bus.push_text(2, "two");
        bus.push_text(3, "three");
        assert_eq!(cur.backlog(), 1, "staged frames are not in the ring yet");
        drop(held);
        assert_eq!(cur.backlog(), 3);
        bus.push_text(4, "four");
        assert_eq!(texts(&mut cur), ["one", "two", "three", "four"]);

        // A subscriber arriving while a frame is staged starts past it, without waiting
        // for the reader (its cursor is ahead of the ring's head until the frame is in).
        let held = bus.read();
        bus.push_text(5, "five");
        let mut late = bus.subscribe();
        assert_eq!(late.backlog(), 0);
        let mut out = Vec::new();
        assert_eq!(late.copy_into(&mut out, usize::MAX, 0), Ok(0));
        assert!(!late.latest_into(&mut out));
        drop(held);
        assert_eq!(late.backlog(), 0);
        assert_eq!(texts(&mut late), Vec::<String>::new());
        bus.push_text(6, "six");
        assert_eq!(texts(&mut late), ["six"]);
        assert_eq!(texts(&mut cur), ["five", "six"]);
    }

    /// Runs `f` while another thread holds `bus` read-locked (for `hold` from the start).
    fn while_another_thread_reads(bus: &Bus, hold: Duration, f: impl FnOnce()) {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let held = bus.read();
                held_tx.send(()).unwrap();
                std::thread::sleep(hold);
                drop(held);
            });
            held_rx.recv().unwrap();
            f();
        });
    }

    /// A reader that stays: a push finding a frame staged longer than `STAGED_MAX_AGE`
    /// waits for the ring, and both frames are in when it returns.
    #[test]
    fn a_long_reader_is_waited_for_past_the_staging_age() {
        let bus = Bus::new(64);
        let mut cur = bus.subscribe();
        // Wide margins: a busy test machine may hold a thread up for tens of milliseconds.
        while_another_thread_reads(&bus, Duration::from_millis(400), || {
            let t = Instant::now();
            bus.push_text(1, "one");
            assert!(
                t.elapsed() < Duration::from_millis(200),
                "the first push waited"
            );
            std::thread::sleep(STAGED_MAX_AGE * 2);
            bus.push_text(2, "two");
            assert!(
                t.elapsed() >= Duration::from_millis(300),
                "the second push did not wait"
            );
            assert_eq!(cur.backlog(), 2);
        });
        assert_eq!(texts(&mut cur), ["one", "two"]);
    }

    /// A reader leaving a ring never waits for its write lock, even with frames staged
    /// past `STAGED_MAX_AGE` and another reader in: it may hold other rings, and waiting
    /// could close a cycle with a connection that holds this ring and waits for those.
    #[test]
    fn a_leaving_reader_never_waits_for_the_ring() {
        let bus = Bus::new(64);
        let mut cur = bus.subscribe();
        while_another_thread_reads(&bus, Duration::from_millis(400), || {
            bus.push_text(1, "one");
            std::thread::sleep(STAGED_MAX_AGE * 2);
            let t = Instant::now();
            drop(bus.read());
            assert!(
                t.elapsed() < Duration::from_millis(200),
                "a reader waited for the other to leave"
            );
        });
        assert_eq!(texts(&mut cur), ["one"]);
    }
}
