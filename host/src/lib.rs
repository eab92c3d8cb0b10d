//! The Shoal host: many WebAssembly HTTP functions in one process.
//!
//! It owns what surrounds the runtime ([`shoal_runtime`]): the manifest,
//! the registry of functions and their routes, the HTTP server and the
//! command line. It knows nothing of wasmtime's internals.
//!
//! The path of a request through this crate:
//! 1. [`server`] accepts the connection (HTTP/1.1 or h2c) and gives the
//!    request its id ([`request_id`]);
//! 2. [`registry`] finds the function through the [`router`] (exact route,
//!    else the longest wildcard);
//! 3. the runtime runs the request in a fresh instance of the function and
//!    streams its response back ([`body`]);
//! 4. a failure becomes a clear answer with the request id ([`error`]).
#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod body;
pub mod cli;
pub mod error;
pub mod manifest;
pub mod registry;
pub mod request_id;
pub mod router;
pub mod server;
pub mod sizing;
pub mod telemetry;
