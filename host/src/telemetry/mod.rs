//! Telemetry: logs ([`logs`]), Prometheus metrics ([`metrics`]) and
//! OpenTelemetry trace export ([`traces`]).

pub mod logs;
pub mod metrics;
pub mod record;
pub mod traces;
