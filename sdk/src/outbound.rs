//! Calling other services from a function, through the standard
//! `wasi:http/outgoing-handler`.
//!
//! ```no_run
//! use shoal::outbound::OutgoingRequest;
//!
//! # fn example() -> Result<(), shoal::outbound::OutboundError> {
//! // Two calls in flight at once, then both answers.
//! let users = OutgoingRequest::get("http://users.internal/v1/users/7").start()?;
//! let orders = OutgoingRequest::get("http://orders.internal/v1/orders?user=7").start()?;
//! let (users, orders) = (users.wait()?, orders.wait()?);
//! # Ok(())
//! # }
//! ```
//!
//! On Shoal, a function may only call the origins its manifest lists in
//! `allowed_outbound_hosts`; any other call fails with
//! [`OutboundError::Denied`]. The host adds the incoming request's trace
//! headers (`traceparent`, `x-request-id`, B3...) to every call.

use std::fmt;
use std::io::{Read, Write};
use std::time::Duration;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, Method, OutgoingBody,
    OutgoingRequest as WasiRequest, RequestOptions, Scheme,
};

/// A request to another service.
pub struct OutgoingRequest {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

/// Why a call failed.
#[derive(Debug)]
pub enum OutboundError {
    /// The URL is not `http://` or `https://` followed by a host.
    InvalidUrl(String),
    /// The host refused the call: the origin is not in the function's
    /// `allowed_outbound_hosts`.
    Denied,
    /// The call failed: the wasi:http error code.
    Http(String),
    /// The request or response body could not be written or read.
    Body(String),
}

impl fmt::Display for OutboundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(url) => {
                write!(f, "invalid URL `{url}`: use http:// or https:// and a host")
            }
            Self::Denied => {
                f.write_str("the call was denied: the origin is not an allowed outbound host")
            }
            Self::Http(code) => write!(f, "the call failed: {code}"),
            Self::Body(why) => write!(f, "the call's body failed: {why}"),
        }
    }
}

impl std::error::Error for OutboundError {}

impl From<ErrorCode> for OutboundError {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::HttpRequestDenied => Self::Denied,
            code => Self::Http(format!("{code:?}")),
        }
    }
}

impl OutgoingRequest {
    /// A request with `method` (`GET`, `POST`...) to `url`.
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// A `GET` of `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` of `body` to `url`.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", url).with_body(body)
    }

    /// The same request with one more header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The same request with `body` as its body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The same request, waiting at most `timeout` for the response head.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and waits for the response.
    pub fn send(self) -> Result<IncomingResponse, OutboundError> {
        self.start()?.wait()
    }

    /// Sends the request without waiting: start several, then wait for each.
    pub fn start(self) -> Result<PendingResponse, OutboundError> {
        let (scheme, authority, path) = split_url(&self.url)?;
        let headers = Fields::from_list(&self.headers)
            .map_err(|e| OutboundError::Http(format!("invalid request headers: {e:?}")))?;
        let request = WasiRequest::new(headers);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        };
        let invalid = || OutboundError::InvalidUrl(self.url.clone());
        request.set_method(&method).map_err(|()| invalid())?;
        request.set_scheme(Some(&scheme)).map_err(|()| invalid())?;
        request
            .set_authority(Some(authority))
            .map_err(|()| invalid())?;
        request
            .set_path_with_query(Some(path))
            .map_err(|()| invalid())?;
        let body = request.body().expect("a new request has a body");

        let options = RequestOptions::new();
        if let Some(timeout) = self.timeout {
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            // Refused only by hosts without timeouts; then there is none.
            let _ = options.set_first_byte_timeout(Some(nanos));
        }
        // The body is written after the request is handed over, so that the
        // host can read it as it is written.
        let future = outgoing_handler::handle(request, Some(options))?;
        let written = if self.body.is_empty() {
            Ok(())
        } else {
            write_all(&body, &self.body)
        };
        OutgoingBody::finish(body, None)?;
        // A server may answer before it reads the whole body (and then the
        // host stops taking it): the response, if there is one, tells.
        Ok(PendingResponse {
            future,
            written: written.err(),
        })
    }
}

fn write_all(body: &OutgoingBody, bytes: &[u8]) -> std::io::Result<()> {
    let mut stream = body
        .write()
        .map_err(|()| std::io::Error::other("the request body is already being written"))?;
    stream.write_all(bytes)?;
    Write::flush(&mut stream)
}

/// `scheme://authority/path?query`, split the way wasi:http wants it.
fn split_url(url: &str) -> Result<(Scheme, &str, &str), OutboundError> {
    let invalid = || OutboundError::InvalidUrl(url.to_owned());
    let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(invalid()),
    };
    let path_at = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(path_at);
    if authority.is_empty() {
        return Err(invalid());
    }
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}

/// A call in flight.
pub struct PendingResponse {
    future: FutureIncomingResponse,
    /// Why the request body could not be written whole, if it could not.
    written: Option<std::io::Error>,
}

impl PendingResponse {
    /// Waits for the response, and reads its whole body.
    pub fn wait(self) -> Result<IncomingResponse, OutboundError> {
        self.future.subscribe().block();
        let response = match self.future.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => {
                return Err(match self.written {
                    Some(why) => OutboundError::Body(format!("{why} ({code:?})")),
                    None => code.into(),
                });
            }
            Some(Err(())) | None => {
                return Err(OutboundError::Http(
                    "the response was already taken".to_owned(),
                ));
            }
        };
        let status = response.status();
        let headers = response.headers().entries();
        let body = response
            .consume()
            .map_err(|()| OutboundError::Body("the response body was already taken".to_owned()))?;
        let bytes = read_all(&body)?;
        drop(IncomingBody::finish(body));
        Ok(IncomingResponse {
            status,
            headers,
            body: bytes,
        })
    }
}

fn read_all(body: &IncomingBody) -> Result<Vec<u8>, OutboundError> {
    let mut stream = body
        .stream()
        .map_err(|()| OutboundError::Body("the response body is already being read".to_owned()))?;
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .map_err(|e| OutboundError::Body(e.to_string()))?;
    Ok(bytes)
}

/// A response from another service, its body read whole.
#[derive(Debug)]
pub struct IncomingResponse {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl IncomingResponse {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (any case), if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, OutboundError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| OutboundError::Body(format!("not the expected JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let (scheme, authority, path) = split_url("https://api.example.com:8443/v1/x?y=1").unwrap();
        assert!(matches!(scheme, Scheme::Https));
        assert_eq!((authority, path), ("api.example.com:8443", "/v1/x?y=1"));
        assert_eq!(split_url("http://a").unwrap().2, "/");
        assert_eq!(split_url("http://a?q").unwrap().2, "?q");
        for bad in ["a.com/x", "ftp://a", "http:///x", "http://"] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }
}
