//! The answers users see when a request is not served as asked, and what
//! operators see with each.
//!
//! Every failure is first classified as a [`Failure`]; that one value
//! chooses the status, the metric it counts in, the log line, and the short
//! plain-text body naming what failed and the request id. The full error (a
//! trap with its wasm backtrace) goes to the log only.
//!
//! | status | when |
//! |---|---|
//! | 400 | the request has no `Host` (HTTP/1.1), or more than one, or an invalid one; at the events path, no valid CloudEvent |
//! | 404 | no route |
//! | 405 | at the events path, a method other than `POST`; with `Allow` |
//! | 413 | the request body is larger than the function's `max_body` (or a structured event larger than the host reads) |
//! | 415 | at the events path, a batch or a structured format other than JSON |
//! | 422 | at the events path, an event no trigger matches |
//! | 500 | the function trapped, hit its memory limit or the host's memory budget, or cannot be started |
//! | 502 | the function answered with an error code, not at all, or with a status outside 200-599 |
//! | 503 | overloaded: the function's (or the host's) queue is full or waited too long, or no instance is free; with `Retry-After` |
//! | 504 | the function ran past its timeout |

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use shoal_runtime::{ErrorCode, GuestFailure, HandleError};

use crate::admission::{RETRY_AFTER_SECONDS, Refusal};
use crate::body::HostBody;
use crate::events::{self, cloudevent::EventError};
use crate::registry::entry::FunctionError;
use crate::telemetry::metrics::{
    EventRefusal, FailureKind, FunctionMetrics, Metrics, RejectReason,
};

/// Why a request was not served as asked.
#[derive(Debug)]
pub enum Failure<'a> {
    /// The request's `Host` is missing (HTTP/1.1), repeated or invalid.
    BadHost(&'static str),
    /// No route matches the path.
    NoRoute(&'a str),
    /// The request body is larger than the function accepts (bytes).
    BodyTooLarge(u64),
    /// The function's gate refused the request.
    FunctionOverloaded(Refusal),
    /// The host's gate refused the request.
    HostOverloaded(Refusal),
    /// The function cannot be started.
    Unavailable(&'a FunctionError),
    /// The guest failed (trapped, hit a limit, found no free instance).
    Guest(&'a GuestFailure),
    /// The guest answered the request with an error code.
    GuestError(&'a ErrorCode),
    /// The guest returned without answering.
    NoResponse,
    /// The guest answered with a status that is not a final response.
    BadStatus(u16),
    /// The host could not hand the request to the guest (the cause).
    Setup(String),
    /// At the events path: the request holds no valid event.
    BadEvent(&'a EventError),
    /// At the events path: not a `POST`.
    EventMethod,
    /// At the events path: a structured event larger than the host reads.
    EventTooLarge(u64),
    /// At the events path: no trigger matches the event (of this type).
    NoTrigger(&'a str),
}

impl<'a> Failure<'a> {
    /// The failure a runtime error stands for.
    pub fn of(error: &'a HandleError) -> Self {
        match error {
            HandleError::Failed(failure) => Self::Guest(failure),
            HandleError::BodyTooLarge(max_body) => Self::BodyTooLarge(*max_body),
            HandleError::GuestError(code) => Self::GuestError(code),
            HandleError::NoResponse => Self::NoResponse,
            HandleError::Setup(error) => Self::Setup(format!("{error:#}")),
        }
    }

    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadHost(_) => StatusCode::BAD_REQUEST,
            Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::FunctionOverloaded(_) | Self::HostOverloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Guest(GuestFailure::Overloaded(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Guest(GuestFailure::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            Self::Guest(_) | Self::Unavailable(_) | Self::Setup(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::GuestError(_) | Self::NoResponse | Self::BadStatus(_) => StatusCode::BAD_GATEWAY,
            Self::BadEvent(error) if error.is_unsupported_format() => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::BadEvent(_) => StatusCode::BAD_REQUEST,
            Self::EventMethod => StatusCode::METHOD_NOT_ALLOWED,
            Self::EventTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoTrigger(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// Counts the failure in the host's and its function's metrics, and
    /// logs it, for the request `request_id` to `function`.
    pub fn record(
        &self,
        metrics: &Metrics,
        function: Option<(&str, &FunctionMetrics)>,
        request_id: &str,
    ) {
        match self {
            Self::NoRoute(_) => metrics.unrouted(),
            Self::BadEvent(_) => metrics.event_refused(EventRefusal::Invalid),
            Self::EventMethod => metrics.event_refused(EventRefusal::Method),
            Self::EventTooLarge(_) => metrics.event_refused(EventRefusal::TooLarge),
            Self::NoTrigger(_) => metrics.event_refused(EventRefusal::Unmatched),
            _ => {}
        }
        if let Some((_, counters)) = function {
            self.count(counters);
        }
        let name = function.map_or("", |(name, _)| name);
        match self {
            Self::BadHost(_) | Self::NoRoute(_) | Self::EventMethod => {}
            Self::BadEvent(error) => tracing::warn!(
                request_id = %request_id, %error, "refused an invalid event"
            ),
            Self::EventTooLarge(max) => tracing::warn!(
                request_id = %request_id, max, "refused a structured event too large to read"
            ),
            Self::NoTrigger(ty) => tracing::warn!(
                request_id = %request_id, event_type = %ty,
                "refused an event that no function's trigger matches"
            ),
            Self::BodyTooLarge(max_body) => tracing::warn!(
                function = %name, request_id = %request_id, max_body,
                "request body too large"
            ),
            Self::FunctionOverloaded(refusal) | Self::HostOverloaded(refusal) => tracing::warn!(
                function = %name, request_id = %request_id, ?refusal,
                host = matches!(self, Self::HostOverloaded(_)),
                "request refused: overloaded"
            ),
            Self::Unavailable(error) => tracing::error!(
                function = %error.function, request_id = %request_id, error = %error.error,
                "cannot start the function"
            ),
            Self::Guest(failure) => tracing::error!(
                function = %name, request_id = %request_id, error = %failure,
                "the function failed"
            ),
            Self::GuestError(code) => tracing::warn!(
                function = %name, request_id = %request_id, error_code = ?code,
                "the function returned an error code"
            ),
            Self::NoResponse => tracing::warn!(
                function = %name, request_id = %request_id,
                "the function returned without a response"
            ),
            Self::BadStatus(status) => tracing::warn!(
                function = %name, request_id = %request_id, status,
                "the function answered with a status that is not a final response"
            ),
            Self::Setup(error) => tracing::error!(
                function = %name, request_id = %request_id, %error,
                "cannot start the function"
            ),
        }
    }

    /// Counts the failure in its function's metrics.
    pub fn count(&self, counters: &FunctionMetrics) {
        match self.outcome() {
            Some(Outcome::Rejected(reason)) => counters.rejected(reason),
            Some(Outcome::Failed(kind)) => counters.failed(kind),
            None => {}
        }
    }

    /// What the failure counts as in a function's metrics.
    fn outcome(&self) -> Option<Outcome> {
        Some(match self {
            Self::BodyTooLarge(_) => Outcome::Rejected(RejectReason::BodyTooLarge),
            Self::FunctionOverloaded(Refusal::QueueFull { .. }) => {
                Outcome::Rejected(RejectReason::QueueFull)
            }
            Self::FunctionOverloaded(Refusal::QueueTimeout(_)) => {
                Outcome::Rejected(RejectReason::QueueTimeout)
            }
            Self::HostOverloaded(_) | Self::Guest(GuestFailure::Overloaded(_)) => {
                Outcome::Rejected(RejectReason::HostOverloaded)
            }
            Self::Guest(GuestFailure::Trap(_)) => Outcome::Failed(FailureKind::Trap),
            Self::Guest(GuestFailure::Timeout(_)) => Outcome::Failed(FailureKind::Timeout),
            Self::Guest(GuestFailure::MemoryLimit { .. }) => {
                Outcome::Failed(FailureKind::MemoryLimit)
            }
            Self::Guest(GuestFailure::MemoryBudget { .. }) => {
                Outcome::Failed(FailureKind::MemoryBudget)
            }
            Self::BadHost(_)
            | Self::NoRoute(_)
            | Self::Unavailable(_)
            | Self::GuestError(_)
            | Self::NoResponse
            | Self::BadStatus(_)
            | Self::Setup(_)
            | Self::BadEvent(_)
            | Self::EventMethod
            | Self::EventTooLarge(_)
            | Self::NoTrigger(_) => return None,
        })
    }

    /// The body's message, for a request to `function`.
    fn message(&self, function: &str) -> String {
        match self {
            Self::BadHost(why) => (*why).to_owned(),
            Self::NoRoute(path) => format!("no function is routed at {path}"),
            Self::BodyTooLarge(max_body) => format!(
                "the request body is larger than function `{function}` accepts ({})",
                human_size(*max_body)
            ),
            Self::FunctionOverloaded(refusal) => {
                overloaded(&format!("function `{function}`"), *refusal)
            }
            Self::HostOverloaded(refusal) => overloaded("the host", *refusal),
            Self::Unavailable(error) => format!(
                "function `{}` cannot be started; the host log has the details",
                error.function
            ),
            Self::Guest(failure) => match failure {
                GuestFailure::Trap(_) => {
                    let reason = failure
                        .trap_code()
                        .map(|code| format!(" ({code})"))
                        .unwrap_or_default();
                    format!("function `{function}` trapped{reason}; the host log has the details")
                }
                GuestFailure::MemoryLimit { limit, .. } => format!(
                    "function `{function}` hit its memory limit ({})",
                    human_size(*limit)
                ),
                GuestFailure::MemoryBudget { budget, .. } => format!(
                    "function `{function}` could not get more memory: the host's memory budget \
                     ({}) is in use by other instances",
                    human_size(*budget)
                ),
                GuestFailure::Timeout(timeout) => format!(
                    "function `{function}` did not finish within its timeout ({}) and was stopped",
                    human_duration(*timeout)
                ),
                GuestFailure::Overloaded(_) => {
                    format!("the host has no free instance for function `{function}`")
                }
            },
            Self::GuestError(code) => {
                format!("function `{function}` returned an error instead of a response: {code:?}")
            }
            Self::NoResponse => {
                format!("function `{function}` returned without sending a response")
            }
            Self::BadStatus(status) => format!(
                "function `{function}` answered with status {status}, which is not a final response"
            ),
            Self::Setup(_) => format!("the host could not start function `{function}`"),
            Self::BadEvent(error) => error.to_string(),
            Self::EventMethod => "events are delivered by POST".to_owned(),
            Self::EventTooLarge(max) => format!(
                "the structured event is larger than the host reads ({}); send large data in binary mode",
                human_size(*max)
            ),
            Self::NoTrigger(ty) => {
                format!("no function takes this event (type `{ty}`): no trigger matches it")
            }
        }
    }

    /// Records the failure (see [`Failure::record`]) and builds its answer.
    pub fn answer(
        &self,
        metrics: &Metrics,
        function: Option<(&str, &FunctionMetrics)>,
        request_id: &str,
    ) -> Response<HostBody> {
        self.record(metrics, function, request_id);
        let status = self.status();
        let message = self.message(function.map_or("", |(name, _)| name));
        let reason = status.canonical_reason().unwrap_or("");
        let body = format!(
            "{} {reason}: {message} (request id {request_id})\n",
            status.as_u16()
        );
        let mut response = Response::new(HostBody::text(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        if let Self::EventMethod = self {
            headers.insert(header::ALLOW, events::allow());
        }
        response
    }
}

/// What a failure counts as in its function's metrics.
enum Outcome {
    Rejected(RejectReason),
    Failed(FailureKind),
}

fn overloaded(who: &str, refusal: Refusal) -> String {
    match refusal {
        Refusal::QueueFull {
            max_concurrency,
            max_queue,
        } => format!(
            "{who} is overloaded: {max_concurrency} requests are running and {max_queue} waiting"
        ),
        Refusal::QueueTimeout(waited) => format!(
            "{who} is overloaded: no place freed up within {}",
            human_duration(waited)
        ),
    }
}

fn human_duration(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

/// `1 KiB`, `32 MiB`, `1.5 GiB`: sizes as the manifest writes them.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{} {name}", bytes / unit)
            } else {
                format!("{:.1} {name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_the_manifest() {
        assert_eq!(human_size(1024), "1 KiB");
        assert_eq!(human_size(32 << 20), "32 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(100), "100 bytes");
    }

    #[test]
    fn each_failure_chooses_its_status_and_its_metric_together() {
        let full = Refusal::QueueFull {
            max_concurrency: 1,
            max_queue: 1,
        };
        let cases: [(Failure<'_>, u16, Option<&str>); 6] = [
            (Failure::NoRoute("/x"), 404, None),
            (Failure::BodyTooLarge(1), 413, Some("body_too_large")),
            (Failure::FunctionOverloaded(full), 503, Some("queue_full")),
            (Failure::HostOverloaded(full), 503, Some("host_overloaded")),
            (Failure::BadStatus(101), 502, None),
            (Failure::NoResponse, 502, None),
        ];
        for (failure, status, reason) in cases {
            assert_eq!(failure.status().as_u16(), status, "{failure:?}");
            let counted = match failure.outcome() {
                Some(Outcome::Rejected(reason)) => Some(reason.label()),
                Some(Outcome::Failed(_)) => Some("failed"),
                None => None,
            };
            assert_eq!(counted, reason, "{failure:?}");
        }
        let response = Failure::FunctionOverloaded(full).answer(
            &Metrics::new(),
            Some(("f", &Metrics::new().function("f", ""))),
            "id-1",
        );
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
