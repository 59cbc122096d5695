//! A bounded queue from one pipeline thread to the next whose waiting receiver parks at
//! once, instead of yielding its CPU first.
//!
//! Why: crossbeam's blocking `recv` backs off with up to eight `sched_yield`s before it
//! parks. A thread in `sched_yield` stays runnable and goes behind every other runnable
//! thread; when its message then arrives it gets no wake-up (it was never asleep) and waits
//! its turn. On a machine whose cores are busy (the WebSocket fan-out and, in the bench, its
//! clients) that turn is milliseconds. In `bourse bench ws` (1000 subscribers to book,
//! trades and ticker at 10,000 trades/s on 2 vCPUs) the writer and output threads were
//! runnable but not running 75-82 % of the time, with about 3,000 involuntary switches a
//! second each, and the pipeline's part of the trade-to-client latency (submit to the
//! feed) had a p99 of 13-20 ms. A parked receiver is woken by the sender's `unpark` like
//! any sleeper, which the scheduler places ahead of threads that have been running.
//!
//! Sending into a full queue still blocks the crossbeam way: the receiver is behind then,
//! and yielding to it is what the sender should do.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::thread::Thread;
use std::time::Duration;

use crossbeam_channel::{RecvError, SendError, TryRecvError};

/// Longest park without a message: a safety net, the sender's `unpark` is what wakes.
const PARK: Duration = Duration::from_millis(100);

/// The receiving thread and whether it is (about to be) parked.
#[derive(Debug, Default)]
struct Waiter {
    parked: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Waiter {
    fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
    }
}

/// The sending side (one per queue in the pipeline; dropping it ends the receiver's `recv`).
#[derive(Debug)]
pub(crate) struct HandoffSender<T> {
    tx: Option<crossbeam_channel::Sender<T>>,
    waiter: Arc<Waiter>,
}

/// The receiving side, used by one thread (the first to call [`HandoffReceiver::recv`]).
#[derive(Debug)]
pub(crate) struct HandoffReceiver<T> {
    rx: crossbeam_channel::Receiver<T>,
    waiter: Arc<Waiter>,
}

/// A queue of at most `cap` messages.
pub(crate) fn bounded<T>(cap: usize) -> (HandoffSender<T>, HandoffReceiver<T>) {
    let (tx, rx) = crossbeam_channel::bounded(cap);
    let waiter = Arc::new(Waiter::default());
    (
        HandoffSender {
            tx: Some(tx),
            waiter: waiter.clone(),
        },
        HandoffReceiver { rx, waiter },
    )
}

impl<T> HandoffSender<T> {
    /// Queues `msg` (waiting while the queue is full) and wakes the receiver if it parked.
    /// Fails when the receiver is gone.
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        let tx = self.tx.as_ref().expect("sender present until dropped");
        tx.send(msg)?;
        self.waiter.wake();
        Ok(())
    }
}

impl<T> Drop for HandoffSender<T> {
    fn drop(&mut self) {
        // Disconnect first, then wake the receiver so that it sees it.
        drop(self.tx.take());
        self.waiter.wake();
    }
}

impl<T> HandoffReceiver<T> {
    /// The next message, parking (without spinning or yielding) while there is none; fails
    /// once the queue is empty and the sender is gone.
    pub fn recv(&self) -> Result<T, RecvError> {
        let me = self.waiter.thread.get_or_init(std::thread::current);
        debug_assert_eq!(me.id(), std::thread::current().id(), "one receiving thread");
        loop {
            match self.rx.try_recv() {
                Ok(m) => return Ok(m),
                Err(TryRecvError::Disconnected) => return Err(RecvError),
                Err(TryRecvError::Empty) => {}
            }
            // Announce the park, then look again: a send in between sees the flag (both
            // sides fence), so it unparks us or we see its message.
            self.waiter.parked.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let again = self.rx.try_recv();
            if let Err(TryRecvError::Empty) = again {
                std::thread::park_timeout(PARK);
            }
            self.waiter.parked.store(false, Ordering::SeqCst);
            match again {
                Ok(m) => return Ok(m),
                Err(TryRecvError::Disconnected) => return Err(RecvError),
                Err(TryRecvError::Empty) => {}
            }
        }
    }

    /// A message if one is queued.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.rx.try_recv()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_arrives_in_order_and_the_end_is_seen() {
        let (tx, rx) = bounded::<u64>(4);
        let consumer = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Ok(m) = rx.recv() {
                got.push(m);
            }
            got
        });
        for i in 0..20_000u64 {
            tx.send(i).expect("receiver alive");
            if i % 1000 == 0 {
                // Let the receiver park now and then, so wake-ups are exercised too.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(tx);
        let got = consumer.join().expect("consumer");
        assert_eq!(got, (0..20_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_parked_receiver_is_woken_by_a_send_not_by_the_safety_net() {
        let (tx, rx) = bounded::<u8>(1);
        let consumer = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            let m = rx.recv().expect("a message");
            (m, t.elapsed())
        });
        // Long enough for the receiver to park, well short of the safety net.
        std::thread::sleep(Duration::from_millis(5));
        let sent = std::time::Instant::now();
        tx.send(7).expect("receiver alive");
        let (m, waited) = consumer.join().expect("consumer");
        assert_eq!(m, 7);
        assert!(
            waited < PARK && sent.elapsed() < PARK,
            "woken by the safety net, not the send: {waited:?}"
        );
    }
}
