//! A function on the plain `wasip2` bindings, without the Shoal SDK: it
//! answers with its environment, one `NAME=value` per line. Under Shoal a
//! function sees only the variables its manifest declares.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Env;

impl wasip2::exports::http::incoming_handler::Guest for Env {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let mut text = String::new();
        for (name, value) in std::env::vars() {
            text.push_str(&format!("{name}={value}\n"));
        }

        let headers = Fields::from_list(&[(
            "content-type".to_owned(),
            b"text/plain; charset=utf-8".to_vec(),
        )])
        .expect("valid headers");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(response_out, Ok(response));

        let mut stream = body.write().expect("the body is written once");
        stream
            .write_all(text.as_bytes())
            .expect("the host accepts the body");
        drop(stream);
        OutgoingBody::finish(body, None).expect("the body is complete");
    }
}

wasip2::http::proxy::export!(Env);
