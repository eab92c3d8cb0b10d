//! A guest's stdout and stderr, turned into log lines that carry the
//! function's name and the request id.
//!
//! Guests write arbitrary chunks; the log wants lines. Bytes are buffered
//! until a newline (or until [`MAX_LINE`] bytes, so a guest that never
//! writes a newline cannot grow the buffer without bound), and whatever is
//! left when the request's store is dropped is logged as a last line.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest line logged as one event; longer lines are split.
pub(crate) const MAX_LINE: usize = 16 * 1024;

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

/// What a store's log lines are tagged with. The request id changes when an
/// instance is reused for another request.
pub(crate) struct LogTags {
    function: Arc<str>,
    request_id: Mutex<Arc<str>>,
}

impl LogTags {
    pub(crate) fn new(function: Arc<str>, request_id: &str) -> Arc<Self> {
        Arc::new(Self {
            function,
            request_id: Mutex::new(Arc::from(request_id)),
        })
    }

    /// Tags the lines that follow with `request_id`.
    pub(crate) fn set_request_id(&self, request_id: &str) {
        *self.request_id.lock().unwrap_or_else(|e| e.into_inner()) = Arc::from(request_id);
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

    fn write(&self, mut bytes: &[u8]) {
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
        let request_id = self
            .tags
            .request_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
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

    #[test]
    fn lines_are_split_on_newlines_and_at_the_length_limit() {
        let log = GuestLog::new(&LogTags::new(Arc::from("f"), "r"), Stream::Stdout);
        log.write(b"ab");
        log.write(b"c\nde");
        assert_eq!(*log.0.pending.lock().unwrap(), b"de");
        log.write(&vec![b'x'; MAX_LINE * 2]);
        // "de" plus the x's fill one line; the rest stays pending.
        assert_eq!(log.0.pending.lock().unwrap().len(), 2);
    }
}
