//! The Shoal host: many WebAssembly HTTP functions in one process.
//!
//! It owns what surrounds the runtime ([`shoal_runtime`]): the manifest,
//! the registry of functions and their routes, the HTTP server and the
//! command line. It knows nothing of wasmtime's internals.
//!
//! The path of a request through this crate:
//! 1. [`server`] accepts the connection (HTTP/1.1 or h2c) and keeps it
//!    honest (timeouts for silent and idle peers);
//! 2. [`dispatch`] gives the request its id ([`request_id`]) and looks its
//!    path up in the [`registry`]'s current table (the [`router`]: exact
//!    route, else the longest wildcard), keeping the function it found;
//! 3. [`admission`] lets it through the function's gate and the host's;
//! 4. the runtime runs it in a fresh instance of the function and streams
//!    the response back ([`body`]);
//! 5. a failure becomes a clear answer with the request id ([`answer`]).
//!
//! CloudEvents sent to the events path take the same path, routed by their
//! attributes instead of the URL ([`events`]).
//!
//! Functions change while requests flow through one serialised path,
//! [`registry::Registry::apply`]: `host run` feeds it the manifest at start,
//! on SIGHUP, and with `--watch` whenever the manifest or a component
//! changes ([`watch`]).
// `unsafe` is denied (workspace lints) but for the one call into the
// allocator in [`memory`].

pub mod admin;
pub mod admission;
pub mod answer;
pub mod body;
pub mod build;
pub mod cli;
pub mod deploy;
pub mod dispatch;
pub mod events;
pub mod knative;
pub mod manifest;
pub mod memory;
pub mod new;
pub mod outbox;
pub mod package;
pub mod probes;
pub mod registry;
pub mod request_id;
pub mod router;
pub mod server;
pub mod sizing;
pub mod telemetry;
pub mod watch;
