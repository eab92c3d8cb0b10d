//! Sends a 200 head and a first piece of the body, then traps: the client
//! must see a cut body, never one that looks complete.

use std::io::Write as _;

use wasip2::http::types::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};

struct Handler;

impl wasip2::exports::http::incoming_handler::Guest for Handler {
    fn handle(_: IncomingRequest, out: ResponseOutparam) {
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().unwrap();
        ResponseOutparam::set(out, Ok(response));
        let mut stream = body.write().unwrap();
        stream.write_all(b"first part of the body\n").unwrap();
        stream.flush().unwrap();
        core::arch::wasm32::unreachable();
    }
}

wasip2::http::proxy::export!(Handler);
