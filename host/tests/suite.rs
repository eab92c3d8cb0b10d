//! The host's integration tests, in one test binary: each file beside this
//! one is a module of it, sharing `common`. One binary links once and keeps
//! the build small on disk (twenty binaries took ~350 MB and twenty links).
//! Run one file's tests with a filter: `cargo test -p shoal-host --test suite
//! limits::`.

mod common;

mod builds;
mod chaos;
mod cli;
mod deploy;
mod events;
mod failures;
mod hardening;
mod isolation;
mod knative;
mod knative_yaml;
mod lifecycle;
mod limits;
mod live;
mod new;
mod outbound;
mod package;
mod polyglot;
mod properties;
mod serve;
mod shutdown;
mod startup;
mod telemetry;
