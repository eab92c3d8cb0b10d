//! Returns from the handler without calling `response-outparam.set`.

use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Handler;

impl wasip2::exports::http::incoming_handler::Guest for Handler {
    fn handle(_: IncomingRequest, out: ResponseOutparam) {
        drop(out);
    }
}

wasip2::http::proxy::export!(Handler);
