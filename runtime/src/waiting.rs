//! Instances that wait for a request: made ahead of it, or idle between two
//! requests of a function that reuses instances.
//!
//! The host admits at most `max_instances` requests at once, and the
//! instance pool has that many slots for them. An instance that waits holds
//! a slot too, without a request, so the pool has slots beyond those for
//! waiting instances, and a [`WaitingInstances`] counts them: past its cap,
//! or while the memory budget is more than half used, no more wait (an
//! instance is not made ahead; a used one is dropped instead of kept). A
//! waiting instance thus never takes a slot an admitted request needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::limits::MemoryBudget;

/// A host-wide count of one kind of waiting instance, with its cap.
pub(crate) struct WaitingInstances {
    cap: usize,
    count: AtomicUsize,
    budget: Arc<MemoryBudget>,
}

impl WaitingInstances {
    pub(crate) fn new(cap: u32, budget: Arc<MemoryBudget>) -> Self {
        Self {
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            count: AtomicUsize::new(0),
            budget,
        }
    }

    /// The most at once; 0 lets none wait.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Waiting now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// A place for one more, if the cap and the memory budget leave room.
    pub(crate) fn reserve(self: &Arc<Self>) -> Option<Place> {
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

/// One counted waiting instance; counted until dropped.
pub(crate) struct Place(Arc<WaitingInstances>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Relaxed);
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
        let host = Arc::new(WaitingInstances::new(
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
    fn none_wait_while_the_budget_is_more_than_half_used() {
        // 64 MiB, 16 of them headroom: half of the other 48 is 24.
        let budget = Arc::new(MemoryBudget::new(64 * MIB as u64));
        assert_eq!(budget.headroom(), 16 * MIB as u64);
        let host = Arc::new(WaitingInstances::new(8, budget.clone()));
        let mut instance = MemoryLimiter::new(u64::MAX, budget.clone());
        assert!(instance.memory_growing(0, 24 * MIB, None).unwrap());
        assert!(host.reserve().is_some(), "half used leaves room");
        assert!(instance.memory_growing(24 * MIB, 25 * MIB, None).unwrap());
        assert!(host.reserve().is_none(), "more than half used");
        drop(instance);
        assert!(host.reserve().is_some(), "the budget was given back");
    }
}
