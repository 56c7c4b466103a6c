//! Accepted TCP connections, and how they close.
//!
//! **Lingering close.** When the server drops a connection whose peer is still sending (a
//! `/ws` frame past the hard limit, a Socket.IO packet past its limit, an HTTP body the
//! server refused before reading it), the kernel answers the unread data with a reset, and
//! a reset makes the peer discard what it had not read yet: the Close frame with 1009, the
//! 413 reply. The peer sees an abnormal closure (1006) with no reason. So a connection
//! closes the way nginx's `lingering_close` does: the server half-closes (FIN after
//! everything it wrote), then reads and discards what the peer still sends until the peer
//! closes, for at most [`LINGER_TIME`] and [`LINGER_BYTES`]. At most
//! [`MAX_LINGERING`] connections linger at once; past that a connection closes at once.
//!
//! **Complete requests, in time.** A connection must deliver its first request head (up to
//! the blank line) within [`HEAD_TIMEOUT`] of being accepted, or it is closed; and at most
//! [`MAX_PENDING`] connections may be waiting for their first head at once: past that the
//! oldest waiting one is closed, so connections that send nothing (or half a request line)
//! cannot pile up until the file descriptors run out, and a new client (`/healthz`
//! included) always gets in. Both are logged (at most every 10 s) and counted.
//!
//! Every accepted connection also gets `TCP_NODELAY`: replies and events are small frames
//! written one after another, and with Nagle's algorithm a frame written while the previous
//! one is unacknowledged waits for the peer's delayed ACK (40 ms on Linux). And a bounded
//! send buffer (`ROSTER_SEND_BUFFER_BYTES`): the kernel would otherwise grow it to
//! megabytes for a peer that stopped reading, holding thousands of events before the
//! socket's own bounded queue notices a slow reader.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// How long a closing connection's peer may keep sending before the server resets it.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// How much a closing connection's peer may still send: a frame far past any limit.
pub const LINGER_BYTES: usize = 64 * 1024 * 1024;

/// Connections lingering at once; more close at once (a flood of closing connections
/// must not hold file descriptors for seconds each).
pub const MAX_LINGERING: usize = 1024;

/// Bytes read per discard: small, since every lingering connection holds one.
const DISCARD_CHUNK: usize = 4096;

/// How long a new connection may take to deliver its first request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections waiting for their first request head at once; past it the oldest is closed.
pub const MAX_PENDING: usize = 1024;

/// Connections closed for not delivering a request head in time, or to make room.
#[derive(Debug, Default)]
pub struct PendingStats {
    /// Closed at [`HEAD_TIMEOUT`].
    pub timed_out: AtomicU64,
    /// Closed to make room for a newer connection.
    pub evicted: AtomicU64,
}

/// A connection still waiting for its first request head.
#[derive(Debug, Default)]
struct Pending {
    evicted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// The connections waiting for their first head, oldest first.
#[derive(Debug, Default)]
struct PendingSet {
    queue: Mutex<VecDeque<Weak<Pending>>>,
    stats: Arc<PendingStats>,
    /// When a refusal was last logged.
    logged: Mutex<Option<std::time::Instant>>,
}

impl PendingSet {
    /// Registers a new connection, closing the oldest waiting ones past [`MAX_PENDING`].
    fn add(&self) -> Arc<Pending> {
        let pending = Arc::new(Pending::default());
        let mut queue = self.queue.lock();
        queue.retain(|weak| weak.strong_count() > 0);
        while queue.len() >= MAX_PENDING {
            if let Some(oldest) = queue.pop_front().and_then(|weak| weak.upgrade()) {
                oldest.evicted.store(true, Ordering::Relaxed);
                if let Some(waker) = oldest.waker.lock().take() {
                    waker.wake();
                }
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                self.log("closing the oldest connection that sent no request yet, to make room");
            }
        }
        queue.push_back(Arc::downgrade(&pending));
        pending
    }

    fn log(&self, what: &str) {
        let mut logged = self.logged.lock();
        if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
            *logged = Some(std::time::Instant::now());
            tracing::warn!(
                timed_out = self.stats.timed_out.load(Ordering::Relaxed),
                evicted = self.stats.evicted.load(Ordering::Relaxed),
                "{what}"
            );
        }
    }
}

/// A connection's watch for its first complete request head.
#[derive(Debug)]
struct HeadWatch {
    deadline: Pin<Box<tokio::time::Sleep>>,
    pending: Arc<Pending>,
    set: Arc<PendingSet>,
    /// How much of `\r\n\r\n` the bytes read so far end with.
    matched: usize,
}

impl HeadWatch {
    /// Scans newly read bytes; true once the head's blank line went by.
    fn saw_head(&mut self, bytes: &[u8]) -> bool {
        const END: &[u8; 4] = b"\r\n\r\n";
        for &byte in bytes {
            self.matched = if byte == END[self.matched] {
                self.matched + 1
            } else if byte == END[0] {
                1
            } else {
                0
            };
            if self.matched == END.len() {
                return true;
            }
        }
        false
    }
}

/// A listener whose connections linger on close (see the module docs).
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    lingering: Arc<Semaphore>,
    /// `SO_SNDBUF` of accepted sockets; 0: the kernel's default.
    send_buffer: usize,
    /// Connections waiting for their first request head.
    pending: Arc<PendingSet>,
}

impl Listener {
    /// Wraps a bound listener; accepted sockets get `send_buffer` bytes of kernel send
    /// buffer (0: the kernel's default); connections closed before their first request
    /// are counted in `stats`.
    pub fn new(inner: TcpListener, send_buffer: usize, stats: Arc<PendingStats>) -> Self {
        Listener {
            inner,
            lingering: Arc::new(Semaphore::new(MAX_LINGERING)),
            send_buffer,
            pending: Arc::new(PendingSet {
                stats,
                ..PendingSet::default()
            }),
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Connection, std::net::SocketAddr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set on an accepted socket");
        }
        if self.send_buffer > 0
            && let Err(error) =
                socket2::SockRef::from(&stream).set_send_buffer_size(self.send_buffer)
        {
            tracing::debug!(%error, "SO_SNDBUF not set on an accepted socket");
        }
        let connection = Connection {
            stream: Some(stream),
            lingering: Arc::clone(&self.lingering),
            head: Some(HeadWatch {
                deadline: Box::pin(tokio::time::sleep(HEAD_TIMEOUT)),
                pending: self.pending.add(),
                set: Arc::clone(&self.pending),
                matched: 0,
            }),
        };
        (connection, addr)
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// The address of a connection's peer, for handlers (`ConnectInfo<PeerAddr>`): what the
/// HTTP API's rate limit counts by in open mode.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// An accepted connection that lingers when dropped.
#[derive(Debug)]
pub struct Connection {
    /// Taken only by `Drop`.
    stream: Option<TcpStream>,
    /// Places for lingering connections, shared by the listener's connections.
    lingering: Arc<Semaphore>,
    /// Until the first request head went by.
    head: Option<HeadWatch>,
}

impl Connection {
    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(head) = &mut this.head {
            if head.pending.evicted.load(Ordering::Relaxed) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "closed to make room: no request yet",
                )));
            }
            if head.deadline.as_mut().poll(cx).is_ready() {
                head.set.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                head.set
                    .log("closing connections that sent no complete request head in time");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no complete request head in time",
                )));
            }
            *head.pending.waker.lock() = Some(cx.waker().clone());
        }
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::NotConnected)));
        };
        let filled = buf.filled().len();
        let polled = Pin::new(stream).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(head)) = (&polled, &mut this.head)
            && head.saw_head(&buf.filled()[filled..])
        {
            this.head = None;
        }
        polled
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_write(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_flush(cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(stream) => Pin::new(stream).poll_shutdown(cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(place) = Arc::clone(&self.lingering).try_acquire_owned() else {
            // Too many closing at once: this one closes now, reset and all.
            return;
        };
        runtime.spawn(async move {
            linger(stream).await;
            drop(place);
        });
    }
}

/// Half-closes `stream`, then discards what the peer still sends until it closes, within
/// [`LINGER_TIME`] and [`LINGER_BYTES`].
async fn linger(mut stream: TcpStream) {
    // FIN after everything already written: the peer reads the last frames, then EOF.
    // (Fails harmlessly when the stream was shut down already.)
    let _ = stream.shutdown().await;
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut discard = [0u8; DISCARD_CHUNK];
    let mut read = 0usize;
    while read < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut discard)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return,
            Ok(Ok(n)) => read = read.saturating_add(n),
        }
    }
}
