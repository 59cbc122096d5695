//! A socket wrapper that knows whether a read may find anything, so that a WebSocket
//! connection asks tungstenite for client frames only then.
//!
//! Why: a busy connection's task is woken for every write (~80 times a second each), and
//! every poll of tungstenite's stream first zeroes its 4 KiB read buffer (a `resize`) and
//! then goes through hyper's upgraded stream to the socket, even when the client sent
//! nothing, which is nearly always: in `bourse bench ws` (1000 subscribers, 10,000
//! trades/s) the zeroing alone was 1.7 % of all samples, the largest user-space cost of the
//! server after `Conn::poll`. The gate gives the socket its own waker for reads: when the
//! socket becomes readable it sets the flag and wakes the task through the waker of the
//! read that found nothing.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Set by the socket's read waker; the waker of the read that last found nothing.
#[derive(Debug)]
struct Readiness {
    may_read: AtomicBool,
    reader: AtomicWaker,
}

impl Wake for Readiness {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.may_read.store(true, Ordering::Release);
        self.reader.wake();
    }
}

/// `S` with reads gated (see the module docs); writes pass straight through.
#[derive(Debug)]
pub(crate) struct ReadGate<S> {
    inner: S,
    readiness: Arc<Readiness>,
    /// `readiness` as a waker, made once.
    waker: Waker,
    /// Reads attempted, to tell whether a poll of the stream above reached the socket.
    reads: AtomicU64,
}

impl<S> ReadGate<S> {
    pub fn new(inner: S) -> ReadGate<S> {
        let readiness = Arc::new(Readiness {
            may_read: AtomicBool::new(true),
            reader: AtomicWaker::new(),
        });
        ReadGate {
            inner,
            waker: Waker::from(readiness.clone()),
            readiness,
            reads: AtomicU64::new(0),
        }
    }

    /// Whether a read may find something (the last read brought data, or the socket has
    /// signalled since one found nothing), and from now on assumes it will not: call it
    /// right before polling the stream above, then [`ReadGate::after_poll`].
    pub fn take_may_read(&self) -> bool {
        self.readiness.may_read.swap(false, Ordering::AcqRel)
    }

    /// Whether a read may find something, leaving the flag as it is.
    pub fn may_read(&self) -> bool {
        self.readiness.may_read.load(Ordering::Acquire)
    }

    /// The number of reads so far, for [`ReadGate::after_poll`].
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// After polling the stream above: if it returned without reaching the socket (it was
    /// busy writing, say), the socket's read waker was not set, so keep reading next time.
    pub fn after_poll(&self, reads_before: u64, ready: bool) {
        if ready || self.reads() == reads_before {
            self.readiness.may_read.store(true, Ordering::Release);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadGate<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.reads.fetch_add(1, Ordering::Relaxed);
        this.readiness.reader.register(cx.waker());
        let mut own = Context::from_waker(&this.waker);
        let r = Pin::new(&mut this.inner).poll_read(&mut own, buf);
        if r.is_ready() {
            // Data, an end or an error: the next poll reads again.
            this.readiness.may_read.store(true, Ordering::Release);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadGate<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A gated read that found nothing is woken, flag set, when data arrives; data read
    /// keeps the gate open.
    #[tokio::test]
    async fn the_socket_opens_the_gate_when_data_arrives() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut gate = ReadGate::new(a);
        assert!(gate.take_may_read(), "open at first");
        let mut buf = [0u8; 8];
        // Nothing to read: pending, gate stays shut.
        let before = gate.reads();
        let pending = futures::poll!(std::pin::pin!(gate.read(&mut buf)));
        assert!(pending.is_pending());
        gate.after_poll(before, false);
        assert!(
            !gate.take_may_read(),
            "shut after a read that found nothing"
        );
        b.write_all(b"hi").await.unwrap();
        assert!(gate.take_may_read(), "the socket's waker opened it");
        let before = gate.reads();
        let n = gate.read(&mut buf).await.unwrap();
        gate.after_poll(before, true);
        assert_eq!(&buf[..n], b"hi");
        assert!(gate.take_may_read(), "open after data");
        // A poll that never reached the socket leaves the gate open.
        gate.after_poll(gate.reads(), false);
        assert!(gate.take_may_read());
    }
}
