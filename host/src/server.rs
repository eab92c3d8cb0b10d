//! The HTTP listeners: HTTP/1.1 with keep-alive and h2c (HTTP/2 with prior
//! knowledge) on one port, each request passed to a [`Handler`]. The public
//! listener's handler routes requests to functions
//! ([`crate::dispatch::Functions`]); the admin listener has its own
//! ([`crate::admin`]).
//!
//! # The life of a connection
//!
//! Open connections are bounded (`max_connections`), so each must keep
//! earning its place; with `T` the header read timeout and `S` the send
//! timeout:
//!
//! ```text
//!  accepted ──first request within T──▶ serving ◀──▶ idle ──T without a request──▶ closed
//!     │                                    │
//!     │                                    ├──(HTTP/2) a PING unanswered for T──▶ closed
//!     └──nothing, or half a head, for T────┴──a response left unread for S──▶ closed
//! ```
//!
//! - Before its first request a connection has only the timer: one that
//!   sends nothing, part of a request line, or an HTTP/2 preface and then
//!   nothing, is closed when `T` has passed.
//! - A connection with no request in flight for `T` is closed (HTTP/1.1:
//!   hyper's header timer between requests; HTTP/2: GOAWAY).
//! - HTTP/2 connections are PINGed every `T`; one whose peer does not answer
//!   within `T` is closed, so a peer gone silent with streams open cannot
//!   hold its place either.
//! - A client that takes nothing more of a response for `S` (its socket
//!   stays full) is closed within `2S`: the response is dropped, and with
//!   it the guest and the places it held. A slow reader that keeps taking
//!   bytes is served to the end.
//! - On shutdown the listener closes first; every connection is asked to
//!   close (HTTP/1.1 once its request in flight is answered, HTTP/2 with
//!   GOAWAY), and one with nothing in flight is closed `T` later whatever
//!   its peer does. Requests in flight get until the drain timeout.
//!
//! A watchdog task per connection enforces this. It reads the connection's
//! activity (requests in flight, when it last went idle, since when a write
//! has waited) only when a deadline passes, so requests pay one atomic
//! increment and decrement, and a write that must wait one more store.
//!
//! A connection's answers go out through its [`Outbox`]: small ones are
//! held until the worker thread has answered every request it has ready,
//! and sent together.
//!
//! The accept loop never dies on one bad connection: an accept error (out of
//! file descriptors, say) is logged and retried after a pause.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::body::{BoxError, HostBody};
use crate::outbox::Outbox;
use crate::telemetry::record::AnswersFirst;

/// How long the accept loop waits after an accept error before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Open connections at most on the public port, by default (also bounded
/// by the process's file descriptor limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Open connections at most on the admin port: operators and scrapers, never
/// enough to take descriptors from the public port.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send a request's headers, and how long a
/// connection may stay idle, by default.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write may wait for a client that takes nothing, by default.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head (HTTP/1.1) or header list (HTTP/2), by default.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 64 << 10;

/// The smallest header buffer hyper accepts.
pub const MIN_MAX_HEADER_SIZE: usize = 8 << 10;

/// The largest request head accepted: hyper reads a head into one buffer,
/// and HTTP/2 header lists are counted in a `u32`; a megabyte is already
/// far past what proxies pass on.
pub const MAX_MAX_HEADER_SIZE: usize = 1 << 20;

/// What one listener accepts from its clients.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most; past it, new ones wait in the kernel's
    /// backlog until one closes.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, and how
    /// long a connection may stay without a request in flight.
    pub header_read_timeout: Duration,
    /// How long a response may wait for a client that reads none of it
    /// before the connection is closed.
    pub send_timeout: Duration,
    /// The largest request head; a larger one is answered 431.
    pub max_header_size: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
        }
    }
}

/// Answers the requests of one listener.
pub trait Handler: Send + Sync + 'static {
    /// The response to `request`.
    fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<HostBody>> + Send;
}

/// Serves `listener` with `handler` until `shutdown` completes, then drains:
/// requests in flight finish, until `give_up` completes (the drain timeout,
/// or a second signal).
pub async fn serve<H: Handler>(
    handler: Arc<H>,
    listener: TcpListener,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    give_up: impl Future<Output = ()>,
) {
    let timeout = limits.header_read_timeout;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(limits.max_header_size.max(MIN_MAX_HEADER_SIZE));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeout)
        .keep_alive_timeout(timeout)
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, slot) = tokio::select! {
            accepted = accept(&listener, &slots) => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Guests that write small chunks must not wait on Nagle.
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            handler.clone(),
            builder.clone(),
            limits,
            closing.clone(),
            slot,
        ));
    }

    let local = listener.local_addr().ok();
    drop(listener);
    tracing::info!(?local, "no new connections; finishing requests in flight");
    let _ = closing_tx.send(true);
    let all_closed = slots.acquire_many(u32::try_from(limits.max_connections).unwrap_or(u32::MAX));
    tokio::select! {
        _ = all_closed => tracing::info!(?local, "every connection is closed"),
        () = give_up => tracing::warn!(?local, "requests still in flight; stopping anyway"),
    }
}

/// Waits for a connection slot, then for a connection.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, OwnedSemaphorePermit)> {
    let slot = slots
        .clone()
        .acquire_owned()
        .await
        .expect("the connection semaphore is never closed");
    let (stream, _) = listener.accept().await?;
    Ok((stream, slot))
}

/// Serves one connection under its watchdog (see the module's doc) until it
/// ends; its slot is given back then.
async fn connection<H: Handler>(
    stream: TcpStream,
    handler: Arc<H>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    mut closing: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let timeout = limits.header_read_timeout;
    let send_timeout = limits.send_timeout;
    let activity = Arc::new(Activity::new());
    // RFC 9112 (3.3): a request without an authority (HTTP/1.0 needs no
    // `Host`) is for the server's own address.
    let own_authority = stream
        .local_addr()
        .ok()
        .and_then(|addr| http::HeaderValue::try_from(addr.to_string()).ok());
    let service = service_fn({
        let activity = activity.clone();
        move |mut request: Request<Incoming>| {
            if request.version() < http::Version::HTTP_11
                && request.uri().authority().is_none()
                && !request.headers().contains_key(http::header::HOST)
                && let Some(authority) = &own_authority
            {
                request
                    .headers_mut()
                    .insert(http::header::HOST, authority.clone());
            }
            let handler = handler.clone();
            let request_in_flight = activity.begin();
            async move {
                let response = handler.handle(request).await;
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _in_flight: request_in_flight,
                }))
            }
        }
    });
    let (read, write) = stream.into_split();
    let stream = Watched {
        read,
        outbox: Outbox::new(write),
        activity: activity.clone(),
    };
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut answers_first = AnswersFirst::default();
    let mut asked_to_close = false;
    // A write that begins to wait is seen at the next look, so the watchdog
    // looks at least this often while the connection is open.
    let every = timeout.min(send_timeout);
    let mut deadline = activity.start + every;
    loop {
        tokio::select! {
            ended = std::future::poll_fn(|cx| answers_first.poll(connection.as_mut(), cx)) => {
                if let Err(error) = ended {
                    tracing::debug!(error, "connection ended with an error");
                }
                return;
            }
            _ = closing.changed(), if !asked_to_close => {
                connection.as_mut().graceful_shutdown();
                asked_to_close = true;
                deadline = Instant::now() + timeout;
            }
            () = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                let waiting_since = activity.write_waiting_since();
                if waiting_since.is_some_and(|since| since + send_timeout <= now) {
                    tracing::debug!("the client read nothing for {send_timeout:?}; closing");
                    return;
                }
                match activity.idle_since() {
                    // Busy: look again in a while, or when a write that
                    // waits has waited for the whole send timeout.
                    None => {
                        deadline = waiting_since.map_or(now + every, |since| since + send_timeout);
                    }
                    Some(idle_since) if idle_since + timeout > now => {
                        deadline = (idle_since + timeout).min(now + every);
                    }
                    // Idle for a whole timeout: a connection that never
                    // sent a request, or was asked to close and has not,
                    // is closed; any other is asked to close.
                    Some(_) if activity.requests() == 0 || asked_to_close => return,
                    Some(_) => {
                        connection.as_mut().graceful_shutdown();
                        asked_to_close = true;
                        deadline = now + timeout;
                    }
                }
            }
        }
    }
}

/// What the watchdog of one connection reads: requests in flight, when the
/// last of them ended, and since when a write has waited for the client.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `start` at which the connection last went idle.
    idle_since_ms: AtomicU64,
    /// One more than the milliseconds after `start` at which a write began
    /// to wait for room in the socket; 0 while writes do not wait.
    write_waiting_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            write_waiting_ms: AtomicU64::new(0),
        }
    }

    /// Counts a request in flight until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> RequestInFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        RequestInFlight(self.clone())
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Since when a write has waited for the client to read, if one does.
    fn write_waiting_since(&self) -> Option<Instant> {
        match self.write_waiting_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.start + Duration::from_millis(ms - 1)),
        }
    }

    /// Notes whether the last write waited (`Pending`) or went through.
    fn wrote<T>(&self, written: Poll<T>) -> Poll<T> {
        let waiting = self.write_waiting_ms.load(Ordering::Relaxed) != 0;
        match written {
            Poll::Pending if !waiting => {
                let ms = self.start.elapsed().as_millis() as u64;
                self.write_waiting_ms.store(ms + 1, Ordering::Relaxed);
            }
            Poll::Ready(_) if waiting => self.write_waiting_ms.store(0, Ordering::Relaxed),
            _ => {}
        }
        written
    }

    /// When the connection went idle, if it is.
    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Relaxed) == 0)
            .then(|| self.start + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed)))
    }
}

/// A request counted as in flight on its connection.
struct RequestInFlight(Arc<Activity>);

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = activity.start.elapsed().as_millis() as u64;
        activity.idle_since_ms.store(now, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's socket, telling its [`Activity`] when writes wait. Its
/// answers go through an [`Outbox`], which may hold them for a while.
struct Watched {
    read: OwnedReadHalf,
    outbox: Arc<Outbox>,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Bytes the outbox could not send wait for room before more is read.
        std::task::ready!(self.as_mut().poll_left_over(cx))?;
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl Watched {
    /// Sends what the outbox could not, telling the [`Activity`] whether
    /// it waits for the client (and nothing if there was nothing to send).
    fn poll_left_over(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.outbox.poll_left_over(cx) {
            Poll::Ready(Ok(false)) => Poll::Ready(Ok(())),
            sent => self.activity.wrote(sent).map_ok(|_| ()),
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = self.outbox.poll_write(cx, &[std::io::IoSlice::new(buf)]);
        self.activity.wrote(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = self.outbox.poll_write(cx, bufs);
        self.activity.wrote(written)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_left_over(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.outbox.poll_shutdown(cx)
    }
}

/// A response body that keeps its request counted as in flight until the
/// body is done (or dropped: the client went away).
struct Tracked {
    body: HostBody,
    _in_flight: RequestInFlight,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The line printed once the public listener accepts connections; tests and
/// tools read the address from it.
pub fn listening_line(addr: std::net::SocketAddr) -> String {
    format!("listening on http://{addr}")
}

/// Who uses `port` in a Knative pod behind Istio, if anyone does: the host
/// never listens there (Knative's runtime contract).
pub fn reserved_port(port: u16) -> Option<&'static str> {
    match port {
        8008 | 8012 | 8013 | 8022 | 8112 | 9090 | 9091 => Some("Knative's queue-proxy"),
        15000..=15090 => Some("Istio's sidecar"),
        _ => None,
    }
}
