//! The request a function receives.

use std::cell::OnceCell;
use std::io::{self, Read};

use wasip2::http::types::{IncomingBody, IncomingRequest, Method};
use wasip2::io::streams::InputStream;

/// An incoming HTTP request. Its parts are read from the host when first
/// asked for (each is a call into the host), and the body can be streamed.
pub struct Request {
    method: OnceCell<String>,
    path_with_query: OnceCell<String>,
    headers: OnceCell<Vec<(String, Vec<u8>)>>,
    inner: IncomingRequest,
}

impl Request {
    pub(crate) fn from_incoming(inner: IncomingRequest) -> Self {
        Self {
            method: OnceCell::new(),
            path_with_query: OnceCell::new(),
            headers: OnceCell::new(),
            inner,
        }
    }

    /// The method, upper-case (`GET`, `POST`, ...).
    pub fn method(&self) -> &str {
        self.method.get_or_init(|| match self.inner.method() {
            Method::Get => "GET".to_owned(),
            Method::Head => "HEAD".to_owned(),
            Method::Post => "POST".to_owned(),
            Method::Put => "PUT".to_owned(),
            Method::Delete => "DELETE".to_owned(),
            Method::Connect => "CONNECT".to_owned(),
            Method::Options => "OPTIONS".to_owned(),
            Method::Trace => "TRACE".to_owned(),
            Method::Patch => "PATCH".to_owned(),
            Method::Other(other) => other,
        })
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        let whole = self.path_with_query();
        whole.split_once('?').map_or(whole, |(path, _)| path)
    }

    /// The query string after `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.path_with_query()
            .split_once('?')
            .map(|(_, query)| query)
    }

    /// The path and query as sent.
    pub fn path_with_query(&self) -> &str {
        self.path_with_query.get_or_init(|| {
            self.inner
                .path_with_query()
                .unwrap_or_else(|| "/".to_owned())
        })
    }

    /// The authority the request was sent to: its `Host` header (HTTP/1.1)
    /// or `:authority` (HTTP/2), as sent. wasi:http gives it here rather
    /// than among the headers.
    pub fn authority(&self) -> Option<String> {
        self.inner.authority()
    }

    /// The first value of header `name` (any case), if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all_headers()
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// Every header, in the order received; names are lower-case.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.all_headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    fn all_headers(&self) -> &[(String, Vec<u8>)] {
        self.headers.get_or_init(|| self.inner.headers().entries())
    }

    /// The body as a stream, read as it arrives.
    pub fn into_body_reader(self) -> BodyReader {
        let body = self.inner.consume().ok();
        let stream = body.as_ref().and_then(|body| body.stream().ok());
        BodyReader {
            stream,
            _body: body,
        }
    }

    /// The whole body.
    pub fn body(self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.into_body_reader().read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// The body, parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(self) -> io::Result<T> {
        serde_json::from_slice(&self.body()?).map_err(io::Error::other)
    }
}

/// A request body, readable as it arrives.
pub struct BodyReader {
    // The stream is a child of the body and must be dropped first: fields
    // drop in declaration order.
    stream: Option<InputStream>,
    _body: Option<IncomingBody>,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.stream {
            Some(stream) => stream.read(buf),
            None => Ok(0),
        }
    }
}
