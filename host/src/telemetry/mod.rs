//! Telemetry: logs ([`logs`], written by [`log_writer`], a request's
//! fields in each of its lines by [`request_log`], span fields in JSON by
//! [`json_fields`]), panics logged like other errors ([`panics`]),
//! Prometheus metrics ([`metrics`]) and OpenTelemetry trace export
//! ([`traces`]).

#[cfg(test)]
mod captured;
mod json_fields;
mod log_writer;
pub mod logs;
pub mod metrics;
pub mod panics;
pub mod record;
pub mod request_log;
pub mod traces;
