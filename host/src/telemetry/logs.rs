//! Logs: one `tracing` pipeline, to stderr, as readable text or JSON lines.
//! What a person reads at the terminal (the `admin on` and `listening on`
//! lines) goes to stdout instead.
//!
//! Lines are written by a thread of their own, through a queue of
//! [`LOG_QUEUE_LINES`] ([`super::log_writer`]): whoever logs (a request, a
//! guest's output) never waits on stderr. If stderr stops being read (a
//! stalled pipe, a collector gone), the queue fills and further lines are
//! dropped and counted rather than stopping the host.
//!
//! Every request runs in a `request` span carrying its id, method, path,
//! function, matched route, and, once known, its status and duration; the
//! guest's stdout and stderr lines and every error of the request are
//! events inside it, and a last `request` event closes it (the access log).
//! Under Knative, the span also carries `K_SERVICE`, `K_REVISION` and
//! `K_CONFIGURATION`.

use std::sync::OnceLock;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

use super::json_fields::JsonSpanFields;
pub use super::log_writer::dropped_lines;
use super::log_writer::{Guard, LogWriter};

/// Lines waiting for the log writer at most; past it, lines are dropped.
pub const LOG_QUEUE_LINES: usize = 16_384;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line, with the request span's fields.
    Json,
}

impl LogFormat {
    /// JSON under Knative (where `K_SERVICE` is set), text elsewhere.
    pub fn default_for_environment() -> Self {
        if knative().service.is_some() {
            Self::Json
        } else {
            Self::Text
        }
    }
}

/// Installs the global subscriber with the given filter and format, and the
/// OTLP trace export if the environment asks for it (see [`super::traces`]).
/// Lines still queued are written when the returned guard is dropped.
pub fn init(filter: &str, format: LogFormat) -> anyhow::Result<Guard> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter =
        EnvFilter::try_new(filter).with_context(|| format!("invalid log filter `{filter}`"))?;
    let (writer, guard) = LogWriter::start(std::io::stderr(), LOG_QUEUE_LINES);
    // Writing a log line can fail (stderr closed by whoever read it);
    // reporting that on stderr would panic the task that logged.
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .log_internal_errors(false);
    let lines = match format {
        LogFormat::Text => lines
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => lines
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(JsonSpanFields)
            .with_filter(filter)
            .boxed(),
    };
    let traces = super::traces::provider_from_env()?.map(super::traces::layer);
    tracing_subscriber::registry()
        .with(lines)
        .with(traces)
        .try_init()
        .context("cannot install the log subscriber")?;
    Ok(guard)
}

/// The Knative revision the host runs as, from its environment.
#[derive(Debug, Default)]
pub struct Knative {
    /// `K_SERVICE`.
    pub service: Option<String>,
    /// `K_REVISION`.
    pub revision: Option<String>,
    /// `K_CONFIGURATION`.
    pub configuration: Option<String>,
}

/// Read once: Knative sets these when it starts the container.
pub fn knative() -> &'static Knative {
    static KNATIVE: OnceLock<Knative> = OnceLock::new();
    KNATIVE.get_or_init(|| Knative {
        service: std::env::var("K_SERVICE").ok(),
        revision: std::env::var("K_REVISION").ok(),
        configuration: std::env::var("K_CONFIGURATION").ok(),
    })
}

/// The name of every request's span.
pub(super) const REQUEST_SPAN: &str = "request";

/// The span of one request: its fields are filled in as they become known.
pub fn request_span(request_id: &str, method: &http::Method, path: &str) -> tracing::Span {
    let knative = knative();
    tracing::info_span!(
        REQUEST_SPAN,
        request_id = %request_id,
        method = %method,
        path = %path,
        function = tracing::field::Empty,
        revision = tracing::field::Empty,
        route = tracing::field::Empty,
        event_type = tracing::field::Empty,
        event_id = tracing::field::Empty,
        event_source = tracing::field::Empty,
        status = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
        k_service = knative.service.as_deref(),
        k_revision = knative.revision.as_deref(),
        k_configuration = knative.configuration.as_deref(),
    )
}
