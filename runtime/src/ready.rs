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
//! Each function keeps at most one ready instance (and makes one at a
//! time), and the host at most `--ready-instances`, counted as waiting
//! instances (see [`crate::waiting`]): past that, or while the memory budget
//! is more than half used, nothing is made ahead. A ready instance goes
//! when its function scales to zero, is replaced, or is removed.

use std::sync::{Arc, Mutex, Weak};

use crate::reuse::Reusable;
use crate::waiting::{Place, WaitingInstances};

/// The fresh instances kept ready across the host, by default.
pub const DEFAULT_READY_INSTANCES: u32 = 64;

/// A ready instance and the place it counts in.
struct Ready {
    instance: Reusable,
    _place: Place,
}

/// One function's ready instance, if it has one.
pub(crate) struct ReadySlot {
    state: Mutex<SlotState>,
    host: Arc<WaitingInstances>,
}

#[derive(Default)]
struct SlotState {
    ready: Option<Ready>,
    /// An instance is being made for it: requests that finish meanwhile do
    /// not make another.
    making: bool,
}

impl ReadySlot {
    pub(crate) fn new(host: Arc<WaitingInstances>) -> Self {
        Self {
            state: Mutex::new(SlotState::default()),
            host,
        }
    }

    /// The ready instance, if there is one; it is no longer counted.
    pub(crate) fn take(&self) -> Option<Reusable> {
        let ready = self.lock().ready.take()?;
        Some(ready.instance)
    }

    /// Whether an instance is ready.
    pub(crate) fn is_ready(&self) -> bool {
        self.lock().ready.is_some()
    }

    /// Makes the slot's instance with `make`, unless the slot has one or
    /// one is being made, or the host has no room for one more.
    pub(crate) async fn fill<F>(slot: &Weak<Self>, make: F)
    where
        F: AsyncFnOnce() -> Option<Reusable>,
    {
        let place = {
            let Some(slot) = slot.upgrade() else { return };
            let mut state = slot.lock();
            if state.ready.is_some() || state.making {
                return;
            }
            let Some(place) = slot.host.reserve() else {
                return;
            };
            state.making = true;
            place
        };
        let _making = Making(slot);
        let made = make().await;
        // The function may have gone meanwhile (scaled to zero, replaced):
        // then the instance goes too.
        let Some(slot) = slot.upgrade() else { return };
        let mut state = slot.lock();
        if let Some(instance) = made {
            state.ready = Some(Ready {
                instance,
                _place: place,
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Ends a slot's `making` when dropped, also when the making is dropped
/// half-way (its task stopped): the slot never waits for an instance that
/// nobody makes.
struct Making<'a>(&'a Weak<ReadySlot>);

impl Drop for Making<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.0.upgrade() {
            slot.lock().making = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future as _;

    use super::*;
    use crate::limits::MemoryBudget;

    /// The host's count (room for 8), a slot taking places from it, and a
    /// weak reference to the slot.
    fn slot() -> (Arc<WaitingInstances>, Arc<ReadySlot>, Weak<ReadySlot>) {
        let host = Arc::new(WaitingInstances::new(
            8,
            Arc::new(MemoryBudget::new(u64::MAX)),
        ));
        let slot = Arc::new(ReadySlot::new(host.clone()));
        let weak = Arc::downgrade(&slot);
        (host, slot, weak)
    }

    #[test]
    fn one_instance_at_a_time_is_made_for_a_slot() {
        let (host, _slot, weak) = slot();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let first = ReadySlot::fill(&weak, async || {
            released.await.ok();
            None
        });
        let mut first = std::pin::pin!(first);
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert_eq!(host.count(), 1, "the place is taken while it is made");

        // A second request done meanwhile makes nothing more.
        let mut made_again = false;
        let second = ReadySlot::fill(&weak, async || {
            made_again = true;
            None
        });
        assert!(std::pin::pin!(second).poll(&mut cx).is_ready());
        assert!(!made_again, "a second instance was made for one slot");

        // Making it failed: the place goes back, and the slot may try again.
        release.send(()).unwrap();
        assert!(first.as_mut().poll(&mut cx).is_ready());
        assert_eq!(host.count(), 0);
        let third = ReadySlot::fill(&weak, async || {
            made_again = true;
            None
        });
        assert!(std::pin::pin!(third).poll(&mut cx).is_ready());
        assert!(made_again);
    }

    #[test]
    fn a_making_dropped_half_way_leaves_the_slot_free() {
        let (host, _slot, weak) = slot();
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        {
            let stopped = ReadySlot::fill(&weak, async || std::future::pending().await);
            assert!(std::pin::pin!(stopped).poll(&mut cx).is_pending());
        }
        assert_eq!(host.count(), 0, "the place goes with the making");
        let mut made = false;
        let next = ReadySlot::fill(&weak, async || {
            made = true;
            None
        });
        assert!(std::pin::pin!(next).poll(&mut cx).is_ready());
        assert!(made, "the slot still waits for the stopped making");
    }
}
