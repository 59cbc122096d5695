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
//!   request, so what it costs is bounded by [`REFUSALS_IN_FLIGHT`] and [`REFUSAL_GRACE`]
//!   (see the refusals below).
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
//! The refusals, whichever bound gave them: at most [`REFUSALS_IN_FLIGHT`] 503s are being
//! written at once, and at most [`REFUSALS_IN_FLIGHT_PER_ADDRESS`] of them to one client
//! address (grouped as the per-address bound groups them, an IPv6 client by its /64).
//! Past either, a refused connection is closed unanswered (it is still counted in
//! [`RefusalCounts`]). Each answer waits up to [`REFUSAL_GRACE`] for the client to close
//! first, so without the per-address share one address flooding past its own bound held
//! all the answers for that long, again and again, and every other refused client (one at
//! the global bound, say) was closed without its 503 and without the `Retry-After` that
//! tells it when to come back. The share is per address, not per bound, so that an address
//! refused at the global bound cannot do the same. The table of shares holds an address
//! only while it has an answer in flight, so never more than [`REFUSALS_IN_FLIGHT`]
//! entries ([`PerAddress`], the table the per-address bound uses too).
//!
//! Graceful shutdown is `axum::serve`'s: stop accepting, let each connection finish its
//! request in flight, wait for them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
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
/// Of the [`REFUSALS_IN_FLIGHT`], how many one client address may hold at once; more from it
/// are closed unanswered. Small, so that one address flooding cannot take the answers every
/// other refused client needs (256 / 8: at least 32 addresses are answered at once); not 1,
/// so that a client opening a few connections in parallel (a browser opens 6 per host)
/// still gets a 503 with `Retry-After` on each rather than bare closes it may retry at once.
pub const REFUSALS_IN_FLIGHT_PER_ADDRESS: usize = 8;
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

/// What is held per client address ([`crate::rate_limit::client_address`]): the
/// connections open ([`ConnLimits::max_connections_per_address`] each), or the refusal
/// answers in flight ([`REFUSALS_IN_FLIGHT_PER_ADDRESS`] each, [`REFUSALS_IN_FLIGHT`] in
/// all). An address is in the table only while it holds something (its entry goes when its
/// count drops to 0), and each of those holds one of a bounded number (the connections'
/// `max_connections` slots, the refusals' `max_total`), so the table never holds more
/// entries than that.
#[derive(Debug)]
pub struct PerAddress {
    max: usize,
    max_total: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl PerAddress {
    /// A table allowing `max` per address (at least 1), with no bound in all (the
    /// connections: their slots bound them).
    pub fn new(max: usize) -> Arc<PerAddress> {
        Self::with_total(max, usize::MAX)
    }

    /// A table allowing `max` per address (at least 1) and `max_total` in all.
    pub fn with_total(max: usize, max_total: usize) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            max: max.max(1),
            max_total,
            held: Mutex::new(Held::default()),
        })
    }

    /// One more for `ip`, held until the returned guard is dropped; `None` when `max_total`
    /// are held, or its address already holds `max`.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let address = crate::rate_limit::client_address(ip);
        let mut held = self.held.lock();
        if held.total >= self.max_total {
            return None;
        }
        let count = held.by_address.get(&address).copied().unwrap_or(0);
        if count >= self.max {
            return None;
        }
        held.by_address.insert(address, count + 1);
        held.total += 1;
        Some(AddressSlot {
            table: self.clone(),
            address,
        })
    }

    /// What `ip`'s address holds.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        let address = crate::rate_limit::client_address(ip);
        self.held
            .lock()
            .by_address
            .get(&address)
            .copied()
            .unwrap_or(0)
    }

    /// What is held, by every address.
    pub fn total(&self) -> usize {
        self.held.lock().total
    }

    /// Addresses holding something.
    pub fn addresses(&self) -> usize {
        self.held.lock().by_address.len()
    }
}

/// One connection or refusal answer counted against its address in a [`PerAddress`]
/// table, until dropped.
#[derive(Debug)]
pub struct AddressSlot {
    table: Arc<PerAddress>,
    address: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.table.held.lock();
        let count = held
            .by_address
            .get_mut(&self.address)
            .expect("an address with a slot out is in the table");
        assert!(*count > 0);
        *count -= 1;
        if *count == 0 {
            held.by_address.remove(&self.address);
        }
        assert!(held.total > 0);
        held.total -= 1;
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
/// answered (past [`REFUSALS_IN_FLIGHT`], or [`REFUSALS_IN_FLIGHT_PER_ADDRESS`] to its
/// address, it is closed unanswered).
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
    let refusing = PerAddress::with_total(REFUSALS_IN_FLIGHT_PER_ADDRESS, REFUSALS_IN_FLIGHT);
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
            refuse(tcp, &refusing, peer.ip(), TOO_MANY_CONNECTIONS);
            continue;
        };
        let address_slot = match &per_address {
            None => None,
            Some(table) => match table.try_acquire(peer.ip()) {
                Some(s) => Some(s),
                None => {
                    drop(slot);
                    refused.per_address.fetch_add(1, Ordering::Relaxed);
                    refuse(tcp, &refusing, peer.ip(), TOO_MANY_FROM_ADDRESS);
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

/// A connection from `ip` past a limit: the 503 problem saying `detail`, then close; or, with
/// no answer free in `refusing` (in all, or for `ip`'s address), close unanswered (see the
/// module doc).
fn refuse(mut tcp: TcpStream, refusing: &Arc<PerAddress>, ip: IpAddr, detail: &'static str) {
    let Some(answer) = refusing.try_acquire(ip) else {
        return;
    };
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
        drop(answer);
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
        assert_eq!(table.held_by(v6_same_64), 2);
        assert_eq!(table.addresses(), 3);
        drop(a1);
        assert_eq!(table.held_by(a), 1);
        let a3 = table.try_acquire(a).expect("a released slot is free again");
        drop((a2, a3, b1, v1, v2));
        assert_eq!(table.addresses(), 0, "no entry without a connection");
    }

    /// The refusal answers are bounded in all and per address, an IPv6 /64 counting as one
    /// address; an answer done frees its place, and an address with none in flight leaves
    /// the table.
    #[test]
    fn refusal_answers_are_bounded_in_all_and_per_address() {
        let table = PerAddress::with_total(2, 4);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let v6: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6_same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let a1 = table.try_acquire(a).expect("first to a");
        let a2 = table.try_acquire(a).expect("second to a");
        assert!(
            table.try_acquire(a).is_none(),
            "a third to a: past its share"
        );
        assert_eq!(table.held_by(a), 2);
        let v1 = table.try_acquire(v6).expect("v6");
        assert!(
            table.try_acquire(v6_same_64).is_some(),
            "the /64's second (dropped at once)"
        );
        let v2 = table
            .try_acquire(v6_same_64)
            .expect("the /64's second again");
        assert!(table.try_acquire(v6).is_none(), "the /64 has its share");
        assert_eq!(table.total(), 4);
        assert!(table.try_acquire(b).is_none(), "all four in flight");
        drop(v1);
        let b1 = table.try_acquire(b).expect("b once one is done");
        assert!(table.try_acquire(c).is_none(), "all four in flight again");
        assert_eq!(table.addresses(), 3);
        drop(a1);
        let a3 = table.try_acquire(a).expect("a's done answer is free again");
        drop((a2, a3, v2, b1));
        assert_eq!(table.total(), 0);
        assert_eq!(table.addresses(), 0, "no entry without an answer in flight");
    }

    /// A connection to `server` from the loopback address `from` (every 127/8 address is
    /// the machine's own, so each is another client address to the server).
    async fn connect_from(server: std::net::SocketAddr, from: [u8; 4]) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind((std::net::Ipv4Addr::from(from), 0).into())
            .expect("bind the client address");
        tokio::time::timeout(Duration::from_secs(5), socket.connect(server))
            .await
            .expect("connected in time")
            .expect("connect")
    }

    /// What the server sent on `tcp` before closing it, within 5 s (a reset: nothing).
    async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(tcp, &mut answer),
        )
        .await
        .expect("the refused connection is closed in time");
        if read.is_err() {
            answer.clear();
        }
        answer
    }

    /// Floods `serve` (with `limits`) from 127.0.0.1 past a bound while it holds one
    /// connection from there, then asks once from 127.0.0.2 past the same bound. Returns
    /// the flood's answered and unanswered counts, whether 127.0.0.2 was answered, and the
    /// refusals counted; `None` when the run took longer than [`REFUSAL_GRACE`] (an answer
    /// may have ended and freed its place: the counts say nothing).
    async fn flood_one_address(
        limits: ConnLimits,
        flood: usize,
    ) -> Option<(usize, usize, bool, Arc<RefusalCounts>)> {
        const A: [u8; 4] = [127, 0, 0, 1];
        const B: [u8; 4] = [127, 0, 0, 2];
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let refused = Arc::new(RefusalCounts::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, limits, refused.clone(), async {
            let _ = stop_rx.await;
        }));
        // The connection that takes the slot; the accept loop takes the flood after it.
        let held = connect_from(addr, A).await;
        let started = std::time::Instant::now();
        // All of them open before any is read: the answers given stay in flight (the
        // server waits for the client's close, up to the grace).
        let mut conns = Vec::with_capacity(flood);
        for _ in 0..flood {
            conns.push(connect_from(addr, A).await);
        }
        let (mut answered, mut unanswered) = (0, 0);
        for tcp in &mut conns {
            let answer = read_to_close(tcp).await;
            if answer.is_empty() {
                unanswered += 1;
            } else {
                let text = String::from_utf8_lossy(&answer);
                assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
                answered += 1;
            }
        }
        // Another address refused at the same bound while 127.0.0.1's answers are out.
        let held_b = if limits.max_connections_per_address < limits.max_connections {
            Some(connect_from(addr, B).await)
        } else {
            None
        };
        let mut other = connect_from(addr, B).await;
        let other_answer = read_to_close(&mut other).await;
        let in_time = started.elapsed() < REFUSAL_GRACE;
        drop((held, held_b, other, conns));
        stop_tx.send(()).expect("the server is up");
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops in time")
            .expect("the server task");
        let other_answered = String::from_utf8_lossy(&other_answer).starts_with("HTTP/1.1 503 ");
        in_time.then_some((answered, unanswered, other_answered, refused))
    }

    /// One address flooding past a bound gets at most [`REFUSALS_IN_FLIGHT_PER_ADDRESS`]
    /// 503s in flight, the rest of its connections closed unanswered (and counted), and
    /// another address refused meanwhile still gets its 503: at the per-address bound and
    /// at the global one. Before the share, the flood took an answer for each of its
    /// connections up to all [`REFUSALS_IN_FLIGHT`], and every other refused client was
    /// closed unanswered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_address_holds_at_most_its_share_of_the_refusal_answers() {
        let flood = 3 * REFUSALS_IN_FLIGHT_PER_ADDRESS;
        for (bound, limits) in [
            (
                "per address",
                ConnLimits {
                    max_connections: 4,
                    max_connections_per_address: 1,
                    header_timeout: Duration::from_secs(10),
                },
            ),
            (
                "global",
                ConnLimits {
                    max_connections: 1,
                    max_connections_per_address: 1,
                    header_timeout: Duration::from_secs(10),
                },
            ),
        ] {
            // A run slower than the grace (a loaded machine) proves nothing: run again.
            let mut outcome = None;
            for _ in 0..5 {
                outcome = flood_one_address(limits, flood).await;
                if outcome.is_some() {
                    break;
                }
            }
            let (answered, unanswered, other_answered, refused) =
                outcome.unwrap_or_else(|| panic!("{bound}: no run within {REFUSAL_GRACE:?}"));
            assert_eq!(answered, REFUSALS_IN_FLIGHT_PER_ADDRESS, "{bound}");
            assert_eq!(
                unanswered,
                flood - REFUSALS_IN_FLIGHT_PER_ADDRESS,
                "{bound}"
            );
            assert!(other_answered, "{bound}: the other address got no 503");
            let counted = refused.global.load(Ordering::Relaxed)
                + refused.per_address.load(Ordering::Relaxed);
            assert_eq!(counted, flood as u64 + 1, "{bound}: every refusal counted");
        }
    }
}
