//! Graceful shutdown of the WebSocket connections.
//!
//! An upgraded connection is no longer an HTTP request (hyper hands its stream over), so the
//! server's graceful drain does not wait for it and, left alone, it would be cut when the
//! process exits, without a close frame. Instead every connection registers here when it
//! is upgraded and leaves when its task ends; [`Shutdown::start`] (through
//! `Feed::close_connections`) tells each one to close with 1001 (Going Away) once it has
//! written what its rings held when it learned of it (bounded by half its close grace:
//! [`crate::ws`]), an upgrade after that is refused, and [`Shutdown::closed`]
//! waits for the last connection to finish its close handshake.
//!
//! A connection learns of the shutdown from a flag it reads whenever it is polled, and is
//! woken for it through its own [`AtomicWaker`]: registering one is lock-free and does not
//! clone the waker while the task stays the same, so the per-poll cost is a few atomic
//! operations, with no lock and no allocation. The registry's lock is taken when a
//! connection opens, when it ends, and once at shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Context;
use std::time::Duration;

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// The open connections and whether the shutdown has started.
#[derive(Debug, Default)]
pub(crate) struct Shutdown {
    started: AtomicBool,
    open: Mutex<Open>,
    /// Notified when the last connection leaves after the start.
    all_closed: Notify,
}

#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    wakers: HashMap<u64, Arc<AtomicWaker>>,
}

/// A connection's place in the registry; leaving it (drop) is the connection's end.
#[derive(Debug)]
pub(crate) struct Registration {
    id: u64,
    signal: StopSignal,
}

/// What a connection polls to learn that the server is shutting down.
#[derive(Clone, Debug)]
pub(crate) struct StopSignal {
    shutdown: Arc<Shutdown>,
    waker: Arc<AtomicWaker>,
}

impl Shutdown {
    /// Registers a new connection; `None` once the shutdown has started.
    pub(crate) fn register(self: &Arc<Self>) -> Option<Registration> {
        let mut open = self.open.lock();
        // Read under the lock that `start` takes after setting the flag: a connection
        // registered here is either refused or woken by `start`.
        if self.started.load(Ordering::Acquire) {
            return None;
        }
        let id = open.next_id;
        open.next_id += 1;
        let waker = Arc::new(AtomicWaker::new());
        open.wakers.insert(id, waker.clone());
        Some(Registration {
            id,
            signal: StopSignal {
                shutdown: self.clone(),
                waker,
            },
        })
    }

    /// Starts the shutdown: every registered connection is woken to close, and no new one
    /// registers. Idempotent.
    pub(crate) fn start(&self) {
        self.started.store(true, Ordering::Release);
        let open = self.open.lock();
        for waker in open.wakers.values() {
            waker.wake();
        }
        if open.wakers.is_empty() {
            self.all_closed.notify_waiters();
        }
    }

    /// Connections still registered.
    fn open_count(&self) -> usize {
        self.open.lock().wakers.len()
    }

    /// Waits, at most `limit`, until no connection is registered; whether none is.
    pub(crate) async fn closed(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.all_closed.notified();
                tokio::pin!(notified);
                // Enabled before the check, so that the last connection leaving between
                // the check and the wait is not missed.
                notified.as_mut().enable();
                if self.open_count() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

impl Registration {
    /// The signal the connection polls.
    pub(crate) fn signal(&self) -> StopSignal {
        self.signal.clone()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let shutdown = &self.signal.shutdown;
        let mut open = shutdown.open.lock();
        open.wakers.remove(&self.id);
        if open.wakers.is_empty() && shutdown.started.load(Ordering::Acquire) {
            shutdown.all_closed.notify_waiters();
        }
    }
}

impl StopSignal {
    /// Whether the server is shutting down; if not, the task of `cx` is woken when it
    /// starts. (Registered before the flag is read: a start in between is seen either by
    /// the read or by the wake.)
    pub(crate) fn requested(&self, cx: &Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.shutdown.started.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Poll;

    use super::*;

    #[tokio::test]
    async fn start_wakes_every_connection_and_refuses_new_ones() {
        let shutdown = Arc::new(Shutdown::default());
        let a = shutdown.register().expect("open");
        let b = shutdown.register().expect("open");
        let waits = [a.signal(), b.signal()].map(|signal| {
            tokio::spawn(async move {
                poll_fn(|cx| {
                    if signal.requested(cx) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
            })
        });
        tokio::task::yield_now().await;
        shutdown.start();
        for wait in waits {
            tokio::time::timeout(Duration::from_secs(5), wait)
                .await
                .expect("woken by the start")
                .expect("task");
        }
        assert!(shutdown.register().is_none(), "registered after the start");
    }

    #[tokio::test]
    async fn closed_waits_for_the_last_connection() {
        let shutdown = Arc::new(Shutdown::default());
        let a = shutdown.register().expect("open");
        let b = shutdown.register().expect("open");
        shutdown.start();
        assert!(!shutdown.closed(Duration::from_millis(20)).await);
        drop(a);
        assert!(!shutdown.closed(Duration::from_millis(20)).await);
        let waiting = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { shutdown.closed(Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        drop(b);
        assert!(waiting.await.expect("task"), "the last close was missed");
        assert!(shutdown.closed(Duration::ZERO).await);
    }
}
