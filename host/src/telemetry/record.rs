//! The telemetry of one request, filled in as the request goes and written
//! when its response is done: the span's status and duration fields, the
//! access-log line, and the function's metrics.

use std::time::Instant;

use crate::body::HostBody;
use crate::registry::entry::FunctionEntry;
use crate::router::RouteMatch;
use crate::telemetry::metrics::FunctionMetrics;

/// The target of the access log, one line per request: `--log-level
/// info,shoal::access=off` turns it off.
pub const ACCESS_LOG: &str = "shoal::access";

/// One request's record; written when dropped.
pub struct RequestRecord {
    span: tracing::Span,
    start: Instant,
    function: Option<FunctionMetrics>,
    /// `None` until an answer is chosen: a request dropped before that
    /// (its client went away) counts as cancelled.
    status: Option<u16>,
    response_bytes: u64,
}

impl RequestRecord {
    /// A record for the request of `span`, which arrived at `start`.
    pub fn new(span: tracing::Span, start: Instant) -> Self {
        Self {
            span,
            start,
            function: None,
            status: None,
            response_bytes: 0,
        }
    }

    /// The request's span.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The request was routed to `entry` (a function's revision) by
    /// `route`.
    pub fn routed(&mut self, entry: &FunctionEntry, route: RouteMatch<'_>) {
        if !self.span.is_disabled() {
            self.span
                .record("function", tracing::field::display(entry.name()));
            if let Some(revision) = entry.revision() {
                self.span
                    .record("revision", tracing::field::display(revision));
            }
            self.span.record("route", tracing::field::display(route));
        }
        self.function = Some(entry.metrics().clone());
    }

    /// The function's counters, once routed.
    pub fn metrics(&self) -> Option<&FunctionMetrics> {
        self.function.as_ref()
    }

    /// The response's status.
    pub fn status(&mut self, status: u16) {
        self.status = Some(status);
    }

    /// Records the host's own `response` (its status and its body's size)
    /// and hands it back.
    pub fn answered(&mut self, response: http::Response<HostBody>) -> http::Response<HostBody> {
        self.status(response.status().as_u16());
        if let HostBody::Full(Some(bytes)) = response.body() {
            self.sent(bytes.len() as u64);
        }
        response
    }

    /// More response body bytes were sent.
    pub fn sent(&mut self, bytes: u64) {
        self.response_bytes += bytes;
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let duration_ms = elapsed.as_secs_f64() * 1e3;
        match self.status {
            Some(status) => self.span.record("status", status),
            None => self.span.record("status", "cancelled"),
        };
        self.span.record("duration_ms", duration_ms);
        if let Some(status @ 500..) = self.status
            && super::traces::enabled()
        {
            super::traces::failed(&self.span, status);
        }
        if let Some(metrics) = &self.function {
            metrics.response(self.status, elapsed);
            metrics.response_bytes(self.response_bytes);
        }
        self.span.in_scope(|| match self.status {
            Some(status) => tracing::info!(
                target: ACCESS_LOG,
                status,
                duration_ms,
                bytes = self.response_bytes,
                "request"
            ),
            None => tracing::info!(
                target: ACCESS_LOG,
                status = "cancelled",
                duration_ms,
                bytes = self.response_bytes,
                "request"
            ),
        });
    }
}
