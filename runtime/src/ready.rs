//! Fresh instances made ahead of their request.
//!
//! Once a fresh-instance function has answered a request, the task that
//! drops the used instance (after the answer is written) also instantiates
//! the next one and keeps it ready: the next request skips store creation
//! and instantiation, which leave its latency. The ready instance has run
//! no request, and serves exactly one before it is dropped, like any fresh
//! instance; only its creation moved earlier. Whatever its start code (if
//! any) writes is logged without a request id.
//!
//! Each function keeps at most one ready instance, and the host at most
//! [`ReadyInstances::cap`]: the pool holds that many slots beyond the
//! instances it admits requests for, so ready instances never take a slot a
//! request needs. Past the cap, or while the memory budget is more than
//! half used, nothing is made ahead. A ready instance goes when its
//! function scales to zero, is replaced, or is removed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::limits::MemoryBudget;
use crate::reuse::Reusable;

/// The fresh instances kept ready across the host, by default.
pub const DEFAULT_READY_INSTANCES: u32 = 64;

/// The host's count of ready instances (made, or being made).
pub(crate) struct ReadyInstances {
    cap: usize,
    count: AtomicUsize,
    budget: Arc<MemoryBudget>,
}

impl ReadyInstances {
    pub(crate) fn new(cap: u32, budget: Arc<MemoryBudget>) -> Self {
        Self {
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            count: AtomicUsize::new(0),
            budget,
        }
    }

    /// The most ready instances at once; 0 makes none.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Ready instances now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// A place for one more ready instance, if the cap and the memory
    /// budget leave room for it.
    fn reserve(self: &Arc<Self>) -> Option<Place> {
        let budget = &self.budget;
        if budget.used() > (budget.limit() - budget.headroom()) / 2 {
            return None;
        }
        self.count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |count| {
                (count < self.cap).then_some(count + 1)
            })
            .ok()?;
        Some(Place(self.clone()))
    }
}

/// One counted ready instance; counted until dropped.
struct Place(Arc<ReadyInstances>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A ready instance and the place it counts in.
struct Ready {
    instance: Reusable,
    _place: Place,
}

/// One function's ready instance, if it has one.
pub(crate) struct ReadySlot {
    ready: Mutex<Option<Ready>>,
    host: Arc<ReadyInstances>,
}

impl ReadySlot {
    pub(crate) fn new(host: Arc<ReadyInstances>) -> Self {
        Self {
            ready: Mutex::new(None),
            host,
        }
    }

    /// The ready instance, if there is one; it is no longer counted.
    pub(crate) fn take(&self) -> Option<Reusable> {
        let ready = self.lock().take()?;
        Some(ready.instance)
    }

    /// Whether an instance is ready.
    pub(crate) fn is_ready(&self) -> bool {
        self.lock().is_some()
    }

    /// Counts one more ready instance for this slot, unless it has one or
    /// the host has no room: `make` is then run to make it.
    pub(crate) async fn fill<F>(slot: &Weak<Self>, make: F)
    where
        F: AsyncFnOnce() -> Option<Reusable>,
    {
        let place = {
            let Some(slot) = slot.upgrade() else { return };
            if slot.is_ready() {
                return;
            }
            let Some(place) = slot.host.reserve() else {
                return;
            };
            place
        };
        let Some(instance) = make().await else { return };
        let ready = Ready {
            instance,
            _place: place,
        };
        // The function may have gone (scaled to zero, replaced) meanwhile,
        // or another request may have made one first: then this one goes.
        if let Some(slot) = slot.upgrade() {
            let mut current = slot.lock();
            if current.is_none() {
                *current = Some(ready);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Ready>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter as _;

    use super::*;
    use crate::limits::MemoryLimiter;

    const MIB: usize = 1 << 20;

    #[test]
    fn places_are_bounded_by_the_cap_and_given_back_when_dropped() {
        let host = Arc::new(ReadyInstances::new(
            2,
            Arc::new(MemoryBudget::new(u64::MAX)),
        ));
        let first = host.reserve().expect("a first place");
        let second = host.reserve().expect("a second place");
        assert!(host.reserve().is_none(), "a third place past the cap");
        assert_eq!(host.count(), 2);
        drop(first);
        assert_eq!(host.count(), 1);
        assert!(host.reserve().is_some());
        drop(second);
        assert_eq!(host.count(), 0);
    }

    #[test]
    fn nothing_is_made_ahead_while_the_budget_is_more_than_half_used() {
        // 64 MiB, 16 of them headroom: half of the other 48 is 24.
        let budget = Arc::new(MemoryBudget::new(64 * MIB as u64));
        assert_eq!(budget.headroom(), 16 * MIB as u64);
        let host = Arc::new(ReadyInstances::new(8, budget.clone()));
        let mut instance = MemoryLimiter::new(u64::MAX, budget.clone());
        assert!(instance.memory_growing(0, 24 * MIB, None).unwrap());
        assert!(host.reserve().is_some(), "half used leaves room");
        assert!(instance.memory_growing(24 * MIB, 25 * MIB, None).unwrap());
        assert!(host.reserve().is_none(), "more than half used");
        drop(instance);
        assert!(host.reserve().is_some(), "the budget was given back");
    }
}
