//! The errors a caller of the runtime branches on.

use std::path::PathBuf;

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
    /// The artifact file changed on disk after it was checked.
    #[error("its compiled artifact {} changed on disk after it was checked", path.display())]
    ArtifactChanged {
        /// The artifact file.
        path: PathBuf,
    },
    /// The component does not export `wasi:http/incoming-handler`.
    #[error("it is not a wasi:http handler: {message}")]
    NotHttpHandler {
        /// wasmtime's explanation.
        message: String,
    },
}

/// Why one request through a function did not produce a response.
///
/// A trap and an error code returned by the guest are kept apart: the first
/// is the function crashing (500), the second is the function saying it
/// could not produce a response (502).
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access...)
    /// before it sent a response.
    #[error("the function trapped: {0:?}")]
    Trap(wasmtime::Error),
    /// The guest answered the response-outparam with an error code.
    #[error("the function returned the error code {0:?}")]
    GuestError(ErrorCode),
    /// The guest returned from its handler without ever sending a response.
    #[error("the function returned without sending a response")]
    NoResponse,
    /// The host could not set up the request for the guest.
    #[error("the host could not start the function: {0:?}")]
    Setup(wasmtime::Error),
}
