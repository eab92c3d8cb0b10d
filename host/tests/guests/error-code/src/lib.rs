//! Answers the outparam with an error code: the function says it could not
//! produce a response, which is not a crash.

use wasip2::http::types::{ErrorCode, IncomingRequest, ResponseOutparam};

struct Handler;

impl wasip2::exports::http::incoming_handler::Guest for Handler {
    fn handle(_: IncomingRequest, out: ResponseOutparam) {
        let reason = "the backend is unavailable".to_owned();
        ResponseOutparam::set(out, Err(ErrorCode::InternalError(Some(reason))));
    }
}

wasip2::http::proxy::export!(Handler);
