//! Telemetry: logs ([`logs`], written by [`log_writer`]), panics logged
//! like other errors ([`panics`]), Prometheus metrics ([`metrics`]) and
//! OpenTelemetry trace export ([`traces`]).

mod log_writer;
pub mod logs;
pub mod metrics;
pub mod panics;
pub mod record;
pub mod traces;
