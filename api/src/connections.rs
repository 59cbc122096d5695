//! The HTTP accept loop, with a bound on connections and on how long a request head may take.
//!
//! `axum::serve` sets neither: it serves every connection it accepts for as long as the
//! peer keeps it open, and hyper's header read timeout needs a timer that `axum::serve`
//! does not give it. A client that opened connections and sent nothing (or a request head
//! one byte at a time) kept each open for good, until the process ran out of file
//! descriptors: then every other client's connection waited unaccepted, and the journal and
//! the history store could not open a file either. So this loop serves the router on hyper
//! directly, with
//! - at most [`ConnLimits::max_connections`] connections at once, WebSockets included (an
//!   upgraded connection keeps its slot until it closes). One more is answered a 503
//!   `SERVICE_UNAVAILABLE` problem with `Retry-After: 1` and closed, without reading its
//!   request, so what it costs is bounded by [`REFUSALS_IN_FLIGHT`] and [`REFUSAL_GRACE`].
//! - at most [`ConnLimits::max_connections_per_address`] of them from one client address
//!   (an IPv6 client by its /64, as the rate limit counts it:
//!   [`crate::rate_limit::client_address`]), WebSockets included. Without it one address
//!   could take every slot and lock every other client out, HTTP and WebSocket alike. One
//!   more from that address is refused the same way, its problem saying the address has too
//!   many connections. The count of an address is released when a connection closes,
//!   however it ends (an upgraded one when the WebSocket closes, one that fails with an
//!   error too); the table holds only addresses with a connection open, so it never has more
//!   than `max_connections` entries ([`PerAddress`]). Loopback is not exempt: the benches,
//!   which open thousands of connections from 127.0.0.1, lift the bound.
//! - a request head due within [`ConnLimits::header_timeout`] of the moment the server
//!   waits for one: on a new connection, and on a kept-alive one after its last response,
//!   so an idle keep-alive connection is closed after that long too (hyper closes it; a
//!   head that was partly sent gets no answer, like nginx's `client_header_timeout`).
//!
//! - hyper's own answer to a head it cannot parse (a bare 400, 414 or 431) replaced by a
//!   problem with a request id, like every other failure ([`crate::bare_answers`]).
//!
//! Graceful shutdown is `axum::serve`'s: stop accepting, let each connection finish its
//! request in flight, wait for them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Connections past the limit being answered at once; more are closed unanswered.
pub const REFUSALS_IN_FLIGHT: usize = 256;
/// Longest a refused connection is given to take its 503.
pub const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// The limits of [`serve`] (`max_connections`, `max_connections_per_address`,
/// `header_timeout_secs` in the settings).
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub max_connections: usize,
    /// Connections one client address may hold open; `max_connections` or more: no bound
    /// beside the global one.
    pub max_connections_per_address: usize,
    pub header_timeout: Duration,
}

impl ConnLimits {
    /// The limits the settings give (`max_connections`, `max_connections_per_address`,
    /// `header_timeout_secs`).
    pub fn of(config: &crate::Config) -> ConnLimits {
        ConnLimits {
            max_connections: config.max_connections as usize,
            max_connections_per_address: config.max_connections_per_address as usize,
            header_timeout: Duration::from_secs(config.header_timeout_secs),
        }
    }
}

/// What the 503 of a connection past [`ConnLimits::max_connections`] says.
const TOO_MANY_CONNECTIONS: &str = "too many connections; retry shortly";
/// What the 503 of a connection past [`ConnLimits::max_connections_per_address`] says.
const TOO_MANY_FROM_ADDRESS: &str =
    "too many connections from this client address; close one or retry shortly";

/// The connections open per client address ([`crate::rate_limit::client_address`]),
/// bounded by `max` each. An address is in the table only while it has a connection open
/// (its entry goes when its count drops to 0), and each of those connections holds one of
/// the `max_connections` slots, so the table never holds more entries than that.
#[derive(Debug)]
pub struct PerAddress {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    /// A table allowing `max` connections per address (at least 1).
    pub fn new(max: usize) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// One more connection from `ip`, held until the returned guard is dropped; `None` when
    /// its address already has `max` open.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let address = crate::rate_limit::client_address(ip);
        let mut open = self.open.lock();
        let count = open.entry(address).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            address,
        })
    }

    /// Connections open from `ip`'s address.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let address = crate::rate_limit::client_address(ip);
        self.open.lock().get(&address).copied().unwrap_or(0)
    }

    /// Addresses with a connection open.
    pub fn addresses(&self) -> usize {
        self.open.lock().len()
    }
}

/// One connection counted against its address in a [`PerAddress`] table, until dropped.
#[derive(Debug)]
pub struct AddressSlot {
    table: Arc<PerAddress>,
    address: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock();
        let count = open
            .get_mut(&self.address)
            .expect("an address with a slot out is in the table");
        assert!(*count > 0);
        *count -= 1;
        if *count == 0 {
            open.remove(&self.address);
        }
    }
}

/// File descriptors the process needs beside its connections (the listener, journal
/// segments and snapshots, the SQLite files and their readers, the feed's store).
pub const RESERVED_FDS: u64 = 256;

/// Checks that the process's open-file limit has room for `max_connections`, and warns at
/// start when it has not: past the descriptors, accepts fail (the kernel's limit) before
/// this module's 503 can be given. The limit is first raised to the hard one
/// ([`feed::raise_nofile_limit`], as the feed does for its WebSockets). Returns the limit.
pub fn make_room_for(max_connections: usize) -> u64 {
    let wanted = (max_connections as u64).saturating_add(RESERVED_FDS);
    let soft = feed::raise_nofile_limit();
    // Once per process: the start-up answers and the server each serve the same address.
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if soft < wanted && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            open_files = soft,
            max_connections,
            "the open-file limit is below max_connections plus {RESERVED_FDS}: raise it \
             (ulimit -n, LimitNOFILE) or lower max_connections"
        );
    }
    soft
}

/// Connections refused since start, by the bound that refused them (`/metrics`:
/// `bourse_connections_refused_total`). Counted whether or not the refusal could be
/// answered (past [`REFUSALS_IN_FLIGHT`] it is closed unanswered).
#[derive(Debug, Default)]
pub struct RefusalCounts {
    /// At `max_connections`.
    pub global: std::sync::atomic::AtomicU64,
    /// At `max_connections_per_address`.
    pub per_address: std::sync::atomic::AtomicU64,
}

/// Serves `app` on `listener` until `shutdown` completes, then drains (see the module doc);
/// each connection refused is counted in `refused`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    refused: Arc<RefusalCounts>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    make_room_for(limits.max_connections);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // At `max_connections` per address or more, the global bound is the only one: no table.
    let per_address = (limits.max_connections_per_address < limits.max_connections)
        .then(|| PerAddress::new(limits.max_connections_per_address));
    let refusing = Arc::new(AtomicUsize::new(0));
    // Connections watch `stop` to start their graceful shutdown; each holds a `done`
    // receiver, so `done_tx.closed()` resolves once all have ended.
    let (stop_tx, stop_rx) = watch::channel(());
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Replies are small and latency-bound: never hold one back for Nagle.
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.global.fetch_add(1, Ordering::Relaxed);
            refuse(tcp, &refusing, TOO_MANY_CONNECTIONS);
            continue;
        };
        let address_slot = match &per_address {
            None => None,
            Some(table) => match table.try_acquire(peer.ip()) {
                Some(s) => Some(s),
                None => {
                    drop(slot);
                    refused.per_address.fetch_add(1, Ordering::Relaxed);
                    refuse(tcp, &refusing, TOO_MANY_FROM_ADDRESS);
                    continue;
                }
            },
        };
        let io = TokioIo::new(Slotted::new(tcp, slot, address_slot));
        let (app, mut stop_rx, done_rx) = (app.clone(), stop_rx.clone(), done_rx.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut app = app.clone();
                async move {
                    Ok::<_, Infallible>(
                        tower::Service::call(&mut app, req.map(axum::body::Body::new))
                            .await
                            .unwrap_or_else(|e| match e {}),
                    )
                }
            });
            let mut conn = std::pin::pin!(
                hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .serve_connection(io, service)
                    .with_upgrades()
            );
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::trace!(error = %e, "connection ended");
                        }
                        break;
                    }
                    _ = stop_rx.changed(), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(done_rx);
        });
    }
    drop(listener);
    drop(done_rx);
    let _ = stop_tx.send(());
    done_tx.closed().await;
}

/// An accept error: one about the connection itself (reset before it was accepted) is
/// skipped; any other (out of file descriptors) is logged and accepting pauses for a
/// second, as `axum::serve` does.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept error");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A connection past a limit: the 503 problem saying `detail`, then close (see the module
/// doc).
fn refuse(mut tcp: TcpStream, refusing: &Arc<AtomicUsize>, detail: &'static str) {
    if refusing.fetch_add(1, Ordering::AcqRel) >= REFUSALS_IN_FLIGHT {
        refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let refusing = refusing.clone();
    tokio::spawn(async move {
        let response = refusal(detail);
        let _ = tokio::time::timeout(REFUSAL_GRACE, async {
            tcp.write_all(&response).await?;
            tcp.shutdown().await?;
            // Read what the client sent until it closes, so the close does not reset the
            // connection under the answer.
            let mut sink = [0u8; 1024];
            while tokio::io::AsyncReadExt::read(&mut tcp, &mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
        refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

/// The bytes of the 503 a connection past a limit gets: the problem the server's edge
/// would render ([`ApiError::retry_shortly`]) with `detail`, written out as a whole
/// response since no request was read.
fn refusal(detail: &str) -> Vec<u8> {
    crate::bare_answers::closing_response(&crate::error::ApiError::retry_shortly(detail).0)
}

/// A connection holding one of the [`ConnLimits::max_connections`] slots, and one of its
/// address's [`ConnLimits::max_connections_per_address`] when that bound applies, until it
/// is dropped, which for an upgraded connection (a WebSocket) is when the upgrade ends, and
/// for one that fails when hyper gives it up. Its writer swaps hyper's bare answer to an
/// unparsable head for a problem ([`crate::bare_answers`]).
struct Slotted {
    tcp: TcpStream,
    _slot: OwnedSemaphorePermit,
    _address_slot: Option<AddressSlot>,
    /// The problem that replaces hyper's bare answer, and how much of it is written: it goes
    /// out before anything else is written, flushed or shut down.
    rewrite: Option<(Vec<u8>, usize)>,
}

impl Slotted {
    fn new(
        tcp: TcpStream,
        slot: OwnedSemaphorePermit,
        address_slot: Option<AddressSlot>,
    ) -> Slotted {
        Slotted {
            tcp,
            _slot: slot,
            _address_slot: address_slot,
            rewrite: None,
        }
    }

    /// Writes what is left of the rewritten answer.
    fn poll_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((bytes, written)) = &mut self.rewrite {
            if *written == bytes.len() {
                self.rewrite = None;
                break;
            }
            match std::pin::Pin::new(&mut self.tcp).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `head` in place of hyper's bare answer when it is one: `Some(its length)`.
    fn take_bare_answer(&mut self, cx: &mut Context<'_>, head: &[u8]) -> Option<usize> {
        let status = crate::bare_answers::status_of(head)?;
        self.rewrite = Some((crate::bare_answers::problem_response(status), 0));
        // Whatever the socket does not take now goes out on the flush hyper makes next.
        let _ = self.poll_rewrite(cx);
        Some(head.len())
    }
}

impl AsyncRead for Slotted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.poll_rewrite(cx))?;
        if let Some(n) = self.take_bare_answer(cx, buf) {
            return Poll::Ready(Ok(n));
        }
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.poll_rewrite(cx))?;
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(head), None) = (filled.next(), filled.next())
            && let Some(n) = self.take_bare_answer(cx, head)
        {
            return Poll::Ready(Ok(n));
        }
        std::pin::Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_rewrite(cx))?;
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_rewrite(cx))?;
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The open-file limit is raised to hold the connections when the hard limit allows.
    #[test]
    fn the_open_file_limit_makes_room_for_the_connections() {
        let soft = make_room_for(64);
        assert!(soft >= 64 + RESERVED_FDS, "{soft}");
    }

    /// The refusal is a problem, as one HTTP response.
    #[test]
    fn the_refusal_is_a_problem_response() {
        let bytes = refusal(TOO_MANY_FROM_ADDRESS);
        let text = String::from_utf8(bytes).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("content-type: application/problem+json"));
        assert!(head.contains("retry-after: 1"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["code"], "SERVICE_UNAVAILABLE");
        assert_eq!(v["status"], 503);
        assert_eq!(v["detail"], TOO_MANY_FROM_ADDRESS);
    }

    /// An address gets `max` slots, its IPv6 /64 counts as one address, a released slot is
    /// taken again, and an address whose last slot is released leaves the table.
    #[test]
    fn addresses_are_bounded_and_released() {
        let table = PerAddress::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let v6: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6_same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let a1 = table.try_acquire(a).expect("first");
        let a2 = table.try_acquire(a).expect("second");
        assert!(table.try_acquire(a).is_none(), "a third from a");
        let b1 = table.try_acquire(b).expect("another address");
        let v1 = table.try_acquire(v6).expect("v6");
        let v2 = table.try_acquire(v6_same_64).expect("v6, same /64");
        assert!(table.try_acquire(v6).is_none(), "the /64 is full");
        assert_eq!(table.open_from(v6_same_64), 2);
        assert_eq!(table.addresses(), 3);
        drop(a1);
        assert_eq!(table.open_from(a), 1);
        let a3 = table.try_acquire(a).expect("a released slot is free again");
        drop((a2, a3, b1, v1, v2));
        assert_eq!(table.addresses(), 0, "no entry without a connection");
    }
}
