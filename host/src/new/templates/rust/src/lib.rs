//! The function {{name}}: answers every request with a greeting that names
//! its path.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Function;

impl wasip2::exports::http::incoming_handler::Guest for Function {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let text = format!("Hello from {{name}} (Rust) at {path}\n");

        let headers = Fields::from_list(&[(
            "content-type".to_owned(),
            b"text/plain; charset=utf-8".to_vec(),
        )])
        .expect("valid headers");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(response_out, Ok(response));

        let mut stream = body.write().expect("the body is written once");
        stream.write_all(text.as_bytes()).expect("the client takes the body");
        drop(stream); // the stream must go before the body is finished
        OutgoingBody::finish(body, None).expect("the body is complete");
    }
}

wasip2::http::proxy::export!(Function);
