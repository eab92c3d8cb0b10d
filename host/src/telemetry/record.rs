//! The telemetry of one request, filled in as the request goes and written
//! when its response is done: its log's status and duration fields, the
//! access-log line, and the function's metrics.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::body::HostBody;
use crate::registry::entry::FunctionEntry;
use crate::router::RouteMatch;
use crate::telemetry::metrics::FunctionMetrics;
use crate::telemetry::request_log::RequestLog;

/// The target of the access log, one line per request: `--log-level
/// info,shoal::access=off` turns it off.
pub const ACCESS_LOG: &str = "shoal::access";

/// One request's record; written when dropped.
pub struct RequestRecord {
    log: RequestLog,
    start: Instant,
    function: Option<FunctionMetrics>,
    /// `None` until an answer is chosen: a request dropped before that
    /// (its client went away) counts as cancelled.
    status: Option<u16>,
    response_bytes: u64,
}

impl RequestRecord {
    /// A record for the request of `log`, which arrived at `start`.
    pub fn new(log: RequestLog, start: Instant) -> Self {
        Self {
            log,
            start,
            function: None,
            status: None,
            response_bytes: 0,
        }
    }

    /// The request's log.
    pub fn log(&self) -> &RequestLog {
        &self.log
    }

    /// The request was routed to `entry` (a function's revision) by
    /// `route`.
    pub fn routed(&mut self, entry: &FunctionEntry, route: RouteMatch<'_>) {
        self.log.routed(entry, route);
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
    /// Counts the response in the function's metrics at once; its log's
    /// last fields and its access line are written after the answer (see
    /// [`AnswersFirst`]).
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        if let Some(metrics) = &self.function {
            metrics.response(self.status, elapsed);
            metrics.response_bytes(self.response_bytes);
        }
        AccessLine {
            log: self.log.clone(),
            status: self.status,
            duration_ms: elapsed.as_secs_f64() * 1e3,
            bytes: self.response_bytes,
        }
        .write_after_the_answer();
    }
}

/// What is left of a request's record once its metrics are counted: the
/// log's last fields, its trace if it failed, and its access line.
struct AccessLine {
    log: RequestLog,
    status: Option<u16>,
    duration_ms: f64,
    bytes: u64,
}

impl AccessLine {
    fn write(self) {
        let Self {
            log,
            status,
            duration_ms,
            bytes,
        } = self;
        log.ended(status, duration_ms);
        if let Some(status @ 500..) = status
            && let Some(span) = log.span()
        {
            super::traces::failed(span, status);
        }
        log.in_scope(|| match status {
            Some(status) => tracing::info!(
                target: ACCESS_LOG,
                status,
                duration_ms,
                bytes,
                "request"
            ),
            None => tracing::info!(
                target: ACCESS_LOG,
                status = "cancelled",
                duration_ms,
                bytes,
                "request"
            ),
        });
    }

    /// Keeps the line until the poll of [`AnswersFirst`] under way on this
    /// thread is over, or writes it now if none is.
    fn write_after_the_answer(self) {
        let now = PUT_OFF.with(|cell| match cell.borrow_mut().as_mut() {
            Some(lines) => {
                lines.push(self);
                None
            }
            None => Some(self),
        });
        if let Some(line) = now {
            line.write();
        }
    }
}

/// Writes the access lines kept until this thread's held answers were sent.
pub fn write_held_lines() {
    let mut lines = HELD_LINES.take();
    for line in lines.drain(..) {
        line.write();
    }
    HELD_LINES.with_borrow_mut(|now| {
        if now.is_empty() {
            *now = lines;
        }
    });
}

thread_local! {
    /// Access lines whose answers this thread holds (see [`crate::outbox`]).
    static HELD_LINES: RefCell<Vec<AccessLine>> = const { RefCell::new(Vec::new()) };
    /// The access lines of requests finished during the poll of
    /// [`AnswersFirst`] under way on this thread, if one is.
    static PUT_OFF: RefCell<Option<Vec<AccessLine>>> = const { RefCell::new(None) };
}

/// Writes the access lines of the requests a connection finishes after it
/// has sent their answers.
///
/// hyper lets go of an HTTP/1.1 response body (and so of the request's
/// record) as soon as it has taken the last frame, before it writes the
/// response out, in the same poll of the connection. A connection task polls
/// its connection through this: the metrics are counted and the places given
/// back at once, as before, so whoever reads the answer finds them settled;
/// only the log line (formatting it, handing it to the writer) waits until
/// the poll is over and the answer is on its way. One per connection task;
/// its buffer is reused.
#[derive(Default)]
pub struct AnswersFirst(Vec<AccessLine>);

impl AnswersFirst {
    /// Polls `connection`, then writes the lines of the requests it finished.
    pub fn poll<F: Future>(
        &mut self,
        connection: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        /// Takes the lines back and writes them, even if the poll panics.
        struct Scope<'a>(&'a mut Vec<AccessLine>);
        impl Drop for Scope<'_> {
            fn drop(&mut self) {
                if let Some(lines) = PUT_OFF.with(|cell| cell.borrow_mut().take()) {
                    *self.0 = lines;
                }
                if self.0.is_empty() {
                    return;
                }
                // Answers this thread holds are sent first.
                if crate::outbox::holds_answers() {
                    HELD_LINES.with_borrow_mut(|held| held.append(self.0));
                    return;
                }
                for line in self.0.drain(..) {
                    line.write();
                }
            }
        }
        PUT_OFF.with(|cell| *cell.borrow_mut() = Some(std::mem::take(&mut self.0)));
        let _scope = Scope(&mut self.0);
        connection.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::telemetry::captured::Captured;
    use crate::telemetry::metrics::{Gauges, Metrics};

    #[test]
    fn a_request_finished_while_its_connection_is_polled_is_logged_after_the_poll_and_counted_in_it()
     {
        let lines = Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(lines.writer());
        let _subscriber =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        let metrics = Metrics::new();
        let counted = || {
            metrics
                .render(&Gauges::default())
                .contains("shoal_host_request_duration_seconds_count 1")
        };
        let record = || {
            let log = RequestLog::new(
                &http::HeaderValue::from_static("r1"),
                &http::Method::GET,
                &http::Uri::from_static("/"),
                None,
            );
            let mut record = RequestRecord::new(log, Instant::now());
            record.function = Some(metrics.function("f", "1"));
            record.status(200);
            record
        };

        let mut during = None;
        let connection = std::future::poll_fn(|_| {
            drop(record());
            during = Some((counted(), lines.text()));
            Poll::Ready(())
        });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut answers_first = AnswersFirst::default();
        assert!(
            answers_first
                .poll(std::pin::pin!(connection), &mut cx)
                .is_ready()
        );
        let (counted_during, logged_during) = during.unwrap();
        assert!(counted_during, "the metrics are counted at once");
        assert_eq!(logged_during, "", "no line while the connection is polled");
        let logged = lines.text();
        assert_eq!(logged.lines().count(), 1, "{logged}");
        assert!(
            logged.contains("shoal::access: request status=200"),
            "{logged}"
        );

        // Outside a connection's poll (an HTTP/2 stream's own task), at once.
        drop(record());
        assert_eq!(lines.text().lines().count(), 2, "{}", lines.text());
    }
}
