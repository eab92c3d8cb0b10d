//! Echo: the response body is the request body, streamed back as it
//! arrives (a body of any size passes through in 64 KiB chunks), and the
//! response head reports the request's:
//!
//! - `echo-method`, `echo-path`, `echo-query`: the request line;
//! - `echo-authority`: the authority (`Host`) it was sent to;
//! - `echo-header-<name>`: one per request header, with its value.

use shoal::{Request, Response};

fn handle(request: Request) -> Response {
    let mut response = Response::ok()
        .with_header("content-type", "application/octet-stream")
        .with_header("echo-method", request.method())
        .with_header("echo-path", request.path())
        .with_header("echo-query", request.query().unwrap_or(""))
        .with_header("echo-authority", request.authority().unwrap_or_default());
    for (name, value) in request.headers() {
        response = response.with_header(format!("echo-header-{name}"), value);
    }
    println!("echo {} {}", request.method(), request.path_with_query());
    response.with_reader(request.into_body_reader())
}

shoal::export!(handle);
