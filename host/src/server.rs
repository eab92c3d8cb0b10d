//! The HTTP listeners: HTTP/1.1 with keep-alive and h2c (HTTP/2 with prior
//! knowledge) on one port, each request passed to a [`Handler`]. The public
//! listener's handler routes requests to functions ([`Functions`]); the
//! admin listener has its own ([`crate::admin`]).
//!
//! The accept loop never dies on one bad connection: an accept error (out of
//! file descriptors, say) is logged and retried after a pause. On shutdown
//! the listener is closed first, then every open connection finishes the
//! requests it has in flight (idle keep-alive connections are closed, HTTP/2
//! clients get GOAWAY) before `serve` returns.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use shoal_runtime::{GuestFailure, HandleError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::admission::Refusal;
use crate::body::{CountedBody, HostBody, InFlight};
use crate::error;
use crate::registry::Registry;
use crate::registry::entry::FunctionEntry;
use crate::request_id::{self, RequestIds};
use crate::telemetry::logs;
use crate::telemetry::metrics::{FailureKind, Metrics, RejectReason};
use crate::telemetry::record::RequestRecord;
use crate::telemetry::traces;

/// How long the accept loop waits after an accept error before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Open connections at most, by default (also bounded by the process's file
/// descriptor limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// How long a client may take to send a request's headers, by default.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head (HTTP/1.1) or header list (HTTP/2), by default.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 64 << 10;

/// The smallest header buffer hyper accepts.
pub const MIN_MAX_HEADER_SIZE: usize = 8 << 10;

/// What one listener accepts from its clients.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most; past it, new ones wait in the kernel's
    /// backlog until one closes.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers; a slower
    /// one is disconnected.
    pub header_read_timeout: Duration,
    /// The largest request head; a larger one is answered 431.
    pub max_header_size: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
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
/// requests in flight finish, for at most `drain_timeout`.
pub async fn serve<H: Handler>(
    handler: Arc<H>,
    listener: TcpListener,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_size.max(MIN_MAX_HEADER_SIZE));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, connection_slot) = tokio::select! {
            accepted = accept(&listener, &connections) => match accepted {
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
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.handle(request).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error, "connection ended with an error");
            }
            drop(connection_slot);
        });
    }

    let local = listener.local_addr().ok();
    drop(listener);
    tracing::info!(?local, "no new connections; finishing requests in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!(?local, "every connection is closed"),
        () = tokio::time::sleep(drain_timeout) => tracing::warn!(
            ?local,
            timeout_s = drain_timeout.as_secs_f64(),
            "requests still in flight after the drain timeout; stopping anyway"
        ),
    }
}

/// Waits for a connection slot, then for a connection.
async fn accept(
    listener: &TcpListener,
    connections: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, OwnedSemaphorePermit)> {
    let slot = connections
        .clone()
        .acquire_owned()
        .await
        .expect("the connection semaphore is never closed");
    let (stream, _) = listener.accept().await?;
    Ok((stream, slot))
}

/// The public listener's handler: routes each request to its function.
pub struct Functions {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    ids: RequestIds,
}

impl Functions {
    /// A handler for the functions of `registry`, counting into `metrics`.
    pub fn new(registry: Arc<Registry>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            registry,
            metrics,
            ids: RequestIds::default(),
        })
    }
}

impl Handler for Functions {
    async fn handle(self: Arc<Self>, mut request: Request<Incoming>) -> Response<HostBody> {
        let start = Instant::now();
        let id = self
            .ids
            .for_request(request.headers().get(request_id::HEADER));
        // The guest sees the id too, and can pass it on.
        request.headers_mut().insert(request_id::HEADER, id.clone());
        let id_text = id.to_str().unwrap_or_default();
        let span = logs::request_span(id_text, request.method(), request.uri().path());
        if traces::enabled() {
            traces::join_trace(&span, request.headers_mut());
        }
        let mut record = RequestRecord::new(span.clone(), start);

        let has_authority =
            request.uri().authority().is_some() || request.headers().contains_key(header::HOST);
        let routed = self.registry.route(request.uri().path());
        let mut response = match routed {
            _ if !has_authority => error::missing_host(id_text),
            None => {
                self.metrics.unrouted();
                error::not_found(request.uri().path(), id_text)
            }
            Some((route, entry)) => {
                record.routed(entry.name().as_str(), route, entry.metrics().clone());
                let entry = entry.clone();
                return self.call(entry, request, id, record).instrument(span).await;
            }
        };
        record.status(response.status().as_u16());
        if let HostBody::Full(Some(bytes)) = response.body() {
            record.sent(bytes.len() as u64);
        }
        response.headers_mut().insert(request_id::HEADER, id);
        response
    }
}

impl Functions {
    /// Runs `request` on `entry`'s function, once admitted. The record is
    /// written when the response body is done.
    async fn call(
        &self,
        entry: Arc<FunctionEntry>,
        request: Request<Incoming>,
        id: HeaderValue,
        mut record: RequestRecord,
    ) -> Response<HostBody> {
        let answer = |mut response: Response<HostBody>, mut record: RequestRecord| {
            record.status(response.status().as_u16());
            if let HostBody::Full(Some(bytes)) = response.body() {
                record.sent(bytes.len() as u64);
            }
            response
                .headers_mut()
                .insert(request_id::HEADER, id.clone());
            response
        };
        let id_text = id.to_str().unwrap_or_default();
        let name = entry.name().as_str();
        let metrics = entry.metrics();
        let max_body = entry.limits().max_body;
        if content_length(&request).is_some_and(|length| length > max_body) {
            metrics.rejected(RejectReason::BodyTooLarge);
            return answer(error::body_too_large(name, max_body, id_text), record);
        }
        let function_place = match entry.gate().admit().await {
            Ok(place) => place,
            Err(refusal) => {
                metrics.rejected(match refusal {
                    Refusal::QueueFull { .. } => RejectReason::QueueFull,
                    Refusal::QueueTimeout(_) => RejectReason::QueueTimeout,
                });
                let response = error::overloaded(&format!("function `{name}`"), refusal, id_text);
                return answer(response, record);
            }
        };
        let host_place = match self.registry.gate().admit().await {
            Ok(place) => place,
            Err(refusal) => {
                metrics.rejected(RejectReason::HostOverloaded);
                return answer(error::overloaded("the host", refusal, id_text), record);
            }
        };
        let lease = match self.registry.acquire(&entry).await {
            Ok(lease) => lease,
            Err(failure) => return answer(error::unavailable(&failure, id_text), record),
        };
        let request = request.map(|body| CountedBody::new(body, metrics.clone()));
        // The host's place counts instances: the instance holds it, to the
        // end of its work, which may outlast the response body.
        match lease.function().handle(request, id_text, host_place).await {
            Ok(response) => {
                record.status(response.status().as_u16());
                let mut response = response.map(|body| HostBody::Guest {
                    body,
                    in_flight: InFlight {
                        lease,
                        place: function_place,
                        record,
                    },
                });
                response
                    .headers_mut()
                    .insert(request_id::HEADER, id.clone());
                response
            }
            Err(failure) => {
                match &failure {
                    HandleError::Failed(GuestFailure::Overloaded(_)) => {
                        metrics.rejected(RejectReason::HostOverloaded);
                    }
                    HandleError::Failed(guest) => {
                        if let Some(kind) = FailureKind::of(guest) {
                            metrics.failed(kind);
                        }
                    }
                    HandleError::BodyTooLarge(_) => metrics.rejected(RejectReason::BodyTooLarge),
                    _ => {}
                }
                answer(error::function_failed(name, id_text, &failure), record)
            }
        }
    }
}

/// The declared length of a request's body, if it has one.
fn content_length(request: &Request<Incoming>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The line printed once the public listener accepts connections; tests and
/// tools read the address from it.
pub fn listening_line(addr: std::net::SocketAddr) -> String {
    format!("listening on http://{addr}")
}
