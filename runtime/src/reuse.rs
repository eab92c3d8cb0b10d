//! Instance reuse, for functions that opt in.
//!
//! By default every request gets a fresh instance, so nothing one request
//! leaves in memory is seen by the next. A trusted, stateless function can
//! instead let one instance serve up to `max_uses` requests, one after the
//! other (a WASIp2 instance is never entered twice at once), which skips
//! instantiation and the reset of its memory. An instance that trapped is
//! never reused.

use std::sync::Mutex;

use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

use crate::store::StoreState;

/// The most idle instances kept per function. Each holds a slot of the
/// instance pool, so the bound keeps one function from holding them all.
pub(crate) const MAX_IDLE_INSTANCES: usize = 32;

/// An instance between two requests.
pub(crate) struct Reusable {
    pub(crate) store: Store<StoreState>,
    pub(crate) proxy: Proxy,
    /// Requests it has served.
    pub(crate) uses: u32,
}

/// The idle instances of one function.
pub(crate) struct InstancePool {
    idle: Mutex<Vec<Reusable>>,
    max_uses: u32,
}

impl InstancePool {
    pub(crate) fn new(max_uses: u32) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            max_uses,
        }
    }

    /// The most recently used idle instance, if any.
    pub(crate) fn take(&self) -> Option<Reusable> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// How many instances wait for a request.
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Keeps `instance` for another request, unless it has served its
    /// share or enough instances are idle already.
    pub(crate) fn put(&self, instance: Reusable) {
        if instance.uses >= self.max_uses {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_INSTANCES {
            idle.push(instance);
        }
    }
}
