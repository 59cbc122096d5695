//! The rings between submitters and the engine thread, and the routing of a command to one.
//!
//! One bounded lock-free [`ArrayQueue`] per pair (created when the pair exists, including
//! pairs added at run time) and one "control" ring for commands that touch no single book
//! (accounts, requests, operator commands, `CancelAll` over every pair, and commands naming a
//! pair that does not exist yet, which the engine will reject). A full ring answers
//! [`SubmitError::Busy`] at once: the caller is never blocked and nothing is queued
//! elsewhere, so nothing is lost either.
//!
//! Ordering: commands on one ring keep their submission order; across rings the engine
//! thread decides (round-robin). A client that waits for a reply before sending a dependent
//! command (as the API does: a cancel needs the order id from the reply) always sees its
//! commands applied in order.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::Thread;

use crossbeam_queue::ArrayQueue;

use super::{Reply, SubmitError};
use crate::command::Command;
use crate::ids::PairId;
use crate::spec::MAX_PAIRS;

/// A command waiting in a ring, with the closure that receives its outcome.
pub(crate) struct Job {
    pub command: Command,
    pub reply: Reply,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("command", &self.command)
            .finish()
    }
}

/// Index of the control ring in [`Router::rings`].
pub(crate) const CONTROL: usize = MAX_PAIRS;

/// The rings and the engine thread's wake-up handle.
#[derive(Debug)]
pub(crate) struct Router {
    /// Pair rings by pair id, then the control ring at [`CONTROL`].
    rings: Box<[OnceLock<ArrayQueue<Job>>]>,
    /// Pair rings `0..pair_rings` exist (pairs are dense from 0).
    pair_rings: AtomicUsize,
    capacity: usize,
    /// Set by the engine thread just before it parks.
    sleeping: AtomicBool,
    engine_thread: OnceLock<Thread>,
    /// No submit is accepted once set.
    stopped: AtomicBool,
    /// Submits between their `stopped` check and their push (see [`Router::quiesce`]).
    in_flight: AtomicUsize,
    busy: AtomicU64,
}

impl Router {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "ring capacity must be at least 1");
        let rings: Vec<OnceLock<ArrayQueue<Job>>> =
            (0..=MAX_PAIRS).map(|_| OnceLock::new()).collect();
        let router = Router {
            rings: rings.into_boxed_slice(),
            pair_rings: AtomicUsize::new(0),
            capacity,
            sleeping: AtomicBool::new(false),
            engine_thread: OnceLock::new(),
            stopped: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            busy: AtomicU64::new(0),
        };
        router.rings[CONTROL].get_or_init(|| ArrayQueue::new(capacity));
        router
    }

    pub fn set_engine_thread(&self, thread: Thread) {
        let _ = self.engine_thread.set(thread);
    }

    /// Makes sure rings exist for pairs `0..count`. Engine thread (and start-up) only.
    pub fn ensure_pairs(&self, count: usize) {
        let count = count.min(MAX_PAIRS);
        let have = self.pair_rings.load(Ordering::Acquire);
        if count <= have {
            return;
        }
        for ring in &self.rings[have..count] {
            ring.get_or_init(|| ArrayQueue::new(self.capacity));
        }
        self.pair_rings.store(count, Ordering::Release);
    }

    /// Number of rings that exist (pair rings + control).
    pub fn ring_count(&self) -> usize {
        self.pair_rings.load(Ordering::Acquire) + 1
    }

    /// The `i`-th existing ring (`0..ring_count()`); the last one is the control ring.
    pub fn ring(&self, i: usize) -> &ArrayQueue<Job> {
        let pairs = self.pair_rings.load(Ordering::Acquire);
        let idx = if i >= pairs { CONTROL } else { i };
        self.rings[idx].get().expect("ring exists")
    }

    /// The ring for a pair (`None`: control).
    pub fn ring_of(&self, pair: Option<PairId>) -> &ArrayQueue<Job> {
        let idx = match pair {
            Some(p) if usize::from(p.0) < self.pair_rings.load(Ordering::Acquire) => {
                usize::from(p.0)
            }
            _ => CONTROL,
        };
        self.rings[idx].get().expect("ring exists")
    }

    pub fn submit(&self, command: Command, reply: Reply) -> Result<(), SubmitError> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.stopped.load(Ordering::SeqCst) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::Stopped);
        }
        let ring = self.ring_of(command.pair());
        let pushed = ring.push(Job { command, reply });
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if pushed.is_err() {
            self.busy.fetch_add(1, Ordering::Relaxed);
            return Err(SubmitError::Busy);
        }
        // The engine thread is unparked only when it is parked: while it works (a journal
        // sync included) it takes what queued when it next looks, with no system call here.
        self.wake();
        Ok(())
    }

    /// Wakes the engine thread if it is parked (or about to park).
    pub fn wake(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst)
            && let Some(t) = self.engine_thread.get()
        {
            t.unpark();
        }
    }

    /// Engine thread: announce the intention to park. The caller must check the rings again
    /// after this and before parking (a submit in between sees the flag and unparks).
    pub fn set_sleeping(&self, sleeping: bool) {
        self.sleeping.store(sleeping, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    pub fn is_empty(&self) -> bool {
        (0..self.ring_count()).all(|i| self.ring(i).is_empty())
    }

    /// Stops accepting submits and waits until no submit is half-way, so that after this
    /// returns the rings hold every command that was ever accepted.
    pub fn quiesce(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        while self.in_flight.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// Drops every queued job unrun (after [`Router::quiesce`] on a failed pipeline): each
    /// reply is dropped, so whoever waits on one hears that it will never come, instead of
    /// waiting for a pipeline that will not sequence it. Returns how many were dropped.
    pub fn discard_queued(&self) -> usize {
        let mut n = 0;
        for i in 0..self.ring_count() {
            while let Some(job) = self.ring(i).pop() {
                drop(job);
                n += 1;
            }
        }
        n
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub fn busy_count(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// `(pair or None for control, occupancy, capacity)` of every ring.
    pub fn occupancy(&self) -> Vec<(Option<PairId>, usize, usize)> {
        let pairs = self.pair_rings.load(Ordering::Acquire);
        let mut v: Vec<_> = (0..pairs)
            .map(|i| {
                let r = self.rings[i].get().expect("ring exists");
                (Some(PairId(i as u16)), r.len(), r.capacity())
            })
            .collect();
        let c = self.rings[CONTROL].get().expect("control ring");
        v.push((None, c.len(), c.capacity()));
        v
    }
}

impl Router {
    /// Unparks the engine thread unconditionally (control messages, shutdown).
    pub fn wake_always(&self) {
        if let Some(t) = self.engine_thread.get() {
            t.unpark();
        }
    }
}
