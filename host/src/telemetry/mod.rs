//! Telemetry: logs ([`logs`]) and Prometheus metrics ([`metrics`]).

pub mod logs;
pub mod metrics;
pub mod record;
