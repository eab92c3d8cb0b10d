//! Instance reuse, for functions that opt in.
//!
//! By default every request gets a fresh instance, so nothing one request
//! leaves in memory is seen by the next. A trusted, stateless function can
//! instead let one instance serve up to `max_uses` requests, one after the
//! other (a WASIp2 instance is never entered twice at once), which skips
//! instantiation and the reset of its memory. An instance that trapped is
//! never reused.
//!
//! An idle instance holds a slot of the instance pool without a request:
//! the host counts idle instances as waiting instances (see
//! [`crate::waiting`]), so that they never hold a slot an admitted request
//! of another function needs. Past the host's cap, a used instance is
//! dropped instead of kept.

use std::sync::{Arc, Mutex};

use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

use crate::store::StoreState;
use crate::waiting::{Place, WaitingInstances};

/// The most idle instances kept per function, so that one function does
/// not hold all the host's.
pub(crate) const MAX_IDLE_INSTANCES: usize = 32;

/// The most idle instances kept across the host (at most a quarter of
/// `max_instances`, and at least one).
pub(crate) const IDLE_INSTANCES: u32 = 64;

/// An instance between two requests.
pub(crate) struct Reusable {
    pub(crate) store: Store<StoreState>,
    pub(crate) proxy: Proxy,
    /// Requests it has served.
    pub(crate) uses: u32,
}

/// The idle instances of one function, each with its place in the host's
/// count.
pub(crate) struct InstancePool {
    idle: Mutex<Vec<(Reusable, Place)>>,
    max_uses: u32,
    host: Arc<WaitingInstances>,
}

impl InstancePool {
    pub(crate) fn new(max_uses: u32, host: Arc<WaitingInstances>) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            max_uses,
            host,
        }
    }

    /// The most recently used idle instance, if any.
    pub(crate) fn take(&self) -> Option<Reusable> {
        let (instance, _place) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        Some(instance)
    }

    /// How many instances wait for a request.
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Keeps `instance` for another request, unless it has served its
    /// share or enough instances are idle already, in the function or in
    /// the host.
    pub(crate) fn put(&self, instance: Reusable) {
        if instance.uses >= self.max_uses {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= MAX_IDLE_INSTANCES {
            return;
        }
        if let Some(place) = self.host.reserve() {
            idle.push((instance, place));
        }
    }
}
