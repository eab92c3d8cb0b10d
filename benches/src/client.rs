//! The harness's HTTP/1.1 client: one keep-alive connection (hyper's client
//! connection) over a socket that notes when a request's first byte was
//! written and when its response's first byte was read.
//!
//! Those two instants bound request-to-first-byte as the network sees it:
//! no response parsing, body collection or task hand-off lies inside them.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::plan::REQUEST_TIMEOUT;

/// One answer.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its whole body.
    pub body: Bytes,
    /// From writing the request's first byte to reading the response's.
    pub first_byte: Duration,
}

impl Answer {
    /// Fails unless the answer is a 200 with body `expected`.
    pub fn expect(&self, expected: &str) -> anyhow::Result<()> {
        if self.status != StatusCode::OK || self.body != expected.as_bytes() {
            bail!(
                "expected 200 {expected:?}, got {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            );
        }
        Ok(())
    }
}

/// A keep-alive HTTP/1.1 connection.
pub struct Connection {
    addr: SocketAddr,
    sender: SendRequest<Empty<Bytes>>,
    timing: Arc<Mutex<Timing>>,
}

impl Connection {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let timing = Arc::new(Mutex::new(Timing::default()));
        let stream = TimedStream {
            inner: stream,
            timing: timing.clone(),
        };
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/1.1 handshake with {addr} failed"))?;
        tokio::spawn(connection);
        Ok(Self {
            addr,
            sender,
            timing,
        })
    }

    /// Whether the server has closed the connection (or it broke).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends `GET path` and reads the whole answer.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Answer> {
        let request = Request::get(path)
            .header(header::HOST, self.addr.to_string())
            .body(Empty::new())?;
        let exchange = async {
            self.sender.ready().await?;
            *self.timing.lock().unwrap() = Timing::default();
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("GET http://{}{path} timed out", self.addr))?
            .with_context(|| format!("GET http://{}{path} failed", self.addr))?;
        let first_byte = self
            .timing
            .lock()
            .unwrap()
            .first_byte()
            .context("the socket saw no request written and answer read")?;
        Ok(Answer {
            status,
            body,
            first_byte,
        })
    }
}

/// `GET http://addr/path` on a connection of its own.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Answer> {
    Connection::open(addr).await?.get(path).await
}

/// `method http://addr/path` with `body` and a bearer `token`, on a
/// connection of its own, within `timeout`; the status and the whole
/// answer.
pub async fn call(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    token: &str,
    body: Bytes,
    timeout: Duration,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(http_body_util::Full::new(body))?;
    let exchange = async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("{method} http://{addr}{path} timed out"))?
}

/// When the current request was first written and first answered.
#[derive(Debug, Default)]
struct Timing {
    written: Option<Instant>,
    answered: Option<Instant>,
}

impl Timing {
    fn first_byte(&self) -> Option<Duration> {
        Some(self.answered?.duration_since(self.written?))
    }

    /// Called once a write that began at `started` wrote bytes: the first
    /// such write of a request starts the clock.
    fn wrote(&mut self, started: Instant) {
        self.written.get_or_insert(started);
    }

    /// Called once bytes were read.
    fn read(&mut self) {
        if self.written.is_some() && self.answered.is_none() {
            self.answered = Some(Instant::now());
        }
    }
}

/// A TCP stream that records [`Timing`].
struct TimedStream {
    inner: TcpStream,
    timing: Arc<Mutex<Timing>>,
}

impl TimedStream {
    /// Runs a write; if it wrote anything, tells [`Timing`] when it began.
    fn timed_write(
        &mut self,
        write: impl FnOnce(Pin<&mut TcpStream>) -> Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        let started = Instant::now();
        let result = write(Pin::new(&mut self.inner));
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.timing.lock().unwrap().wrote(started);
        }
        result
    }
}

impl AsyncRead for TimedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.timing.lock().unwrap().read();
        }
        result
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.timed_write(|inner| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.timed_write(|inner| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
