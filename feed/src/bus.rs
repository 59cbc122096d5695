//! The fan-out of one channel: a ring of encoded messages that every subscriber reads at its
//! own pace through a [`Cursor`].
//!
//! The publisher appends without waking anyone ([`Bus::push`]) and wakes the waiting
//! subscribers once per pipeline batch ([`Bus::wake`]), so a batch of N messages costs one
//! wake-up per connection, not N. A subscriber drains every message it has not seen in one
//! lock acquisition; its backlog (`head - pos`) is its queue, bounded by the connection's
//! `queue_bound`, and a subscriber more than `capacity` behind has lost messages (lagged).
//! Messages are shared bytes: a subscriber clones a reference, never the text.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Waker};

use axum::body::Bytes;
use parking_lot::{Mutex, RwLock};

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

    /// The JSON text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.frame[self.start..]).unwrap_or_default()
    }

    /// The frame as written to a socket.
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }
}

/// One channel's ring.
#[derive(Debug)]
pub struct Bus {
    slots: RwLock<Vec<Option<Published>>>,
    cap: u64,
    /// Messages ever pushed (written under the `slots` write lock).
    head: AtomicU64,
    receivers: AtomicUsize,
    /// Bumped by every wake; a cursor registered in the current generation is still waiting.
    generation: AtomicU64,
    wakers: Mutex<Vec<Waker>>,
    dirty: AtomicBool,
}

/// The subscriber fell more than the ring's capacity behind: messages were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged;

impl Bus {
    pub fn new(capacity: usize) -> Arc<Bus> {
        let cap = capacity.max(1);
        Arc::new(Bus {
            slots: RwLock::new(vec![None; cap]),
            cap: cap as u64,
            head: AtomicU64::new(0),
            receivers: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            wakers: Mutex::new(Vec::new()),
            dirty: AtomicBool::new(false),
        })
    }

    pub fn receiver_count(&self) -> usize {
        self.receivers.load(Ordering::Relaxed)
    }

    /// Appends a message; subscribers are woken by the next [`Bus::wake`].
    pub fn push(&self, p: Published) {
        let mut slots = self.slots.write();
        let h = self.head.load(Ordering::Relaxed);
        slots[(h % self.cap) as usize] = Some(p);
        self.head.store(h + 1, Ordering::Release);
        drop(slots);
        self.dirty.store(true, Ordering::Release);
    }

    /// Wakes the waiting subscribers if anything was pushed since the last wake.
    pub fn wake(&self) {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let wakers = {
            let mut w = self.wakers.lock();
            self.generation.fetch_add(1, Ordering::AcqRel);
            std::mem::take(&mut *w)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Pushes and wakes at once (publishers outside the batch loop).
    pub fn send(&self, p: Published) {
        self.push(p);
        self.wake();
    }

    /// A cursor at the end of the ring: it sees the messages pushed from now on.
    pub fn subscribe(self: &Arc<Bus>) -> Cursor {
        self.receivers.fetch_add(1, Ordering::Relaxed);
        Cursor {
            pos: self.head.load(Ordering::Acquire),
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
        self.backlog() > self.bus.cap
    }

    /// Appends up to `max` messages to `out`. `Err(Lagged)` (nothing taken) when messages
    /// were overwritten before this cursor read them.
    pub fn recv_into(
        &mut self,
        out: &mut impl Extend<Published>,
        max: usize,
    ) -> Result<usize, Lagged> {
        if self.bus.head.load(Ordering::Acquire) == self.pos {
            return Ok(0);
        }
        let slots = self.bus.slots.read();
        let head = self.bus.head.load(Ordering::Acquire);
        if head - self.pos > self.bus.cap {
            return Err(Lagged);
        }
        let end = head.min(self.pos + max as u64);
        let cap = self.bus.cap;
        out.extend((self.pos..end).filter_map(|i| slots[(i % cap) as usize].as_ref().cloned()));
        let n = (end - self.pos) as usize;
        self.pos = end;
        Ok(n)
    }

    /// Appends the frames of the messages not yet taken (those with seq above `min_seq`) to
    /// `out` until it holds `max_bytes`. `Err(Lagged)` (nothing taken) when messages were
    /// overwritten before this cursor read them. No reference counting: bytes are copied
    /// under the read lock.
    pub fn copy_into(
        &mut self,
        out: &mut Vec<u8>,
        max_bytes: usize,
        min_seq: u64,
    ) -> Result<usize, Lagged> {
        if self.bus.head.load(Ordering::Acquire) == self.pos {
            return Ok(0);
        }
        let slots = self.bus.slots.read();
        let head = self.bus.head.load(Ordering::Acquire);
        if head - self.pos > self.bus.cap {
            return Err(Lagged);
        }
        let mut n = 0;
        while self.pos < head && out.len() < max_bytes {
            if let Some(p) = &slots[(self.pos % self.bus.cap) as usize]
                && p.seq > min_seq
            {
                out.extend_from_slice(&p.frame);
                n += 1;
            }
            self.pos += 1;
        }
        Ok(n)
    }

    /// Appends only the newest message's frame, skipping the rest (conflation).
    pub fn latest_into(&mut self, out: &mut Vec<u8>) -> bool {
        if self.bus.head.load(Ordering::Acquire) == self.pos {
            return false;
        }
        let slots = self.bus.slots.read();
        let head = self.bus.head.load(Ordering::Acquire);
        self.pos = head;
        match &slots[((head - 1) % self.bus.cap) as usize] {
            Some(p) => {
                out.extend_from_slice(&p.frame);
                true
            }
            None => false,
        }
    }

    /// Only the newest message, skipping the rest (conflation).
    pub fn latest(&mut self) -> Option<Published> {
        if self.bus.head.load(Ordering::Acquire) == self.pos {
            return None;
        }
        let slots = self.bus.slots.read();
        let head = self.bus.head.load(Ordering::Acquire);
        self.pos = head;
        slots[((head - 1) % self.bus.cap) as usize].clone()
    }

    /// Arranges for `cx` to be woken at the next batch; true when messages are already
    /// waiting (the caller should read again instead of sleeping).
    pub fn register(&mut self, cx: &Context<'_>) -> bool {
        let generation = self.bus.generation.load(Ordering::Acquire);
        if self.registered != generation {
            let mut w = self.bus.wakers.lock();
            w.push(cx.waker().clone());
            // Stable while the lock is held: `wake` bumps it under the same lock.
            self.registered = self.bus.generation.load(Ordering::Acquire);
        }
        self.bus.head.load(Ordering::Acquire) != self.pos
    }
}
