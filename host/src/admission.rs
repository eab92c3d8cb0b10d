//! Admission control: how many requests run at once, how many may wait, and
//! for how long, before the host answers 503 instead of piling them up.
//!
//! Each function has its own gate (its `max_concurrency`, `max_queue` and
//! `queue_timeout`), and the host has one more in front of the instance
//! pool, so that a flood on one function fills that function's queue, not
//! the host. A request that finds the queue full is refused at once; one
//! that waits past the queue timeout is refused then. Both answers carry
//! `Retry-After`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// In-flight requests per function, unless its manifest says otherwise.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 100;

/// Requests waiting per function, unless its manifest says otherwise.
pub const DEFAULT_MAX_QUEUE: u32 = 100;

/// How long a request may wait for its turn, unless its manifest says
/// otherwise.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// The `Retry-After` a refused request is told, in seconds.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// The limits of one gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateLimits {
    /// Requests admitted at once.
    pub max_concurrency: u32,
    /// Requests waiting for a place; past it, refused at once.
    pub max_queue: u32,
    /// How long a request waits before it is refused.
    pub queue_timeout: Duration,
}

impl Default for GateLimits {
    fn default() -> Self {
        Self {
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            max_queue: DEFAULT_MAX_QUEUE,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every place and every queue slot was taken.
    QueueFull {
        /// The concurrency limit.
        max_concurrency: u32,
        /// The queue's length.
        max_queue: u32,
    },
    /// The request waited its whole queue timeout.
    QueueTimeout(Duration),
}

/// A gate: a bounded number of places and a bounded queue before them.
#[derive(Debug)]
pub struct Gate {
    limits: GateLimits,
    places: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// A place through a gate, held until the request is done.
#[derive(Debug)]
pub struct Admitted(#[allow(dead_code)] OwnedSemaphorePermit);

impl Gate {
    /// A gate with `limits`.
    pub fn new(limits: GateLimits) -> Self {
        Self {
            limits,
            places: Arc::new(Semaphore::new(limits.max_concurrency as usize)),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Its limits.
    pub fn limits(&self) -> GateLimits {
        self.limits
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A place, at once if one is free, else after waiting in the queue.
    /// A caller that stops waiting (its future dropped: the client went
    /// away) gives its queue place back.
    pub async fn admit(&self) -> Result<Admitted, Refusal> {
        if let Ok(place) = self.places.clone().try_acquire_owned() {
            return Ok(Admitted(place));
        }
        let Some(_queued) = Queued::join(&self.waiting, self.limits.max_queue) else {
            return Err(Refusal::QueueFull {
                max_concurrency: self.limits.max_concurrency,
                max_queue: self.limits.max_queue,
            });
        };
        match tokio::time::timeout(
            self.limits.queue_timeout,
            self.places.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(place)) => Ok(Admitted(place)),
            // The semaphore is never closed.
            Ok(Err(_)) | Err(_) => Err(Refusal::QueueTimeout(self.limits.queue_timeout)),
        }
    }
}

/// A place in a gate's queue, given back when dropped, however the wait
/// ends.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    /// Takes a place in a queue of `max` holding `waiting`, if one is free.
    fn join(waiting: &'a AtomicUsize, max: u32) -> Option<Self> {
        waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max as usize).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(waiting))
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_gate_queues_then_refuses() {
        let gate = Gate::new(GateLimits {
            max_concurrency: 1,
            max_queue: 1,
            queue_timeout: Duration::from_millis(50),
        });
        let first = gate.admit().await.unwrap();
        // The second waits its timeout, then is refused.
        assert_eq!(
            gate.admit().await.unwrap_err(),
            Refusal::QueueTimeout(Duration::from_millis(50))
        );
        // While one waits, a third finds the queue full.
        let (waiting, full) = tokio::join!(gate.admit(), async {
            tokio::task::yield_now().await;
            gate.admit().await
        });
        assert!(matches!(full, Err(Refusal::QueueFull { .. })));
        assert!(waiting.is_err());
        // Once the place is free, the next is admitted at once.
        drop(first);
        assert!(gate.admit().await.is_ok());
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_queue() {
        let gate = Gate::new(GateLimits {
            max_concurrency: 1,
            max_queue: 1,
            queue_timeout: Duration::from_secs(60),
        });
        let running = gate.admit().await.unwrap();
        // A waiter whose caller stops waiting (a client gone), twice.
        for _ in 0..2 {
            let waiter = tokio::time::timeout(Duration::from_millis(10), gate.admit()).await;
            assert!(waiter.is_err(), "it was still waiting");
            assert_eq!(gate.waiting(), 0);
        }
        // The queue place is free again: the next one waits, and gets in.
        let next = tokio::spawn(async move {
            let place = gate.admit().await;
            (place.is_ok(), gate)
        });
        tokio::task::yield_now().await;
        drop(running);
        let (admitted, gate) = next.await.unwrap();
        assert!(admitted);
        assert_eq!(gate.waiting(), 0);
    }
}
