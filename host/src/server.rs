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
use std::time::Duration;

use http::{Request, Response, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::body::HostBody;
use crate::error;
use crate::registry::Registry;
use crate::request_id::{self, RequestIds};

/// How long the accept loop waits after an accept error before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
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

/// The public listener's handler: routes each request to its function.
pub struct Functions {
    registry: Arc<Registry>,
    ids: RequestIds,
}

impl Functions {
    /// A handler for the functions of `registry`.
    pub fn new(registry: Arc<Registry>) -> Arc<Self> {
        Arc::new(Self {
            registry,
            ids: RequestIds::default(),
        })
    }
}

impl Handler for Functions {
    async fn handle(self: Arc<Self>, mut request: Request<Incoming>) -> Response<HostBody> {
        let id = self
            .ids
            .for_request(request.headers().get(request_id::HEADER));
        // The guest sees the id too, and can pass it on.
        request.headers_mut().insert(request_id::HEADER, id.clone());
        let id_text = id.to_str().unwrap_or_default();

        let has_authority =
            request.uri().authority().is_some() || request.headers().contains_key(header::HOST);
        let mut response = match self.registry.route(request.uri().path()) {
            _ if !has_authority => error::missing_host(id_text),
            None => error::not_found(request.uri().path(), id_text),
            Some(entry) => match self.registry.acquire(entry).await {
                Err(failure) => error::unavailable(&failure, id_text),
                Ok(lease) => {
                    let span = tracing::debug_span!(
                        "request",
                        function = %entry.name(),
                        request_id = id_text,
                        method = %request.method(),
                        path = request.uri().path(),
                    );
                    let handled = lease
                        .function()
                        .handle(request, id_text)
                        .instrument(span)
                        .await;
                    match handled {
                        Ok(response) => response.map(|body| HostBody::Guest {
                            body,
                            lease,
                            request_id: id.clone(),
                        }),
                        Err(failure) => {
                            error::function_failed(entry.name().as_str(), id_text, &failure)
                        }
                    }
                }
            },
        };
        response.headers_mut().insert(request_id::HEADER, id);
        response
    }
}

/// The line printed once the public listener accepts connections; tests and
/// tools read the address from it.
pub fn listening_line(addr: std::net::SocketAddr) -> String {
    format!("listening on http://{addr}")
}
