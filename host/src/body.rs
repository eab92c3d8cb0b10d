//! The body of every response the host sends: streamed from a guest, or a
//! short message of the host's own.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderValue;
use hyper::body::{Body, Frame, SizeHint};
use shoal_runtime::GuestBody;

use crate::admission::Admitted;
use crate::registry::entry::Lease;

/// The error a response body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body.
pub enum HostBody {
    /// Streamed from the guest as it writes. The request stays in flight
    /// (and holds its places) until the body is done; the function and the
    /// request id name the failure if the body breaks off.
    Guest {
        /// The body.
        body: GuestBody,
        /// What the request holds while it runs.
        in_flight: InFlight,
        /// The request's id.
        request_id: HeaderValue,
    },
    /// The host's own answer, sent in one piece.
    Full(Option<Bytes>),
}

/// What a request holds from admission until its response body is done.
pub struct InFlight {
    /// The warm function, counted as in flight.
    pub lease: Lease,
    /// Its places through the function's gate and the host's.
    pub _places: [Admitted; 2],
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
            Self::Guest {
                body,
                in_flight,
                request_id,
            } => Pin::new(body).poll_frame(cx).map_err(|error| {
                tracing::error!(
                    function = %in_flight.lease.entry().name(),
                    request_id = %request_id.to_str().unwrap_or_default(),
                    error = %format!("{error:#}"),
                    "the response body broke off"
                );
                error.into()
            }),
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Guest { body, .. } => body.is_end_stream(),
            Self::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Guest { body, .. } => body.size_hint(),
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
        }
    }
}
