//! The bench's WebSocket clients: raw TCP, a hand-written handshake and a frame parser that
//! only reads frame headers (server frames are unmasked), so that the clients cost little
//! next to the server they measure. Only latency-sampled clients look into trade messages
//! for the trade id.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Instant;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// What a client counted.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub messages: AtomicU64,
    /// Closed by the server (close frame or EOF) before the bench stopped.
    pub closed: AtomicBool,
    pub close_code: AtomicU64,
}

/// What a latency-sampled client needs: submit and publish times by trade id.
#[derive(Debug)]
pub struct Sampling {
    pub epoch: Instant,
    pub base_id: u64,
    pub submit_ns: Arc<Vec<AtomicI64>>,
    /// When the engine thread had handed the trade's batch to the feed (0: not yet seen).
    pub published_ns: Arc<Vec<AtomicI64>>,
    /// Submit to client, us.
    pub hist: Mutex<Histogram<u64>>,
    /// Published to client (the fan-out's part), us.
    pub fanout: Mutex<Histogram<u64>>,
}

/// One sampled trade message: microseconds since its order was submitted, and since its
/// batch reached the feed (`None` when the publish time was not noted yet).
type Sample = (u64, Option<u64>);

/// A masked client frame (the mask is fixed: the bench is not an attack surface).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n <= 0xffff {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Connects, upgrades and subscribes.
pub async fn connect(addr: std::net::SocketAddr, subscribe: &str) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let req = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    // Read the response head byte by byte: nothing after it may be consumed here.
    let mut head = Vec::with_capacity(256);
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 || head.len() > 8192 {
            return Err(io::Error::other("bad upgrade response"));
        }
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(io::Error::other(
            String::from_utf8_lossy(&head).into_owned(),
        ));
    }
    s.write_all(&client_frame(1, subscribe.as_bytes())).await?;
    Ok(s)
}

/// Where a trade message's id starts (a SIMD search: the sampled clients look into a
/// million trade messages a second, and a byte-by-byte search was most of their parsing).
static TRADE_ID: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"id\":\""));

/// What one pass over the received bytes found besides data messages.
enum Control {
    /// A ping's payload, to be answered with a pong.
    Ping(Vec<u8>),
    /// A close frame: its code (if any) and payload.
    Close(Vec<u8>),
}

/// Parses the whole frames at the start of `buf`: counts data messages, records the
/// latency of sampled trade messages into `lat`, and returns the bytes consumed and the
/// control frame that stops this pass (a close) or the last ping seen.
fn parse_frames(
    buf: &[u8],
    sampling: Option<(&Sampling, i64)>,
    lat: &mut Vec<Sample>,
    count: &mut u64,
) -> (usize, Option<Control>) {
    let mut start = 0usize;
    let mut control = None;
    loop {
        let b = &buf[start..];
        if b.len() < 2 {
            break;
        }
        let (fin, op) = (b[0] & 0x80 != 0, b[0] & 0x0f);
        let mut len = u64::from(b[1] & 0x7f);
        let mut off = 2usize;
        if len == 126 {
            if b.len() < 4 {
                break;
            }
            len = u64::from(u16::from_be_bytes([b[2], b[3]]));
            off = 4;
        } else if len == 127 {
            if b.len() < 10 {
                break;
            }
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[2..10]);
            len = u64::from_be_bytes(a);
            off = 10;
        }
        let total = off + len as usize;
        if b.len() < total {
            break;
        }
        let payload = &b[off..total];
        start += total;
        match op {
            0..=2 if fin => {
                *count += 1;
                if let Some((sm, now)) = sampling
                    && payload.starts_with(b"{\"channel\":\"trades:")
                    && let Some(pos) = TRADE_ID.find(payload)
                {
                    let id = payload[pos + 6..]
                        .iter()
                        .take_while(|c| c.is_ascii_digit())
                        .fold(0u64, |a, c| a * 10 + u64::from(c - b'0'));
                    let k = id.wrapping_sub(sm.base_id + 1) as usize;
                    if id > sm.base_id
                        && let Some(sent) = sm.submit_ns.get(k)
                    {
                        let us = |t: i64| ((now - t) / 1000).max(1) as u64;
                        let published = sm
                            .published_ns
                            .get(k)
                            .map(|p| p.load(Ordering::Relaxed))
                            .filter(|&p| p > 0);
                        lat.push((us(sent.load(Ordering::Relaxed)), published.map(us)));
                    }
                }
            }
            8 => return (start, Some(Control::Close(payload.to_vec()))),
            9 => control = Some(Control::Ping(payload.to_vec())),
            _ => {}
        }
    }
    (start, control)
}

/// Bytes read per system call: one buffer per client thread, reused by all of its
/// connections, so it stays in the cache (a buffer per connection, 1,000 of them, made the
/// clients' copies out of the kernel cost more than the server's copies into it).
const READ_BUF: usize = 256 * 1024;

thread_local! {
    static READ: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; READ_BUF]);
}

/// Reads frames until the connection ends, counting messages. A frame cut by the end of a
/// read is kept (`carry`) and completed by the next.
pub async fn read_loop(
    mut s: TcpStream,
    stats: Arc<ClientStats>,
    stop: Arc<AtomicBool>,
    sampling: Option<Arc<Sampling>>,
) {
    let mut carry: Vec<u8> = Vec::new();
    let mut lat: Vec<Sample> = Vec::new();
    loop {
        let mut count = 0u64;
        // One `poll_read` per wake-up: tokio takes a read shorter than the buffer as the
        // socket drained and waits for the next readiness, where a read until `WouldBlock`
        // spent a second system call on every wake-up. The buffer is borrowed only inside
        // the poll (another task of this thread takes it next).
        let (ended, control) = std::future::poll_fn(|cx| {
            READ.with(|cell| {
                let mut buf = cell.borrow_mut();
                if buf.len() < carry.len() + READ_BUF / 2 {
                    let n = carry.len() + READ_BUF;
                    buf.resize(n, 0);
                }
                let mut read = ReadBuf::new(&mut buf[carry.len()..]);
                match Pin::new(&mut s).poll_read(cx, &mut read) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => return Poll::Ready((true, None)),
                    Poll::Ready(Ok(())) => {}
                }
                let n = read.filled().len();
                let end = carry.len() + n;
                // The cut frame of the last read goes in front of what this one brought.
                buf[..carry.len()].copy_from_slice(&carry);
                carry.clear();
                let now_ns = sampling
                    .as_ref()
                    .map(|sm| sm.epoch.elapsed().as_nanos() as i64);
                let sm = sampling.as_deref().zip(now_ns);
                let (used, control) = parse_frames(&buf[..end], sm, &mut lat, &mut count);
                carry.extend_from_slice(&buf[used..end]);
                // A read of nothing into a non-empty buffer is the end of the stream.
                Poll::Ready((n == 0, control))
            })
        })
        .await;
        stats.messages.fetch_add(count, Ordering::Relaxed);
        if let Some(sm) = sampling.as_ref()
            && !lat.is_empty()
        {
            let (mut h, mut f) = (sm.hist.lock(), sm.fanout.lock());
            for (total, fanout) in lat.drain(..) {
                let _ = h.record(total);
                if let Some(v) = fanout {
                    let _ = f.record(v);
                }
            }
        }
        let pong = match control {
            Some(Control::Close(payload)) => {
                if payload.len() >= 2 {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    stats.close_code.store(u64::from(code), Ordering::Relaxed);
                }
                if !stop.load(Ordering::Relaxed) {
                    stats.closed.store(true, Ordering::Relaxed);
                }
                let _ = s
                    .write_all(&client_frame(8, &payload[..payload.len().min(2)]))
                    .await;
                return;
            }
            Some(Control::Ping(payload)) => Some(client_frame(10, &payload)),
            None => None,
        };
        if let Some(p) = pong
            && s.write_all(&p).await.is_err()
        {
            return;
        }
        if ended {
            break;
        }
    }
    if !stop.load(Ordering::Relaxed) {
        stats.closed.store(true, Ordering::Relaxed);
    }
}
