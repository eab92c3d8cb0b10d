//! Prometheus metrics, served at `GET /metrics` on the admin listener.
//!
//! Every per-function series is labelled by the function's name only (never
//! by path), so the number of series is bounded by the manifest. A
//! function's counters are resolved once, on its first request
//! ([`FunctionMetrics`]): counting a request is then an atomic add, not a
//! label lookup, and the thousands of functions a host may register but
//! never call hold no series. Gauges (requests in flight, waiting, the
//! lifecycle) are read from the registry when scraped.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry as PromRegistry, TextEncoder,
};

use crate::registry::Registry;
use crate::registry::entry::LifeState;

/// Request duration buckets, in seconds: 250 µs to 60 s.
const DURATION_BUCKETS: [f64; 16] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    60.0,
];

/// Cold start buckets, in seconds: 100 µs to 1 s.
const COLD_START_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Why a request was turned away before it ran.
#[derive(Debug, Clone, Copy)]
pub enum RejectReason {
    /// The function's queue was full.
    QueueFull,
    /// The request waited the function's queue timeout.
    QueueTimeout,
    /// The host-wide gate (instance pool) refused it.
    HostOverloaded,
    /// Its body was larger than `max_body`.
    BodyTooLarge,
}

/// How a function failed a request.
#[derive(Debug, Clone, Copy)]
pub enum FailureKind {
    /// It trapped.
    Trap,
    /// It ran past its timeout.
    Timeout,
    /// It hit its memory limit.
    MemoryLimit,
}

impl FailureKind {
    /// The kind of a guest failure that counts as one (a full pool counts
    /// as a rejection instead).
    pub fn of(failure: &shoal_runtime::GuestFailure) -> Option<Self> {
        use shoal_runtime::GuestFailure;
        match failure {
            GuestFailure::Trap(_) => Some(Self::Trap),
            GuestFailure::Timeout(_) => Some(Self::Timeout),
            GuestFailure::MemoryLimit { .. } => Some(Self::MemoryLimit),
            GuestFailure::Overloaded(_) => None,
        }
    }
}

/// The host's metrics.
pub struct Metrics {
    registry: PromRegistry,
    requests: IntCounterVec,
    unrouted: IntCounter,
    duration: HistogramVec,
    cold_starts: IntCounterVec,
    cold_start_duration: HistogramVec,
    rejections: IntCounterVec,
    failures: [IntCounterVec; 3],
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
    in_flight: IntGaugeVec,
    waiting: IntGaugeVec,
    functions: IntGaugeVec,
}

/// One function's counters, resolved once; cloning is one reference count.
#[derive(Clone)]
pub struct FunctionMetrics(Arc<Counters>);

struct Counters {
    /// Responses by status class, `1xx` to `5xx`.
    responses: [IntCounter; 5],
    duration: Histogram,
    cold_starts: IntCounter,
    cold_start_duration: Histogram,
    rejections: [IntCounter; 4],
    failures: [IntCounter; 3],
    request_bytes: IntCounter,
    response_bytes: IntCounter,
}

impl Metrics {
    /// Registers every metric, the build info and the process collector.
    pub fn new() -> Self {
        let registry = PromRegistry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let metric = HistogramVec::new(opts, &["function"]).expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };

        let unrouted = IntCounter::new(
            "shoal_unrouted_requests_total",
            "Requests that matched no route (answered 404).",
        )
        .expect("a valid metric");
        registry
            .register(Box::new(unrouted.clone()))
            .expect("registered once");
        let build = IntGauge::with_opts(
            Opts::new(
                "shoal_build_info",
                "The host's version, and the wasmtime it runs on; always 1.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION"))
            .const_label("wasmtime", shoal_runtime::WASMTIME_VERSION),
        )
        .expect("a valid metric");
        build.set(1);
        registry.register(Box::new(build)).expect("registered once");
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("registered once");

        Self {
            requests: counter(
                "shoal_requests_total",
                "Requests answered, by function and status class (2xx, 4xx, 5xx...).",
                &["function", "class"],
            ),
            unrouted,
            duration: histogram(
                "shoal_request_duration_seconds",
                "Time from a request's arrival to the end of its response body.",
                &DURATION_BUCKETS,
            ),
            cold_starts: counter(
                "shoal_cold_starts_total",
                "Cold starts (a function warmed for a request).",
                &["function"],
            ),
            cold_start_duration: histogram(
                "shoal_cold_start_duration_seconds",
                "Time to warm a function: map its artifact and link it (and wait for its compile).",
                &COLD_START_BUCKETS,
            ),
            rejections: counter(
                "shoal_rejections_total",
                "Requests refused before running: queue_full, queue_timeout, host_overloaded, body_too_large.",
                &["function", "reason"],
            ),
            failures: [
                counter(
                    "shoal_traps_total",
                    "Requests whose function trapped.",
                    &["function"],
                ),
                counter(
                    "shoal_timeouts_total",
                    "Requests stopped at their function's timeout.",
                    &["function"],
                ),
                counter(
                    "shoal_memory_limit_hits_total",
                    "Requests whose function hit its memory limit.",
                    &["function"],
                ),
            ],
            request_bytes: counter(
                "shoal_request_bytes_total",
                "Request body bytes received.",
                &["function"],
            ),
            response_bytes: counter(
                "shoal_response_bytes_total",
                "Response body bytes sent.",
                &["function"],
            ),
            in_flight: gauge(
                "shoal_instances_in_flight",
                "Requests running now (each in its own instance).",
                &["function"],
            ),
            waiting: gauge(
                "shoal_queue_depth",
                "Requests waiting for their function's concurrency limit.",
                &["function"],
            ),
            functions: gauge(
                "shoal_functions",
                "Functions by lifecycle state.",
                &["state"],
            ),
            registry,
        }
    }

    /// The counters of function `name`.
    pub fn function(&self, name: &str) -> FunctionMetrics {
        let class = |class: &str| self.requests.with_label_values(&[name, class]);
        let rejection = |reason: &str| self.rejections.with_label_values(&[name, reason]);
        FunctionMetrics(Arc::new(Counters {
            responses: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: self.duration.with_label_values(&[name]),
            cold_starts: self.cold_starts.with_label_values(&[name]),
            cold_start_duration: self.cold_start_duration.with_label_values(&[name]),
            rejections: [
                rejection("queue_full"),
                rejection("queue_timeout"),
                rejection("host_overloaded"),
                rejection("body_too_large"),
            ],
            failures: self
                .failures
                .clone()
                .map(|counter| counter.with_label_values(&[name])),
            request_bytes: self.request_bytes.with_label_values(&[name]),
            response_bytes: self.response_bytes.with_label_values(&[name]),
        }))
    }

    /// Counts a request that matched no route.
    pub fn unrouted(&self) {
        self.unrouted.inc();
    }

    /// Every metric in Prometheus' text format, gauges read from `registry`.
    pub fn render(&self, registry: &Registry) -> String {
        let mut states = [0i64; 5];
        for entry in registry.functions() {
            states[entry.state() as usize] += 1;
            // A function that never had a request has no series.
            if entry.has_metrics() {
                let name = entry.name().as_str();
                self.in_flight
                    .with_label_values(&[name])
                    .set(entry.in_flight() as i64);
                self.waiting
                    .with_label_values(&[name])
                    .set(entry.gate().waiting() as i64);
            }
        }
        for state in [
            LifeState::Registered,
            LifeState::Compiling,
            LifeState::Compiled,
            LifeState::Warm,
            LifeState::Failed,
        ] {
            self.functions
                .with_label_values(&[state.as_str()])
                .set(states[state as usize]);
        }
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("text encoding cannot fail");
        String::from_utf8(text).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl FunctionMetrics {
    /// Counts a response with `status`, `elapsed` after the request arrived.
    pub fn response(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.0.responses[class].inc();
        self.0.duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a cold start that took `elapsed`.
    pub fn cold_start(&self, elapsed: Duration) {
        self.0.cold_starts.inc();
        self.0.cold_start_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a request refused before it ran.
    pub fn rejected(&self, reason: RejectReason) {
        self.0.rejections[reason as usize].inc();
    }

    /// Counts a failed request.
    pub fn failed(&self, kind: FailureKind) {
        self.0.failures[kind as usize].inc();
    }

    /// Counts request body bytes.
    pub fn request_bytes(&self, bytes: u64) {
        self.0.request_bytes.inc_by(bytes);
    }

    /// Counts response body bytes.
    pub fn response_bytes(&self, bytes: u64) {
        self.0.response_bytes.inc_by(bytes);
    }
}
