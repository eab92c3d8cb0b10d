//! The answers users see when a request cannot be served, and the log line
//! that goes with each.
//!
//! Every answer is short plain text naming what failed and the request id;
//! the full error (a trap with its wasm backtrace) goes to the log only.
//!
//! | status | when |
//! |---|---|
//! | 400 | an HTTP/1.1 request without `Host` |
//! | 404 | no route |
//! | 413 | the request body is larger than the function's `max_body` |
//! | 500 | the function trapped, hit its memory limit, or cannot be started |
//! | 502 | the function answered with an error code, or not at all |
//! | 503 | overloaded: the function's (or the host's) queue is full or waited too long; with `Retry-After` |
//! | 504 | the function ran past its timeout |

use http::{HeaderValue, Response, StatusCode, header};
use shoal_runtime::{GuestFailure, HandleError};

use crate::admission::{RETRY_AFTER_SECONDS, Refusal};
use crate::body::HostBody;
use crate::registry::entry::FunctionError;

/// No route matches the path.
pub fn not_found(path: &str, request_id: &str) -> Response<HostBody> {
    answer(
        StatusCode::NOT_FOUND,
        format!("no function is routed at {path}"),
        request_id,
    )
}

/// An HTTP/1.1 request without a `Host` header (RFC 9112 requires a 400).
pub fn missing_host(request_id: &str) -> Response<HostBody> {
    answer(
        StatusCode::BAD_REQUEST,
        "the request has no Host header".to_owned(),
        request_id,
    )
}

/// The request body is larger than the function accepts.
pub fn body_too_large(function: &str, max_body: u64, request_id: &str) -> Response<HostBody> {
    tracing::warn!(function = %function, request_id = %request_id, max_body, "request body too large");
    answer(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is larger than function `{function}` accepts ({})",
            human_size(max_body)
        ),
        request_id,
    )
}

/// The function (or the host) is at its concurrency limit and its queue is
/// full or was waited on too long.
pub fn overloaded(who: &str, refusal: Refusal, request_id: &str) -> Response<HostBody> {
    tracing::warn!(who = %who, request_id = %request_id, ?refusal, "request refused: overloaded");
    let why = match refusal {
        Refusal::QueueFull {
            max_concurrency,
            max_queue,
        } => format!(
            "{who} is overloaded: {max_concurrency} requests are running and {max_queue} waiting"
        ),
        Refusal::QueueTimeout(waited) => format!(
            "{who} is overloaded: no place freed up within {}",
            humantime::format_duration(waited)
        ),
    };
    retry_later(answer(StatusCode::SERVICE_UNAVAILABLE, why, request_id))
}

/// The function could not produce a response; logs the cause.
pub fn function_failed(
    function: &str,
    request_id: &str,
    error: &HandleError,
) -> Response<HostBody> {
    let (status, message) = match error {
        HandleError::Failed(failure) => return guest_failed(function, request_id, failure),
        HandleError::BodyTooLarge(max_body) => {
            return body_too_large(function, *max_body, request_id);
        }
        HandleError::GuestError(code) => {
            tracing::warn!(function = %function, request_id = %request_id, error_code = ?code, "the function returned an error code");
            (
                StatusCode::BAD_GATEWAY,
                format!("function `{function}` returned an error instead of a response: {code:?}"),
            )
        }
        HandleError::NoResponse => {
            tracing::warn!(function = %function, request_id = %request_id, "the function returned without a response");
            (
                StatusCode::BAD_GATEWAY,
                format!("function `{function}` returned without sending a response"),
            )
        }
        HandleError::Setup(error) => {
            tracing::error!(function = %function, request_id = %request_id, error = %format!("{error:#}"), "cannot start the function");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the host could not start function `{function}`"),
            )
        }
    };
    answer(status, message, request_id)
}

/// The guest trapped, hit a limit, or found no free instance slot.
fn guest_failed(function: &str, request_id: &str, failure: &GuestFailure) -> Response<HostBody> {
    tracing::error!(function = %function, request_id = %request_id, error = %failure, "the function failed");
    match failure {
        GuestFailure::Trap(_) => {
            let reason = failure
                .trap_code()
                .map(|code| format!(" ({code})"))
                .unwrap_or_default();
            answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("function `{function}` trapped{reason}; the host log has the details"),
                request_id,
            )
        }
        GuestFailure::MemoryLimit { limit, .. } => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "function `{function}` hit its memory limit ({})",
                human_size(*limit)
            ),
            request_id,
        ),
        GuestFailure::Timeout(timeout) => answer(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "function `{function}` did not finish within its timeout ({}) and was stopped",
                humantime::format_duration(*timeout)
            ),
            request_id,
        ),
        GuestFailure::Overloaded(_) => retry_later(answer(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the host has no free instance for function `{function}`"),
            request_id,
        )),
    }
}

/// The function cannot be started (its component was refused, or its
/// artifact cannot be mapped); logs the cause.
pub fn unavailable(error: &FunctionError, request_id: &str) -> Response<HostBody> {
    tracing::error!(
        function = %error.function,
        request_id = %request_id,
        error = %error.error,
        "cannot start the function"
    );
    answer(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "function `{}` cannot be started; the host log has the details",
            error.function
        ),
        request_id,
    )
}

/// `1 KiB`, `32 MiB`, `1.5 GiB`: sizes as the manifest writes them.
fn human_size(bytes: u64) -> String {
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

fn retry_later(mut response: Response<HostBody>) -> Response<HostBody> {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    response
}

fn answer(status: StatusCode, message: String, request_id: &str) -> Response<HostBody> {
    let reason = status.canonical_reason().unwrap_or("");
    let body = format!(
        "{} {reason}: {message} (request id {request_id})\n",
        status.as_u16()
    );
    let mut response = Response::new(HostBody::text(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_read_like_the_manifest() {
        assert_eq!(human_size(1024), "1 KiB");
        assert_eq!(human_size(32 << 20), "32 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(100), "100 bytes");
    }
}
