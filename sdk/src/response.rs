//! The response a function sends.

use std::fmt;
use std::io::{self, Read, Write};

use wasip2::http::types::{Fields, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasip2::io::streams::StreamError;

/// Bytes read from a streamed body and written to the host at a time.
const CHUNK: usize = 64 * 1024;

/// The most `blocking-write-and-flush` takes in one call (WASI 0.2).
const ONE_CALL: usize = 4096;

/// An HTTP response: status, headers and a body held in memory or streamed
/// from a reader.
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    Reader(Box<dyn Read>),
}

impl Response {
    /// A response with `status` and an empty body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
        }
    }

    /// `200 OK` with an empty body.
    pub fn ok() -> Self {
        Self::new(200)
    }

    /// `202 Accepted` with an empty body: the request is taken and there is
    /// nothing to answer, such as an event handled with no event in reply.
    pub fn accepted() -> Self {
        Self::new(202)
    }

    /// `200 OK` with a `text/plain` body.
    pub fn text(text: impl Into<String>) -> Self {
        Self::ok()
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(text.into())
    }

    /// `200 OK` with `value` as a JSON body; `500` if it cannot be
    /// serialized.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(json) => Self::ok()
                .with_header("content-type", "application/json")
                .with_body(json),
            Err(error) => Self::error(500, format!("cannot serialize the response: {error}")),
        }
    }

    /// `status` with `message` as a `text/plain` body.
    pub fn error(status: u16, message: impl fmt::Display) -> Self {
        Self::text(format!("{message}\n")).with_status(status)
    }

    /// The same response with another status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The same response with one more header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The same response with `body` as its body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Body::Bytes(body.into());
        self
    }

    /// The same response with a body streamed from `reader` as it is sent.
    pub fn with_reader(mut self, reader: impl Read + 'static) -> Self {
        self.body = Body::Reader(Box::new(reader));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Sends this response through `out`, then its body.
    pub(crate) fn send(mut self, out: ResponseOutparam) {
        if let Body::Bytes(bytes) = &self.body {
            let has_length = self
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
            if !has_length {
                let length = bytes.len().to_string();
                self.headers
                    .push(("content-length".to_owned(), length.into_bytes()));
            }
        }
        let fields = match Fields::from_list(&self.headers) {
            Ok(fields) => fields,
            Err(error) => {
                let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
                return Response::error(
                    500,
                    format!("invalid response headers {names:?}: {error:?}"),
                )
                .send(out);
            }
        };
        let response = OutgoingResponse::new(fields);
        // 200 is where a new response starts: one host call fewer.
        if self.status != 200 && response.set_status_code(self.status).is_err() {
            return Response::error(500, format!("invalid status code {}", self.status)).send(out);
        }
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(out, Ok(response));

        if let Err(error) = write_body(&body, self.body) {
            // The head is sent; the client sees the body cut short.
            eprintln!("shoal: cannot send the response body: {error}");
            return;
        }
        if let Err(error) = OutgoingBody::finish(body, None) {
            eprintln!("shoal: cannot finish the response body: {error:?}");
        }
    }
}

fn write_body(body: &OutgoingBody, content: Body) -> io::Result<()> {
    let mut stream = body
        .write()
        .map_err(|()| io::Error::other("the response body is already being written"))?;
    match content {
        // A small body goes in one host call (`std::io::Write` makes three:
        // `check-write`, `write` and `blocking-flush`).
        Body::Bytes(bytes) if bytes.len() <= ONE_CALL => {
            return stream
                .blocking_write_and_flush(&bytes)
                .map_err(|error| match error {
                    StreamError::Closed => io::ErrorKind::UnexpectedEof.into(),
                    StreamError::LastOperationFailed(e) => io::Error::other(e.to_debug_string()),
                });
        }
        Body::Bytes(bytes) => stream.write_all(&bytes)?,
        Body::Reader(mut reader) => {
            let mut buf = vec![0; CHUNK];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                stream.write_all(&buf[..n])?;
            }
        }
    }
    Write::flush(&mut stream)
}

/// What a handler may return.
pub trait IntoResponse {
    /// Turns `self` into the response to send.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

/// An error becomes `500` with the error's message as the body.
impl<R: IntoResponse, E: fmt::Display> IntoResponse for Result<R, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(response) => response.into_response(),
            Err(error) => Response::error(500, error),
        }
    }
}
