//! A guest's stdout and stderr, turned into log lines that carry the
//! function's name and the request id.
//!
//! Guests write arbitrary chunks; the log wants lines. Bytes are buffered
//! until a newline (or until [`MAX_LINE`] bytes, so a guest that never
//! writes a newline cannot grow the buffer without bound), and whatever is
//! left when the request's store is dropped is logged as a last line.
//!
//! A guest cannot flood the log: one request may write
//! [`MAX_OUTPUT_PER_REQUEST`] bytes, and all instances of a function together
//! [`OUTPUT_RATE`] bytes a second (in bursts of up to [`OUTPUT_BURST`]).
//! Past either, output is dropped and counted ([`OutputLimits::dropped`]),
//! and one line says so (once per request, at most once a second per
//! function for the rate).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest line logged as one event; longer lines are split.
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// Bytes of stdout and stderr one request may write; the rest is dropped.
pub const MAX_OUTPUT_PER_REQUEST: u64 = 1 << 20;

/// Bytes a second that all instances of a function may write together.
pub const OUTPUT_RATE: u64 = 4 << 20;

/// The most a function may write at once before [`OUTPUT_RATE`] applies.
pub const OUTPUT_BURST: u64 = 16 << 20;

/// How often, at most, a function's output over its rate is reported.
const RATE_NOTICE_INTERVAL: Duration = Duration::from_secs(1);

/// What a function's guests may still write, shared by all its instances,
/// and what they wrote past their limits.
#[derive(Debug)]
pub struct OutputLimits {
    bucket: Mutex<Bucket>,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may be written now.
    tokens: u64,
    refilled: Instant,
    /// When the last notice of output over the rate was logged.
    noticed: Option<Instant>,
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self {
            bucket: Mutex::new(Bucket {
                tokens: OUTPUT_BURST,
                refilled: Instant::now(),
                noticed: None,
            }),
            dropped: AtomicU64::new(0),
        }
    }
}

impl OutputLimits {
    /// Bytes of output dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Takes up to `wanted` bytes from the function's rate; returns how many
    /// it got, and whether the shortfall is to be reported now.
    fn take(&self, wanted: u64) -> (u64, bool) {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let earned = now.duration_since(bucket.refilled).as_secs_f64() * OUTPUT_RATE as f64;
        if earned >= 1.0 {
            bucket.tokens = (bucket.tokens + earned as u64).min(OUTPUT_BURST);
            bucket.refilled = now;
        }
        let granted = wanted.min(bucket.tokens);
        bucket.tokens -= granted;
        let notice = granted < wanted
            && bucket
                .noticed
                .is_none_or(|at| now.duration_since(at) >= RATE_NOTICE_INTERVAL);
        if notice {
            bucket.noticed = Some(now);
        }
        (granted, notice)
    }
}

/// What a guest can write to the log through.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// What a store's log lines are tagged with, and what its current request
/// has written. The request changes when an instance is reused.
pub(crate) struct LogTags {
    function: Arc<str>,
    request_id: Mutex<Arc<str>>,
    limits: Arc<OutputLimits>,
    /// Bytes the current request has written (dropped ones included).
    written: AtomicU64,
    /// Whether the current request was told its output is being dropped.
    cut: AtomicBool,
}

impl LogTags {
    pub(crate) fn new(
        function: Arc<str>,
        request_id: &str,
        limits: Arc<OutputLimits>,
    ) -> Arc<Self> {
        Arc::new(Self {
            function,
            request_id: Mutex::new(Arc::from(request_id)),
            limits,
            written: AtomicU64::new(0),
            cut: AtomicBool::new(false),
        })
    }

    /// Tags the lines that follow with `request_id`, a new request.
    pub(crate) fn set_request_id(&self, request_id: &str) {
        *self.request_id.lock().unwrap_or_else(|e| e.into_inner()) = Arc::from(request_id);
        self.written.store(0, Ordering::Relaxed);
        self.cut.store(false, Ordering::Relaxed);
    }

    fn request_id(&self) -> Arc<str> {
        self.request_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many of `len` more bytes may be written, within the request's
    /// share and the function's rate; the rest is counted as dropped.
    fn admit(&self, len: usize) -> usize {
        let len = len as u64;
        let before = self.written.fetch_add(len, Ordering::Relaxed);
        let within_request = MAX_OUTPUT_PER_REQUEST.saturating_sub(before).min(len);
        if within_request < len && !self.cut.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "shoal::guest",
                function = %self.function,
                request_id = %self.request_id(),
                max_bytes = MAX_OUTPUT_PER_REQUEST,
                "the request's output passed its limit; the rest of it is dropped"
            );
        }
        let (granted, notice) = self.limits.take(within_request);
        if notice {
            tracing::warn!(
                target: "shoal::guest",
                function = %self.function,
                bytes_per_second = OUTPUT_RATE,
                "the function writes output faster than its rate; output is dropped"
            );
        }
        self.limits
            .dropped
            .fetch_add(len - granted, Ordering::Relaxed);
        granted as usize
    }
}

/// One of a store's output streams. Every handle the guest opens on it
/// shares one line buffer.
#[derive(Clone)]
pub(crate) struct GuestLog(Arc<LineBuffer>);

struct LineBuffer {
    tags: Arc<LogTags>,
    stream: Stream,
    pending: Mutex<Vec<u8>>,
}

impl GuestLog {
    pub(crate) fn new(tags: &Arc<LogTags>, stream: Stream) -> Self {
        Self(Arc::new(LineBuffer {
            tags: tags.clone(),
            stream,
            pending: Mutex::new(Vec::new()),
        }))
    }

    fn write(&self, bytes: &[u8]) {
        let mut bytes = &bytes[..self.0.tags.admit(bytes.len())];
        let mut pending = self.0.pending.lock().unwrap_or_else(|e| e.into_inner());
        while !bytes.is_empty() {
            let room = MAX_LINE - pending.len();
            let take = bytes.len().min(room);
            match bytes[..take].iter().position(|&b| b == b'\n') {
                Some(newline) => {
                    pending.extend_from_slice(&bytes[..newline]);
                    bytes = &bytes[newline + 1..];
                    self.0.emit(&pending);
                    pending.clear();
                }
                None => {
                    pending.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if pending.len() == MAX_LINE {
                        self.0.emit(&pending);
                        pending.clear();
                    }
                }
            }
        }
    }
}

impl LineBuffer {
    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if line.is_empty() {
            return;
        }
        let request_id = self.tags.request_id();
        tracing::info!(
            target: "shoal::guest",
            function = %self.tags.function,
            request_id = %request_id,
            stream = self.stream.name(),
            "{line}"
        );
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        let pending = self.pending.get_mut().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            let rest = std::mem::take(pending);
            self.emit(&rest);
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        GuestLog::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(limits: &Arc<OutputLimits>) -> Arc<LogTags> {
        LogTags::new(Arc::from("f"), "r", limits.clone())
    }

    #[test]
    fn lines_are_split_on_newlines_and_at_the_length_limit() {
        let log = GuestLog::new(&tags(&Arc::default()), Stream::Stdout);
        log.write(b"ab");
        log.write(b"c\nde");
        assert_eq!(*log.0.pending.lock().unwrap(), b"de");
        log.write(&vec![b'x'; MAX_LINE * 2]);
        // "de" plus the x's fill one line; the rest stays pending.
        assert_eq!(log.0.pending.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_request_writes_at_most_its_share_and_a_function_at_most_its_rate() {
        let limits = Arc::new(OutputLimits::default());
        let request = tags(&limits);
        let mib = 1 << 20;
        assert_eq!(request.admit(mib / 2), mib / 2);
        assert_eq!(
            request.admit(mib),
            mib / 2,
            "the rest of the request's share"
        );
        assert_eq!(request.admit(10), 0);
        assert_eq!(limits.dropped(), (mib / 2 + 10) as u64);
        // The next request on a reused instance has a share of its own.
        request.set_request_id("r2");
        assert_eq!(request.admit(10), 10);

        // Many requests at once: the function's burst, then its rate.
        let mut granted = 0;
        for _ in 0..64 {
            granted += tags(&limits).admit(mib);
        }
        let burst = OUTPUT_BURST as usize;
        assert!(granted < burst + mib, "{granted} bytes passed");
        assert!(granted >= burst - mib - 20, "{granted} bytes passed");
    }
}
