//! The errors a caller of the runtime branches on.

use std::path::PathBuf;
use std::time::Duration;

use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;

/// Why the runtime itself could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The wasmtime engine rejected its configuration.
    #[error("cannot create the wasmtime engine: {0:#}")]
    Engine(wasmtime::Error),
    /// The AOT artifact cache directory is unusable.
    #[error("cannot use the artifact cache at {}: {source}", path.display())]
    Cache {
        /// The cache directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
}

/// Why a component could not be loaded (compiled, linked, or mapped).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The component file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The component's path.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The path names something other than a regular file (a folder, a
    /// FIFO, a device).
    #[error("{} is not a regular file", path.display())]
    NotAFile {
        /// The component's path.
        path: PathBuf,
    },
    /// The file changed between the moment it was read and the moment it
    /// was compiled.
    #[error("{} changed while it was being loaded", path.display())]
    ChangedWhileLoading {
        /// The component's path.
        path: PathBuf,
    },
    /// The file is not WebAssembly at all.
    #[error("{} is not a WebAssembly component: it does not start with the `\\0asm` magic bytes", path.display())]
    NotWasm {
        /// The component's path.
        path: PathBuf,
    },
    /// The file is a core module, which cannot serve HTTP.
    #[error(
        "{} is a core WebAssembly module, not a component: build it for `wasm32-wasip2`, \
         or wrap it with `wasm-tools component new`",
        path.display()
    )]
    CoreModule {
        /// The component's path.
        path: PathBuf,
    },
    /// The component failed validation or compilation.
    #[error("{} does not compile: {message}", path.display())]
    Compile {
        /// The component's path.
        path: PathBuf,
        /// wasmtime's explanation, with its cause chain.
        message: String,
    },
    /// The component imports something the host does not provide.
    #[error("its imports cannot be satisfied: {message}")]
    Link {
        /// wasmtime's explanation, naming the import.
        message: String,
    },
    /// The compiled artifact could not be mapped.
    #[error("its compiled artifact cannot be mapped: {message}")]
    Map {
        /// wasmtime's explanation.
        message: String,
    },
    /// The component does not export `wasi:http/incoming-handler`.
    #[error("it is not a wasi:http handler: {message}")]
    NotHttpHandler {
        /// wasmtime's explanation.
        message: String,
    },
}

/// How a guest failed to finish a request.
#[derive(Debug, thiserror::Error)]
pub enum GuestFailure {
    /// The guest trapped: a panic, `unreachable`, an out-of-bounds access, a
    /// stack overflow...
    #[error("the function trapped: {0:#}")]
    Trap(wasmtime::Error),
    /// The guest needed more memory than its limit allows, and trapped (or
    /// could not be instantiated) for it.
    #[error("the function hit its memory limit of {limit} bytes: {error:#}")]
    MemoryLimit {
        /// The limit, in bytes.
        limit: u64,
        /// How it failed.
        error: wasmtime::Error,
    },
    /// The guest needed more memory than the host's budget for all
    /// instances had left, and trapped (or could not be instantiated) for it.
    #[error(
        "the host's memory budget of {budget} bytes is in use; the function could not get more: {error:#}"
    )]
    MemoryBudget {
        /// The budget, in bytes.
        budget: u64,
        /// How it failed.
        error: wasmtime::Error,
    },
    /// The guest was still running when its time was up; it was stopped.
    #[error("the function ran past its timeout of {0:?} and was stopped")]
    Timeout(Duration),
    /// No instance could be allocated: every slot of the pool is taken.
    #[error("no instance slot is free: {0:#}")]
    Overloaded(wasmtime::Error),
}

impl GuestFailure {
    /// The kind of trap, when the failure is one wasmtime classified.
    pub fn trap_code(&self) -> Option<wasmtime::Trap> {
        match self {
            Self::Trap(error)
            | Self::MemoryLimit { error, .. }
            | Self::MemoryBudget { error, .. } => error.downcast_ref::<wasmtime::Trap>().copied(),
            Self::Timeout(_) | Self::Overloaded(_) => None,
        }
    }
}

/// Why one request through a function did not produce a response.
///
/// A guest failure and an error code returned by the guest are kept apart:
/// the first is the function crashing or being stopped, the second is the
/// function saying it could not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The guest failed before it sent a response head.
    #[error(transparent)]
    Failed(GuestFailure),
    /// The request body grew past the function's limit (in bytes) before the
    /// function answered.
    #[error("the request body is larger than the function accepts ({0} bytes)")]
    BodyTooLarge(u64),
    /// The guest answered the response-outparam with an error code.
    #[error("the function returned the error code {0:?}")]
    GuestError(ErrorCode),
    /// The guest returned from its handler without ever sending a response.
    #[error("the function returned without sending a response")]
    NoResponse,
    /// The host could not set up the request for the guest.
    #[error("the host could not start the function: {0:#}")]
    Setup(wasmtime::Error),
}
