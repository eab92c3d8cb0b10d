//! Answers `answered` with a `content-length`, finishes the body, then
//! goes on: it sleeps `?ms=N` milliseconds (default 200) and prints
//! `finished N ms after the answer` to stdout.

use std::io::Write as _;

use wasip2::clocks::monotonic_clock;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Handler;

impl wasip2::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let ms: u64 = request
            .path_with_query()
            .and_then(|p| p.split_once("?ms=").and_then(|(_, n)| n.parse().ok()))
            .unwrap_or(200);
        let answer = b"answered\n";
        let headers = Fields::from_list(&[(
            "content-length".to_owned(),
            answer.len().to_string().into_bytes(),
        )])
        .unwrap();
        let response = OutgoingResponse::new(headers);
        let body = response.body().unwrap();
        ResponseOutparam::set(out, Ok(response));
        let mut stream = body.write().unwrap();
        stream.write_all(answer).unwrap();
        stream.flush().unwrap();
        drop(stream);
        OutgoingBody::finish(body, None).unwrap();

        monotonic_clock::subscribe_duration(ms * 1_000_000).block();
        println!("finished {ms} ms after the answer");
    }
}

wasip2::http::proxy::export!(Handler);
