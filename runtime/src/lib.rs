//! Shoal's WebAssembly runtime.
//!
//! It owns everything wasmtime: the one [`Runtime`] per process (the engine
//! with its pooling allocator, the linker with all of WASI 0.2 and
//! `wasi:http`, the cache of compiled artifacts), loading a component into a
//! [`Function`], and running one request through one fresh instance of it.
//! It knows nothing of sockets, routes, manifests or the command line.
//!
//! The path of a request through this crate:
//! 1. [`Function::handle`] creates a [`wasmtime::Store`] whose state
//!    ([`StoreState`]) holds the function's declared environment and routes
//!    the guest's stdout and stderr into the log, tagged with the request id;
//! 2. it instantiates the pre-linked component into a pooled slot;
//! 3. it calls `wasi:http/incoming-handler.handle` in the request's own
//!    task and returns the response head as soon as the guest sends it (a
//!    guest still running then goes on in a task of its own);
//! 4. the body ([`GuestBody`]) streams from the guest while the caller reads
//!    it, and ends when the guest returns; the instance is then dropped, in
//!    a task of its own that runs once the answer is written, and its slot
//!    goes back to the pool.
#![deny(missing_docs)]

/// The wasmtime version the runtime is built on (pinned in the workspace's
/// `Cargo.toml`; a test keeps the two equal).
pub const WASMTIME_VERSION: &str = "48.0.8";

mod artifact;
mod background;
mod cache;
mod engine;
mod error;
mod function;
mod guest_log;
mod kept;
mod limits;
mod outbound;
mod precompile;
mod ready;
mod reuse;
mod source;
mod store;
mod swap;
mod waiting;

pub use artifact::{Artifact, Provenance};
pub use background::send_answers_with;
pub use cache::{Collected, UNUSED_ARTIFACT_GRACE};
pub use engine::{
    Allocation, DEFAULT_KEEP_CODE, DEFAULT_MAX_INSTANCES, MemoryReset, Runtime, RuntimeConfig,
    TargetCpu, WhyReleased,
};
pub use error::{GuestFailure, HandleError, LoadError, RuntimeError};
pub use function::{BodyError, Function, FunctionSpec, GuestBody};
pub use guest_log::{MAX_OUTPUT_PER_REQUEST, OUTPUT_BURST, OUTPUT_RATE, OutputLimits};
pub use limits::{
    DEFAULT_MAX_BODY, DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT, EPOCH_TICK, Limits, MemoryBudget,
};
pub use outbound::{
    CallBody, CallError, CallFuture, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FIRST_BYTE_TIMEOUT,
    MAX_SELF_HOPS, OutboundPolicy, OutboundRule, OwnHost, PROPAGATED_HEADERS, SELF_HOPS_HEADER,
};
pub use precompile::Precompiler;
pub use ready::DEFAULT_READY_INSTANCES;
pub use source::{ComponentSource, Digest};
pub use store::StoreState;
pub use swap::may_swap;
/// The error code a guest can answer a request with (`wasi:http/types.error-code`).
pub use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;

#[cfg(test)]
mod tests {
    #[test]
    fn the_wasmtime_version_constant_matches_the_pin() {
        let manifest = include_str!("../../Cargo.toml");
        let pin = format!("wasmtime = {{ version = \"={}\"", super::WASMTIME_VERSION);
        assert!(
            manifest.contains(&pin),
            "Cargo.toml does not pin wasmtime {}",
            super::WASMTIME_VERSION
        );
    }
}
