//! Makes one outbound call on the raw wasi:http API, as its query says:
//! `?scheme=http&authority=127.0.0.1:1234&path=/x&host=forged.example`
//! (`host` tries to set a `Host` header; `traceparent` sets its own;
//! `timeout_ms` bounds the wait for the response head; `hops` sets an
//! `x-shoal-hops` header; `body` POSTs that text, with its length;
//! `loop` calls this same URL on the given
//! authority, so that each call makes the next), and answers
//! `called <status> <body>` (with `<broke off: <why>>` after what came of a
//! body that broke off) or `refused at <step>: <why>`.

use std::io::Read;

use shoal::wasi::http::outgoing_handler;
use shoal::wasi::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use shoal::{Request, Response};

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn handle(request: Request) -> Response {
    let query = request.query().unwrap_or("").to_owned();
    let again = param(&query, "loop").map(|_| request.path_with_query().to_owned());
    Response::text(match call(&query, again.as_deref()) {
        Ok(status) => format!("called {status}\n"),
        Err(refusal) => format!("refused at {refusal}\n"),
    })
}

fn call(query: &str, again: Option<&str>) -> Result<String, String> {
    let mut headers = Vec::new();
    if let Some(host) = param(query, "host") {
        headers.push(("host".to_owned(), host.as_bytes().to_vec()));
    }
    if let Some(traceparent) = param(query, "traceparent") {
        headers.push(("traceparent".to_owned(), traceparent.as_bytes().to_vec()));
    }
    if let Some(hops) = param(query, "hops") {
        headers.push(("x-shoal-hops".to_owned(), hops.as_bytes().to_vec()));
    }
    let sent = param(query, "body");
    if let Some(sent) = sent {
        headers.push((
            "content-length".to_owned(),
            sent.len().to_string().into_bytes(),
        ));
    }
    let fields = Fields::from_list(&headers).map_err(|e| format!("headers: {e:?}"))?;
    let request = OutgoingRequest::new(fields);
    if sent.is_some() {
        request
            .set_method(&Method::Post)
            .map_err(|()| "method: invalid".to_owned())?;
    }
    let scheme = match param(query, "scheme") {
        Some("https") => Scheme::Https,
        _ => Scheme::Http,
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "scheme: invalid".to_owned())?;
    request
        .set_authority(param(query, "authority"))
        .map_err(|()| "authority: invalid".to_owned())?;
    request
        .set_path_with_query(Some(again.or(param(query, "path")).unwrap_or("/")))
        .map_err(|()| "path: invalid".to_owned())?;
    let body = request.body().expect("a new request has a body");
    let options = RequestOptions::new();
    if let Some(ms) = param(query, "timeout_ms").and_then(|ms| ms.parse::<u64>().ok()) {
        options
            .set_first_byte_timeout(Some(ms * 1_000_000))
            .map_err(|()| "options: refused".to_owned())?;
    }
    let future =
        outgoing_handler::handle(request, Some(options)).map_err(|e| format!("handle: {e:?}"))?;
    // A server may answer before it has read the body (a 413) and stop
    // reading it: then the body is cut, and the call goes on to its answer.
    let mut cut = false;
    if let Some(sent) = sent {
        let stream = body.write().expect("a body is written once");
        cut = stream.blocking_write_and_flush(sent.as_bytes()).is_err();
    }
    match OutgoingBody::finish(body, None) {
        Err(e) if !cut => return Err(format!("finish: {e:?}")),
        _ => {}
    }
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(format!("response: {}", describe(code))),
        _ => return Err("response: missing".to_owned()),
    };
    let status = response.status();
    let body = response.consume().map_err(|()| "body: taken".to_owned())?;
    let mut text = String::new();
    if let Ok(mut stream) = body.stream()
        && let Err(error) = stream.read_to_string(&mut text)
    {
        text.push_str(&format!("<broke off: {error}>"));
    }
    Ok(format!("{status} {text}"))
}

fn describe(code: ErrorCode) -> String {
    match code {
        ErrorCode::HttpRequestDenied => "HttpRequestDenied".to_owned(),
        other => format!("{other:?}"),
    }
}

shoal::export!(handle);
