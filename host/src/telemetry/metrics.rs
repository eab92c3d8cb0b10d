//! Prometheus metrics, served at `GET /metrics` on the admin listener.
//!
//! Every per-function series is labelled by the function's name only (never
//! by path), so the number of series is bounded by the manifest. A
//! function's counters are made on its first request ([`FunctionMetrics`]):
//! counting a request is then an atomic add, not a label lookup, and the
//! thousands of functions a host may register but never call hold no
//! series. They are plain atomics, written out by the host itself at a
//! scrape (the `prometheus` crate's gather would copy and sort every one of
//! them first: most of a scrape's time with 10,000 functions called).
//! Gauges (requests in flight, waiting, the lifecycle) are handed over as a
//! snapshot ([`Gauges`]) when scraped; a function taken out of the registry
//! has its series removed ([`Metrics::forget`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry as PromRegistry, TextEncoder,
};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl RejectReason {
    /// Every reason, in order.
    pub const ALL: [Self; 4] = [
        Self::QueueFull,
        Self::QueueTimeout,
        Self::HostOverloaded,
        Self::BodyTooLarge,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::QueueTimeout => "queue_timeout",
            Self::HostOverloaded => "host_overloaded",
            Self::BodyTooLarge => "body_too_large",
        }
    }
}

/// How a function failed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// It trapped.
    Trap,
    /// It ran past its timeout.
    Timeout,
    /// It hit its memory limit.
    MemoryLimit,
    /// The host's memory budget refused it more memory.
    MemoryBudget,
}

impl FailureKind {
    /// Every kind, in order.
    pub const ALL: [Self; 4] = [
        Self::Trap,
        Self::Timeout,
        Self::MemoryLimit,
        Self::MemoryBudget,
    ];

    /// The name and help of the kind's counter.
    fn metric(self) -> (&'static str, &'static str) {
        match self {
            Self::Trap => ("shoal_traps_total", "Requests whose function trapped."),
            Self::Timeout => (
                "shoal_timeouts_total",
                "Requests stopped at their function's timeout.",
            ),
            Self::MemoryLimit => (
                "shoal_memory_limit_hits_total",
                "Requests whose function hit its memory limit.",
            ),
            Self::MemoryBudget => (
                "shoal_memory_budget_refusals_total",
                "Requests whose function was refused memory by the host's budget.",
            ),
        }
    }
}

/// How an event delivered to a function ended, for `shoal_events_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// Processed, no reply sent (202).
    Accepted,
    /// Processed, and its reply sent (200).
    Replied,
    /// Refused for good (a 4xx other than 429): not retried.
    Refused,
    /// Failed or refused for now (5xx, 429): the broker retries.
    Failed,
}

impl EventOutcome {
    /// The outcome an event answered `status` had.
    pub fn of(status: http::StatusCode) -> Self {
        match status.as_u16() {
            200 => Self::Replied,
            201..=299 => Self::Accepted,
            429 => Self::Failed,
            400..=499 => Self::Refused,
            _ => Self::Failed,
        }
    }

    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Replied => "replied",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// Why a request at the events path reached no function, for
/// `shoal_events_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventRefusal {
    /// No valid event (400), or a format the host does not take (415).
    Invalid,
    /// Not a `POST` (405).
    Method,
    /// A structured event too large to read (413).
    TooLarge,
    /// No trigger matches it (422).
    Unmatched,
}

impl EventRefusal {
    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Method => "method",
            Self::TooLarge => "too_large",
            Self::Unmatched => "unmatched",
        }
    }
}

/// The status classes of `shoal_requests_total`, by index: `cancelled` for a
/// request whose client went away before any answer, then `1xx` to `5xx`.
const CLASSES: [&str; 6] = ["cancelled", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// The gauges of the registry at one moment, for a scrape.
#[derive(Debug, Default)]
pub struct Gauges {
    /// The generation of the registry's table.
    pub generation: u64,
    /// Every function revision that has series (it has had a request).
    pub functions: Vec<FunctionGauges>,
    /// Each function's guest output dropped past its limits so far, by
    /// function name.
    pub guest_output_dropped: Vec<(String, u64)>,
    /// Functions by lifecycle state: the state's label and the count.
    pub states: Vec<(&'static str, usize)>,
    /// The host's memory budget for instances, in bytes.
    pub memory_budget: u64,
    /// Bytes of it held by instances now.
    pub memory_in_use: u64,
    /// Bytes of compiled code kept mapped that no warm function holds.
    pub kept_code: u64,
    /// Fresh instances made ahead of their request, waiting for it.
    pub ready_instances: u64,
    /// Idle instances of functions that reuse them, waiting for a request.
    pub idle_instances: u64,
    /// Log lines dropped because the log could not keep up, so far.
    pub log_lines_dropped: u64,
    /// Requests waiting for the host-wide gate.
    pub host_waiting: u64,
}

/// One function revision's gauges.
#[derive(Debug)]
pub struct FunctionGauges {
    /// Its function's name.
    pub name: String,
    /// Its revision (empty for a manifest function).
    pub revision: String,
    /// Requests running now.
    pub in_flight: u64,
    /// Requests waiting for its concurrency limit.
    pub waiting: u64,
}

/// How a change to the registry ended, for `shoal_registry_changes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// Something changed.
    Applied,
    /// The new set of functions was the one serving.
    Unchanged,
    /// It was refused; the table serving before it still serves.
    Refused,
}

impl ChangeOutcome {
    /// The `result` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Refused => "refused",
        }
    }
}

/// The host's metrics.
pub struct Metrics {
    registry: PromRegistry,
    per_function: Arc<PerFunction>,
    /// Every function revision's counters, by name and revision, made on
    /// its first request.
    counters: Mutex<BTreeMap<(String, String), Arc<Counters>>>,
    unrouted: IntCounter,
    in_flight: IntGaugeVec,
    waiting: IntGaugeVec,
    functions: IntGaugeVec,
    generation: IntGauge,
    changes: IntCounterVec,
    memory_budget: IntGauge,
    memory_in_use: IntGauge,
    kept_code: IntGauge,
    ready_instances: IntGauge,
    idle_instances: IntGauge,
    host_waiting: IntGauge,
    events: IntCounterVec,
    event_duplicates: IntCounterVec,
    events_refused: IntCounterVec,
}

/// One function revision's counters; cloning is one reference count.
///
/// A counter is shown once it is above zero, so a function shows only what
/// happened to it (a GET-only function has no request-bytes series, one
/// never refused has no rejection series), and its histograms exist only
/// while it is warm (see [`FunctionMetrics::cool_down`]).
#[derive(Clone)]
pub struct FunctionMetrics(Arc<Counters>);

struct Counters {
    name: String,
    revision: String,
    series: Arc<PerFunction>,
    /// Responses by status class, as [`CLASSES`].
    responses: [AtomicU64; 6],
    cold_starts: AtomicU64,
    /// Refusals, as [`RejectReason::ALL`].
    rejections: [AtomicU64; 4],
    /// Failures, as [`FailureKind::ALL`].
    failures: [AtomicU64; 4],
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    /// The histograms, while the function is warm.
    warm: ArcSwapOption<WarmSeries>,
}

/// A warm function's histograms.
struct WarmSeries {
    duration: Histogram,
    cold_start_duration: Histogram,
}

/// The histograms with a series per warm function revision.
struct PerFunction {
    duration: HistogramVec,
    cold_start_duration: HistogramVec,
    /// Every request's duration, whichever function: the histogram that
    /// stays when functions scale to zero.
    all_durations: Histogram,
    /// Every cold start's duration, whichever function.
    all_cold_starts: Histogram,
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
            let metric =
                HistogramVec::new(opts, &["function", "revision"]).expect("a valid metric");
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
        let mut build_opts = Opts::new(
            "shoal_build_info",
            "The host's version, the wasmtime it runs on and, under Knative, \
             the revision it runs as; always 1.",
        )
        .const_label("version", env!("CARGO_PKG_VERSION"))
        .const_label("wasmtime", shoal_runtime::WASMTIME_VERSION);
        let knative = super::logs::knative();
        for (label, value) in [
            ("k_service", &knative.service),
            ("k_revision", &knative.revision),
            ("k_configuration", &knative.configuration),
        ] {
            if let Some(value) = value {
                build_opts = build_opts.const_label(label, value);
            }
        }
        let build = IntGauge::with_opts(build_opts).expect("a valid metric");
        build.set(1);
        registry.register(Box::new(build)).expect("registered once");
        let plain_gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };
        let generation = plain_gauge(
            "shoal_registry_generation",
            "How many changes the registry's table has been through.",
        );
        let memory_budget = plain_gauge(
            "shoal_memory_budget_bytes",
            "Linear memory all instances may hold together (--memory-budget).",
        );
        let memory_in_use = plain_gauge(
            "shoal_memory_in_use_bytes",
            "Linear memory held by instances now.",
        );
        let kept_code = plain_gauge(
            "shoal_kept_code_bytes",
            "Compiled code of functions at zero kept mapped for their next cold start (--keep-code).",
        );
        let ready_instances = plain_gauge(
            "shoal_ready_instances",
            "Fresh instances made ahead of their request, waiting for it (--ready-instances).",
        );
        let idle_instances = plain_gauge(
            "shoal_idle_instances",
            "Idle instances of functions that reuse them, waiting for a request (max_instance_reuse).",
        );
        let host_waiting = plain_gauge(
            "shoal_host_queue_depth",
            "Requests waiting for the host-wide gate (a free instance).",
        );
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("registered once");

        let plain_histogram = |name: &str, help: &str, buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let metric = Histogram::with_opts(opts).expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };
        let per_function = Arc::new(PerFunction {
            duration: histogram(
                "shoal_request_duration_seconds",
                "Time from a request's arrival to the end of its response body, per function \
                 while it is warm (its series go when it scales to zero).",
                &DURATION_BUCKETS,
            ),
            cold_start_duration: histogram(
                "shoal_cold_start_duration_seconds",
                "Time to warm a function: map its artifact and link it (and wait for its \
                 compile), per function while it is warm.",
                &COLD_START_BUCKETS,
            ),
            all_durations: plain_histogram(
                "shoal_host_request_duration_seconds",
                "Time from a request's arrival to the end of its response body, every function.",
                &DURATION_BUCKETS,
            ),
            all_cold_starts: plain_histogram(
                "shoal_host_cold_start_duration_seconds",
                "Time to warm a function, every function.",
                &COLD_START_BUCKETS,
            ),
        });

        Self {
            per_function,
            counters: Mutex::default(),
            unrouted,
            in_flight: gauge(
                "shoal_instances_in_flight",
                "Requests running now (each in its own instance).",
                &["function", "revision"],
            ),
            waiting: gauge(
                "shoal_queue_depth",
                "Requests waiting for their function's concurrency limit.",
                &["function", "revision"],
            ),
            functions: gauge(
                "shoal_functions",
                "Functions by lifecycle state.",
                &["state"],
            ),
            generation,
            memory_budget,
            memory_in_use,
            kept_code,
            ready_instances,
            idle_instances,
            host_waiting,
            changes: counter(
                "shoal_registry_changes_total",
                "Changes to the set of functions (reloads): applied, unchanged, refused.",
                &["result"],
            ),
            events: counter(
                "shoal_events_total",
                "CloudEvents delivered to a function, by the type its trigger names and outcome \
                 (accepted, replied, refused, failed).",
                &["function", "revision", "type", "outcome"],
            ),
            event_duplicates: counter(
                "shoal_event_duplicates_total",
                "CloudEvents delivered again (a source and id seen among the last 65,536 events).",
                &["function", "revision", "type"],
            ),
            events_refused: counter(
                "shoal_events_refused_total",
                "Requests at the events path that reached no function: invalid, method, \
                 too_large, unmatched.",
                &["reason"],
            ),
            registry,
        }
    }

    /// The counters of `revision` (empty for a manifest function) of
    /// function `name` (the same ones for every call with these names).
    pub fn function(&self, name: &str, revision: &str) -> FunctionMetrics {
        let mut functions = self.lock_counters();
        let counters = functions
            .entry((name.to_owned(), revision.to_owned()))
            .or_insert_with(|| {
                Arc::new(Counters {
                    name: name.to_owned(),
                    revision: revision.to_owned(),
                    series: self.per_function.clone(),
                    responses: Default::default(),
                    cold_starts: AtomicU64::new(0),
                    rejections: Default::default(),
                    failures: Default::default(),
                    request_bytes: AtomicU64::new(0),
                    response_bytes: AtomicU64::new(0),
                    warm: ArcSwapOption::empty(),
                })
            });
        FunctionMetrics(counters.clone())
    }

    fn lock_counters(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Arc<Counters>>> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes every series of `revision` of function `name` (no longer
    /// served). Counters still held by its requests in flight count on,
    /// unseen.
    pub fn forget(&self, name: &str, revision: &str) {
        let labels = [name, revision];
        let series = &self.per_function;
        self.lock_counters()
            .remove(&(name.to_owned(), revision.to_owned()));
        for vec in [&series.duration, &series.cold_start_duration] {
            let _ = vec.remove_label_values(&labels);
        }
        for vec in [&self.in_flight, &self.waiting] {
            let _ = vec.remove_label_values(&labels);
        }
        // Event series have more labels (type, outcome): find theirs.
        for vec in [&self.events, &self.event_duplicates] {
            for family in prometheus::core::Collector::collect(vec) {
                for metric in family.get_metric() {
                    let series: HashMap<&str, &str> = metric
                        .get_label()
                        .iter()
                        .map(|pair| (pair.name(), pair.value()))
                        .collect();
                    if series.get("function") == Some(&name)
                        && series.get("revision") == Some(&revision)
                    {
                        let _ = vec.remove(&series);
                    }
                }
            }
        }
    }

    /// Counts an event delivered to `revision` of function `name` by a
    /// trigger on type `ty`, with its `outcome`.
    pub fn event(&self, name: &str, revision: &str, ty: &str, outcome: EventOutcome) {
        self.events
            .with_label_values(&[name, revision, ty, outcome.label()])
            .inc();
    }

    /// Counts an event delivered again.
    pub fn event_duplicate(&self, name: &str, revision: &str, ty: &str) {
        self.event_duplicates
            .with_label_values(&[name, revision, ty])
            .inc();
    }

    /// Counts a request at the events path that reached no function.
    pub fn event_refused(&self, reason: EventRefusal) {
        self.events_refused
            .with_label_values(&[reason.label()])
            .inc();
    }

    /// Counts a request that matched no route.
    pub fn unrouted(&self) {
        self.unrouted.inc();
    }

    /// Counts a change to the registry.
    pub fn change(&self, outcome: ChangeOutcome) {
        self.changes.with_label_values(&[outcome.label()]).inc();
    }

    /// Every metric in Prometheus' text format, with `gauges` read now.
    pub fn render(&self, gauges: &Gauges) -> String {
        // Only the functions in the snapshot have gauge series: one that
        // scaled to zero, or went, loses them.
        self.in_flight.reset();
        self.waiting.reset();
        for function in &gauges.functions {
            let labels = [function.name.as_str(), function.revision.as_str()];
            self.in_flight
                .with_label_values(&labels)
                .set(function.in_flight as i64);
            self.waiting
                .with_label_values(&labels)
                .set(function.waiting as i64);
        }
        for (state, count) in &gauges.states {
            self.functions
                .with_label_values(&[state])
                .set(*count as i64);
        }
        self.generation.set(gauges.generation as i64);
        self.memory_budget
            .set(i64::try_from(gauges.memory_budget).unwrap_or(i64::MAX));
        self.memory_in_use
            .set(i64::try_from(gauges.memory_in_use).unwrap_or(i64::MAX));
        self.kept_code
            .set(i64::try_from(gauges.kept_code).unwrap_or(i64::MAX));
        self.ready_instances
            .set(i64::try_from(gauges.ready_instances).unwrap_or(i64::MAX));
        self.idle_instances
            .set(i64::try_from(gauges.idle_instances).unwrap_or(i64::MAX));
        self.host_waiting.set(gauges.host_waiting as i64);
        let mut families = self.registry.gather();
        families.extend(counter_family(
            "shoal_guest_output_dropped_bytes_total",
            "Bytes of guest stdout and stderr dropped past a request's share or the function's rate.",
            gauges
                .guest_output_dropped
                .iter()
                .map(|(name, dropped)| (Some(name.as_str()), *dropped)),
        ));
        families.extend(counter_family(
            "shoal_log_lines_dropped_total",
            "Log lines dropped because the log's reader could not keep up.",
            [(None, gauges.log_lines_dropped)],
        ));
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut text)
            .expect("text encoding cannot fail");
        let mut text = String::from_utf8(text).expect("the text format is UTF-8");
        self.render_counters(&mut text);
        text
    }

    /// Writes every function's counters above zero, a family at a time.
    /// The lock is held only to copy the list: a function's first request,
    /// which adds its counters, never waits for a scrape to be written.
    fn render_counters(&self, out: &mut String) {
        let functions: Vec<Arc<Counters>> = self.lock_counters().values().cloned().collect();
        let mut family =
            |name: &str,
             help: &str,
             label: Option<&str>,
             values: &dyn Fn(&Counters) -> Vec<(&'static str, u64)>| {
                let mut header = false;
                for counters in &functions {
                    for (value_label, value) in values(counters) {
                        if value == 0 {
                            continue;
                        }
                        if !header {
                            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
                            header = true;
                        }
                        let (function, revision) = (&counters.name, &counters.revision);
                        // Labels in the order of their names, as Prometheus
                        // writes them.
                        let _ = match label {
                            Some(label) if label < "function" => writeln!(
                                out,
                                "{name}{{{label}=\"{value_label}\",function=\"{function}\",revision=\"{revision}\"}} {value}"
                            ),
                            Some(label) => writeln!(
                                out,
                                "{name}{{function=\"{function}\",{label}=\"{value_label}\",revision=\"{revision}\"}} {value}"
                            ),
                            None => writeln!(
                                out,
                                "{name}{{function=\"{function}\",revision=\"{revision}\"}} {value}"
                            ),
                        };
                    }
                }
            };
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        family(
            "shoal_requests_total",
            "Requests answered, by function and status class (2xx, 4xx, 5xx...).",
            Some("class"),
            &|c| {
                CLASSES
                    .iter()
                    .zip(&c.responses)
                    .map(|(class, n)| (*class, read(n)))
                    .collect()
            },
        );
        family(
            "shoal_cold_starts_total",
            "Cold starts (a function warmed for a request).",
            None,
            &|c| vec![("", read(&c.cold_starts))],
        );
        family(
            "shoal_rejections_total",
            "Requests refused before running: queue_full, queue_timeout, host_overloaded, body_too_large.",
            Some("reason"),
            &|c| {
                RejectReason::ALL
                    .iter()
                    .zip(&c.rejections)
                    .map(|(reason, n)| (reason.label(), read(n)))
                    .collect()
            },
        );
        for (at, kind) in FailureKind::ALL.into_iter().enumerate() {
            let (name, help) = kind.metric();
            family(name, help, None, &|c| vec![("", read(&c.failures[at]))]);
        }
        family(
            "shoal_request_bytes_total",
            "Request body bytes received.",
            None,
            &|c| vec![("", read(&c.request_bytes))],
        );
        family(
            "shoal_response_bytes_total",
            "Response body bytes sent.",
            None,
            &|c| vec![("", read(&c.response_bytes))],
        );
    }
}

/// A counter family whose values were counted elsewhere and are read at the
/// scrape: one series per value, labelled by `function` when it names one;
/// `None` without values (the text format has no empty family).
fn counter_family<'a>(
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Option<&'a str>, u64)>,
) -> Option<prometheus::proto::MetricFamily> {
    use prometheus::proto::{Counter, LabelPair, Metric, MetricFamily, MetricType};
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(MetricType::COUNTER);
    for (function, value) in values {
        let mut metric = Metric::default();
        if let Some(function) = function {
            let mut label = LabelPair::default();
            label.set_name("function".to_owned());
            label.set_value(function.to_owned());
            metric.set_label(vec![label]);
        }
        let mut counter = Counter::default();
        counter.set_value(value as f64);
        metric.set_counter(counter);
        family.mut_metric().push(metric);
    }
    (!family.get_metric().is_empty()).then_some(family)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl FunctionMetrics {
    /// Counts a response with `status` (`None`: the client went away before
    /// any answer), `elapsed` after the request arrived.
    pub fn response(&self, status: Option<u16>, elapsed: Duration) {
        let class = status.map_or(0, |status| usize::from(status / 100).clamp(1, 5));
        let counters = &*self.0;
        counters.responses[class].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        counters.series.all_durations.observe(seconds);
        if let Some(warm) = &*counters.warm.load() {
            warm.duration.observe(seconds);
        }
    }

    /// Counts a cold start that took `elapsed`; the function is warm from
    /// now on, and has its histograms again.
    pub fn cold_start(&self, elapsed: Duration) {
        let counters = &*self.0;
        counters.cold_starts.fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        counters.series.all_cold_starts.observe(seconds);
        let labels = [counters.name.as_str(), counters.revision.as_str()];
        let warm = counters.warm.load_full().unwrap_or_else(|| {
            let warm = Arc::new(WarmSeries {
                duration: counters.series.duration.with_label_values(&labels),
                cold_start_duration: counters
                    .series
                    .cold_start_duration
                    .with_label_values(&labels),
            });
            counters.warm.store(Some(warm.clone()));
            warm
        });
        warm.cold_start_duration.observe(seconds);
    }

    /// The function scaled to zero: its histograms go (a host of many
    /// functions, most of them at rest, would otherwise carry dozens of
    /// series for each); its counters stay. The host-wide histograms keep
    /// counting every request.
    pub fn cool_down(&self) {
        let counters = &*self.0;
        if counters.warm.swap(None).is_some() {
            let labels = [counters.name.as_str(), counters.revision.as_str()];
            let _ = counters.series.duration.remove_label_values(&labels);
            let _ = counters
                .series
                .cold_start_duration
                .remove_label_values(&labels);
        }
    }

    /// Counts a request refused before it ran.
    pub fn rejected(&self, reason: RejectReason) {
        let at = RejectReason::ALL.iter().position(|r| *r == reason);
        self.0.rejections[at.expect("ALL holds every reason")].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed request.
    pub fn failed(&self, kind: FailureKind) {
        let at = FailureKind::ALL.iter().position(|k| *k == kind);
        self.0.failures[at.expect("ALL holds every kind")].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts request body bytes.
    pub fn request_bytes(&self, bytes: u64) {
        self.0.request_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts response body bytes.
    pub fn response_bytes(&self, bytes: u64) {
        self.0.response_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_that_served_nothing_renders_its_metrics() {
        let metrics = Metrics::new();
        let text = metrics.render(&Gauges::default());
        assert!(text.contains("shoal_log_lines_dropped_total 0"), "{text}");
        assert!(
            !text.contains("shoal_guest_output_dropped_bytes_total"),
            "{text}"
        );
        let gauges = Gauges {
            guest_output_dropped: vec![("f".to_owned(), 3)],
            ..Gauges::default()
        };
        let text = metrics.render(&gauges);
        assert!(
            text.contains(r#"shoal_guest_output_dropped_bytes_total{function="f"} 3"#),
            "{text}"
        );
    }

    #[test]
    fn a_function_has_one_set_of_counters_until_it_is_forgotten() {
        let metrics = Metrics::new();
        // Two entries of one function revision (one replacing the other)
        // count into the same series.
        metrics
            .function("f", "r1")
            .rejected(RejectReason::QueueFull);
        metrics
            .function("f", "r1")
            .rejected(RejectReason::QueueFull);
        metrics.function("f", "r1").failed(FailureKind::Timeout);
        metrics.function("g", "").request_bytes(5);
        let text = metrics.render(&Gauges::default());
        let series = r#"shoal_rejections_total{function="f",reason="queue_full",revision="r1"} 2"#;
        assert!(text.contains(series), "{text}");
        assert!(text.contains(r#"shoal_timeouts_total{function="f",revision="r1"} 1"#));
        assert!(text.contains(r#"shoal_request_bytes_total{function="g",revision=""} 5"#));
        assert_eq!(
            text.matches("# TYPE shoal_rejections_total counter")
                .count(),
            1
        );
        assert!(!text.contains("shoal_traps_total"), "no traps, no family");

        metrics.forget("f", "r1");
        let text = metrics.render(&Gauges::default());
        assert!(!text.contains(r#"function="f""#), "{text}");
        assert!(text.contains(r#"shoal_request_bytes_total{function="g",revision=""} 5"#));
    }

    #[test]
    fn a_function_at_rest_keeps_a_few_counters_and_no_histograms() {
        let metrics = Metrics::new();
        let base = metrics.render(&Gauges::default()).len();
        let ms = Duration::from_millis;
        let functions: Vec<_> = (0..100)
            .map(|i| metrics.function(&format!("fn-{i:05}"), ""))
            .collect();
        for function in &functions {
            function.cold_start(ms(1));
            function.response(Some(200), ms(2));
            function.request_bytes(0);
            function.response_bytes(14);
        }
        let warm = metrics.render(&Gauges::default());
        assert!(
            warm.contains(
                r#"shoal_request_duration_seconds_count{function="fn-00042",revision=""} 1"#
            ),
            "a warm function has its histograms"
        );
        for function in &functions {
            function.cool_down();
        }
        let text = metrics.render(&Gauges::default());
        let per_function = (text.len() - base) / functions.len();
        assert!(
            per_function <= 300,
            "{per_function} bytes per function at rest:\n{text}"
        );
        assert!(
            !text.contains(r#"shoal_request_duration_seconds_count{"#),
            "{text}"
        );
        assert!(
            !text.contains("shoal_request_bytes_total{"),
            "no body, no series"
        );
        assert!(
            text.contains("shoal_host_request_duration_seconds_count 100"),
            "{text}"
        );

        // Warm again: the histograms come back, the counters go on.
        functions[0].cold_start(ms(1));
        functions[0].response(Some(503), ms(1));
        let text = metrics.render(&Gauges::default());
        assert!(text.contains(r#"shoal_cold_starts_total{function="fn-00000",revision=""} 2"#));
        assert!(text.contains(
            r#"shoal_request_duration_seconds_count{function="fn-00000",revision=""} 1"#
        ));
        assert!(
            text.contains(r#"shoal_requests_total{class="5xx",function="fn-00000",revision=""} 1"#)
        );
        assert!(!text.contains(r#"class="4xx""#), "only the classes seen");
    }
}
