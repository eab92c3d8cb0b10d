//! Telemetry: logs ([`logs`]), panics logged like other errors
//! ([`panics`]), Prometheus metrics ([`metrics`]) and OpenTelemetry trace
//! export ([`traces`]).

pub mod logs;
pub mod metrics;
pub mod panics;
pub mod record;
pub mod traces;
