//! The answers users see when a request cannot be served, and the log line
//! that goes with each.
//!
//! Every answer is short plain text naming what failed and the request id;
//! the full error (a trap with its wasm backtrace) goes to the log only.

use http::{Response, StatusCode, header};
use shoal_runtime::HandleError;

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

/// The function could not produce a response; logs the cause.
pub fn function_failed(
    function: &str,
    request_id: &str,
    error: &HandleError,
) -> Response<HostBody> {
    let (status, message) = match error {
        HandleError::Trap(trap) => {
            tracing::error!(
                function = %function,
                request_id = %request_id,
                trap = %format!("{trap:#}"),
                "the function trapped"
            );
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("function `{function}` trapped; the host log has the details"),
            )
        }
        HandleError::GuestError(code) => {
            tracing::warn!(
                function = %function,
                request_id = %request_id,
                error_code = ?code,
                "the function returned an error code"
            );
            (
                StatusCode::BAD_GATEWAY,
                format!("function `{function}` returned an error instead of a response: {code:?}"),
            )
        }
        HandleError::NoResponse => {
            tracing::warn!(
                function,
                request_id,
                "the function returned without a response"
            );
            (
                StatusCode::BAD_GATEWAY,
                format!("function `{function}` returned without sending a response"),
            )
        }
        HandleError::Setup(error) => {
            tracing::error!(
                function = %function,
                request_id = %request_id,
                error = %format!("{error:#}"),
                "cannot start the function"
            );
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the host could not start function `{function}`"),
            )
        }
    };
    answer(status, message, request_id)
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
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
