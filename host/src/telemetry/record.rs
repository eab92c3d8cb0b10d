//! The telemetry of one request, filled in as the request goes and written
//! when its response is done: the span's status and duration fields, the
//! access-log line, and the function's metrics.

use std::time::Instant;

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
    status: u16,
    response_bytes: u64,
}

impl RequestRecord {
    /// A record for the request of `span`, which arrived at `start`.
    pub fn new(span: tracing::Span, start: Instant) -> Self {
        Self {
            span,
            start,
            function: None,
            status: 0,
            response_bytes: 0,
        }
    }

    /// The request's span.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The request was routed to `function` by `route`.
    pub fn routed(&mut self, function: &str, route: RouteMatch<'_>, metrics: FunctionMetrics) {
        if !self.span.is_disabled() {
            self.span
                .record("function", tracing::field::display(function));
            self.span.record("route", tracing::field::display(route));
        }
        self.function = Some(metrics);
    }

    /// The function's counters, once routed.
    pub fn metrics(&self) -> Option<&FunctionMetrics> {
        self.function.as_ref()
    }

    /// The response's status.
    pub fn status(&mut self, status: u16) {
        self.status = status;
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
        self.span.record("status", self.status);
        self.span.record("duration_ms", duration_ms);
        if self.status >= 500 && super::traces::enabled() {
            super::traces::failed(&self.span, self.status);
        }
        if let Some(metrics) = &self.function {
            metrics.response(self.status, elapsed);
            metrics.response_bytes(self.response_bytes);
        }
        self.span.in_scope(|| {
            tracing::info!(
                target: ACCESS_LOG,
                status = self.status,
                duration_ms,
                bytes = self.response_bytes,
                "request"
            );
        });
    }
}
