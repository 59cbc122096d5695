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

use parking_lot::{Mutex, RwLock};

use crate::state::Published;

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
