//! The bodies the host handles: every response it sends (streamed from a
//! guest, or a short message of its own), and request bodies on their way
//! to a guest (from a client, or from a function calling this host),
//! counted.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use shoal_runtime::{BodyError, CallBody, CallError, GuestBody};

use crate::answer::Failure;
use crate::registry::entry::Lease;
use crate::telemetry::metrics::FunctionMetrics;
use crate::telemetry::record::RequestRecord;

/// The error a response body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body.
pub enum HostBody {
    /// Streamed from the guest as it writes. The request stays in flight
    /// until the body is done; its record is written then.
    Guest {
        /// The body.
        body: GuestBody,
        /// What the request holds while it runs.
        in_flight: InFlight,
    },
    /// The host's own answer, sent in one piece.
    Full(Option<Bytes>),
    /// The host's own answer, made a piece at a time as the client takes
    /// it (a long listing).
    Chunks(Box<dyn Iterator<Item = Bytes> + Send>),
}

/// What a request holds from admission until its response body is done.
pub struct InFlight {
    /// The warm function, counted as in flight.
    pub lease: Lease,
    /// Its telemetry, written when the body is done.
    pub record: RequestRecord,
}

impl HostBody {
    /// A complete body holding `text`.
    pub fn text(text: impl Into<Bytes>) -> Self {
        Self::Full(Some(text.into()))
    }
}

impl Body for HostBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Guest { body, in_flight } => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                Poll::Ready(frame.map(|frame| match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            in_flight.record.sent(data.len() as u64);
                        }
                        Ok(frame)
                    }
                    Err(error) => Err(body_broke_off(in_flight, error)),
                }))
            }
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Chunks(chunks) => Poll::Ready(chunks.next().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Guest { body, .. } => body.is_end_stream(),
            Self::Full(bytes) => bytes.is_none(),
            Self::Chunks(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Guest { body, .. } => body.size_hint(),
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Chunks(_) => SizeHint::default(),
        }
    }
}

/// Logs and counts a guest body that ended in an error.
fn body_broke_off(in_flight: &InFlight, error: BodyError) -> BoxError {
    if let BodyError::Failed(failure) = &error {
        Failure::Guest(failure).count(in_flight.lease.entry().metrics());
    }
    in_flight.record.log().in_scope(|| {
        tracing::error!(error = %format!("{error:#}"), "the response body broke off");
    });
    error.into()
}

/// A request body on its way to a guest: streamed as it arrives, or read
/// already (a structured event's data).
pub enum RequestBody {
    /// As the client sends it.
    Streamed(Incoming),
    /// As a function calling this host (`http://self`) writes it.
    Call(CallBody),
    /// Complete; taken once.
    Read(Option<Bytes>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = CallError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CallError>>> {
        match self.get_mut() {
            Self::Streamed(body) => Pin::new(body).poll_frame(cx).map_err(CallError::from),
            Self::Call(body) => Pin::new(body).poll_frame(cx),
            Self::Read(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Streamed(body) => body.is_end_stream(),
            Self::Call(body) => body.is_end_stream(),
            Self::Read(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Streamed(body) => body.size_hint(),
            Self::Call(body) => body.size_hint(),
            Self::Read(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Read(None) => SizeHint::with_exact(0),
        }
    }
}

/// A request body on its way to a guest, counted into its function's
/// metrics as it streams.
pub struct CountedBody<B> {
    inner: B,
    metrics: FunctionMetrics,
}

impl<B> CountedBody<B> {
    /// Counts `inner`'s bytes into `metrics`.
    pub fn new(inner: B, metrics: FunctionMetrics) -> Self {
        Self { inner, metrics }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            self.metrics.request_bytes(data.len() as u64);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
