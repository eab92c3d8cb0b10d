//! The limits one instance runs under, and how they are enforced.
//!
//! - Memory: a [`ResourceLimiter`] refuses growth that would take the
//!   instance's linear memories (all of them together) past the limit. The
//!   guest sees `memory.grow` fail; if it then traps (Rust aborts on a
//!   failed allocation), the failure is reported as the memory limit, not as
//!   a plain trap.
//! - Memory, host-wide: every instance's linear memory is also drawn from
//!   one [`MemoryBudget`] for the whole host, and given back when the
//!   instance is dropped, so that many instances each within their own
//!   limit cannot together take more than the host may use (a container's
//!   memory limit). Growing an instance's memory may use the budget up to
//!   its last [`MemoryBudget::headroom`]; only instantiating may use that
//!   last part, so that however hard some functions grow, every function
//!   can still start an instance and answer. A refusal by the budget is
//!   reported as such.
//! - Time: a deadline for the whole request, from instantiation until the
//!   guest returns. The engine's epoch advances every [`EPOCH_TICK`]; running
//!   wasm checks it and, on each tick, either yields to the async executor
//!   (so a spinning guest cannot hold a thread) or, past the deadline, stops
//!   with an interrupt trap. A guest waiting on the host (a sleep, a slow
//!   body) is stopped by a timer around the call instead.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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

/// The linear memory all instances of the host may hold together.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    headroom: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            headroom: (limit / 8).clamp(limit.min(16 << 20), 256 << 20),
            used: AtomicU64::new(0),
        }
    }

    /// Bytes in all.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held by instances now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The last bytes of the budget, which only instantiation may take.
    pub fn headroom(&self) -> u64 {
        self.headroom
    }

    /// Takes `bytes` if they fit: in the whole budget when `instantiating`,
    /// else in all but its headroom.
    fn take(&self, bytes: u64, instantiating: bool) -> bool {
        let ceiling = if instantiating {
            self.limit
        } else {
            self.limit - self.headroom
        };
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= ceiling)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Which limit refused an instance memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The function's own `memory` limit.
    Instance,
    /// The host's budget.
    Host,
}

/// A store's memory limiter: counts every linear memory of the instance
/// against its own limit and the host's budget, gives the budget back when
/// dropped, and remembers which limit refused growth, if one did.
pub(crate) struct MemoryLimiter {
    limit: usize,
    used: usize,
    refused: Option<Refusal>,
    budget: Arc<MemoryBudget>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64, budget: Arc<MemoryBudget>) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            used: 0,
            refused: None,
            budget,
        }
    }

    /// Which limit refused growth since the store was created, or since
    /// the last [`MemoryLimiter::forget_refusal`], if one did.
    pub(crate) fn refused(&self) -> Option<Refusal> {
        self.refused
    }

    /// Starts a new request on a reused instance with a clean record.
    pub(crate) fn forget_refusal(&mut self) {
        self.refused = None;
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.budget.give_back(self.used as u64);
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
            self.refused = Some(Refusal::Instance);
            return Ok(false);
        }
        // A memory created at instantiation starts from nothing.
        let instantiating = current == 0;
        let more = desired.saturating_sub(current) as u64;
        if !self.budget.take(more, instantiating) {
            self.refused = Some(Refusal::Host);
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
        crate::background::guest_yields();
        UpdateDeadline::Yield(1)
    }
}

/// Advances an engine's epoch every [`EPOCH_TICK`] on a thread of its own,
/// while some guest may be running, until dropped. With no guest running the
/// thread sleeps (parked) rather than wake a thousand times a second for
/// nothing: an idle host stays idle.
pub(crate) struct EpochTicker {
    shared: Arc<Ticking>,
}

/// What the ticker and the guests share.
struct Ticking {
    /// Guests that may run wasm now (from instantiation to their end).
    running: AtomicUsize,
    stop: AtomicBool,
    /// The ticker's thread, to wake when the first guest starts.
    thread: std::thread::Thread,
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine) -> Self {
        // A weak engine: the ticker must not keep the engine alive.
        let engine = engine.weak();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("epoch".to_owned())
            .spawn(move || {
                let shared: Arc<Ticking> = rx.recv().expect("the ticker's shared state");
                tick(&engine, &shared);
            })
            .expect("cannot start the epoch thread");
        let shared = Arc::new(Ticking {
            running: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            thread: thread.thread().clone(),
        });
        tx.send(shared.clone())
            .expect("the epoch thread waits for it");
        Self { shared }
    }

    /// A handle for functions to take [`Running`] guards from.
    pub(crate) fn handle(&self) -> EpochHandle {
        EpochHandle(self.shared.clone())
    }
}

/// Takes [`Running`] guards; held by every warm function.
#[derive(Clone)]
pub(crate) struct EpochHandle(Arc<Ticking>);

impl EpochHandle {
    /// Marks a guest as running until the guard is dropped: the epoch
    /// advances (and deadlines are enforced) while any guard lives.
    pub(crate) fn running(&self) -> Running {
        if self.0.running.fetch_add(1, Ordering::SeqCst) == 0 {
            self.0.thread.unpark();
        }
        Running(self.0.clone())
    }
}

/// A guest that may be running wasm; see [`EpochHandle::running`].
pub(crate) struct Running(Arc<Ticking>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

fn tick(engine: &wasmtime::EngineWeak, shared: &Ticking) {
    loop {
        // An unpark between the load and the park makes the park return
        // at once: a guest that starts is never missed.
        while shared.running.load(Ordering::SeqCst) == 0 && !shared.stop.load(Ordering::SeqCst) {
            std::thread::park();
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(EPOCH_TICK);
        match engine.upgrade() {
            Some(engine) => engine.increment_epoch(),
            None => return,
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.thread.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unlimited() -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget::new(u64::MAX))
    }

    #[test]
    fn the_limiter_counts_every_memory_and_remembers_a_refusal() {
        let mut limiter = MemoryLimiter::new(100, unlimited());
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(
            limiter.memory_growing(0, 30, None).unwrap(),
            "a second memory"
        );
        assert_eq!(limiter.refused(), None);
        assert!(
            !limiter.memory_growing(30, 50, None).unwrap(),
            "90 + 20 > 100"
        );
        assert_eq!(limiter.refused(), Some(Refusal::Instance));
        assert!(
            limiter.memory_growing(60, 70, None).unwrap(),
            "90 + 10 = 100"
        );
    }

    #[test]
    fn instances_draw_from_the_host_budget_and_give_it_back() {
        const MIB: usize = 1 << 20;
        let budget = Arc::new(MemoryBudget::new(160 << 20));
        assert_eq!(budget.headroom(), 20 << 20);
        let limiter = || MemoryLimiter::new(1 << 30, budget.clone());

        // Two instances grow to 70 MiB each: 140 MiB, the budget less its
        // headroom; a third cannot grow past its first memory.
        let (mut a, mut b, mut c) = (limiter(), limiter(), limiter());
        for instance in [&mut a, &mut b] {
            assert!(instance.memory_growing(0, MIB, None).unwrap());
            assert!(instance.memory_growing(MIB, 70 * MIB, None).unwrap());
        }
        assert!(
            c.memory_growing(0, MIB, None).unwrap(),
            "instantiation uses the headroom"
        );
        assert!(!c.memory_growing(MIB, 2 * MIB, None).unwrap());
        assert_eq!(c.refused(), Some(Refusal::Host));
        assert_eq!(budget.used(), 141 << 20);

        // Dropped instances give their memory back.
        drop(a);
        assert_eq!(budget.used(), 71 << 20);
        assert!(c.memory_growing(MIB, 60 * MIB, None).unwrap());
        drop((b, c));
        assert_eq!(budget.used(), 0);
    }
}
