//! The limits one instance runs under, and how they are enforced.
//!
//! - Memory: a [`ResourceLimiter`] refuses growth that would take the
//!   instance's linear memories (all of them together) past the limit. The
//!   guest sees `memory.grow` fail; if it then traps (Rust aborts on a
//!   failed allocation), the failure is reported as the memory limit, not as
//!   a plain trap.
//! - Time: a deadline for the whole request, from instantiation until the
//!   guest returns. The engine's epoch advances every [`EPOCH_TICK`]; running
//!   wasm checks it and, on each tick, either yields to the async executor
//!   (so a spinning guest cannot hold a thread) or, past the deadline, stops
//!   with an interrupt trap. A guest waiting on the host (a sleep, a slow
//!   body) is stopped by a timer around the call instead.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use wasmtime::{Engine, ResourceLimiter, UpdateDeadline};

/// Linear memory an instance may use, unless its function says otherwise.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;

/// How long a request may run, unless its function says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest request body, unless a function says otherwise.
pub const DEFAULT_MAX_BODY: u64 = 32 << 20;

/// How often the engine's epoch advances: the granularity of deadlines, and
/// the longest a guest runs without yielding its thread.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The limits of one function's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of linear memory, all of an instance's memories together.
    pub memory: u64,
    /// Wall-clock time for a request, from instantiation to the guest's
    /// return (the response body included).
    pub timeout: Duration,
    /// Bytes of request body. A body that grows past it, even one streamed
    /// in chunks without a length, is cut off there and answered 413.
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: DEFAULT_MEMORY_LIMIT,
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// A request body that fails once more than its limit has arrived, and
/// says so through a flag the request path reads.
pub(crate) struct LimitedBody<B> {
    inner: B,
    remaining: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl<B> LimitedBody<B> {
    pub(crate) fn new(inner: B, limit: u64, exceeded: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            exceeded,
        }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                self.exceeded.store(true, Ordering::Relaxed);
                let limit = self.limit;
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                    Some(limit),
                ))));
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A store's memory limiter: counts every linear memory of the instance and
/// remembers whether it refused to grow one.
pub(crate) struct MemoryLimiter {
    limit: usize,
    used: usize,
    refused: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            used: 0,
            refused: false,
        }
    }

    /// Whether growth was refused since the store was created, or since
    /// the last [`MemoryLimiter::forget_refusal`].
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }

    /// Starts a new request on a reused instance with a clean record.
    pub(crate) fn forget_refusal(&mut self) {
        self.refused = false;
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let used = self.used - current.min(self.used) + desired;
        if used > self.limit {
            self.refused = true;
            return Ok(false);
        }
        self.used = used;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The instance pool bounds tables.
        Ok(true)
    }
}

/// What the epoch callback does when a tick passes: yield, or stop the
/// guest past its deadline.
pub(crate) fn on_epoch_tick(deadline: Instant) -> UpdateDeadline {
    if Instant::now() >= deadline {
        UpdateDeadline::Interrupt
    } else {
        UpdateDeadline::Yield(1)
    }
}

/// Advances an engine's epoch every [`EPOCH_TICK`] on a thread of its own,
/// until dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        // A weak engine: the ticker must not keep the engine alive.
        let engine = engine.weak();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("epoch".to_owned())
            .spawn(move || tick(engine, stopped))
            .expect("cannot start the epoch thread");
        Self { stop }
    }
}

fn tick(engine: wasmtime::EngineWeak, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(EPOCH_TICK);
        match engine.upgrade() {
            Some(engine) => engine.increment_epoch(),
            None => return,
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_counts_every_memory_and_remembers_a_refusal() {
        let mut limiter = MemoryLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(
            limiter.memory_growing(0, 30, None).unwrap(),
            "a second memory"
        );
        assert!(!limiter.refused());
        assert!(
            !limiter.memory_growing(30, 50, None).unwrap(),
            "90 + 20 > 100"
        );
        assert!(limiter.refused());
        assert!(
            limiter.memory_growing(60, 70, None).unwrap(),
            "90 + 10 = 100"
        );
    }
}
