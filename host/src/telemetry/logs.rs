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
//! Every line of a request is written as if inside a `request` span
//! carrying its id, method, path, function, matched route, and, once known,
//! its status and duration; the guest's stdout and stderr lines and every
//! error of the request are such lines, and a last `request` event closes
//! it (the access log). Under Knative, the span also carries `K_SERVICE`,
//! `K_REVISION` and `K_CONFIGURATION`. Only while traces are exported is
//! it a real `tracing` span ([`super::request_log`] says why).

use std::sync::OnceLock;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

use super::json_fields::JsonSpanFields;
pub use super::log_writer::dropped_lines;
use super::log_writer::{Guard, LogWriter};
use super::request_log::{RequestLines, RequestLog};

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
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter =
        EnvFilter::try_new(filter).with_context(|| format!("invalid log filter `{filter}`"))?;
    let (writer, guard) = LogWriter::start(std::io::stderr(), LOG_QUEUE_LINES);
    let lines = lines(filter, format, writer);
    let traces = super::traces::provider_from_env()?;
    subscriber(lines, traces)
        .try_init()
        .context("cannot install the log subscriber")?;
    Ok(guard)
}

/// A layer of the log subscriber, boxed.
type BoxedLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The layer that writes log lines through `writer`, as `filter` lets it.
fn lines(filter: EnvFilter, format: LogFormat, writer: LogWriter) -> BoxedLayer {
    use tracing_subscriber::Layer as _;

    // Writing a log line can fail (stderr closed by whoever read it);
    // reporting that on stderr would panic the task that logged.
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => lines
            .event_format(RequestLines::text())
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => lines
            .event_format(RequestLines::json())
            .fmt_fields(JsonSpanFields)
            .with_ansi(false)
            .with_filter(filter)
            .boxed(),
    }
}

/// The log lines, and the trace export if there is one. Without it there
/// is no layer beside the lines, not even an empty one: a `None` layer
/// wants every event, so an event the log filter refuses (the access line
/// at `--log-level warn`) would be looked at, and dispatched, each time
/// instead of never.
fn subscriber(
    lines: BoxedLayer,
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    use tracing_subscriber::layer::SubscriberExt as _;

    let lines = tracing_subscriber::registry().with(lines);
    match traces {
        Some(provider) => Box::new(lines.with(super::traces::layer(provider))),
        None => Box::new(lines),
    }
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

/// The log of `request`, whose id is `request_id`: its fields are filled in
/// as they become known. It has a span while traces are exported, placed in
/// the caller's trace (the request's `traceparent` then names the span).
pub fn request_log<B>(
    request_id: &http::HeaderValue,
    request: &mut http::Request<B>,
) -> RequestLog {
    let span = super::traces::enabled().then(|| {
        let span = request_span(request_id, request.method(), request.uri().path());
        super::traces::join_trace(&span, request.headers_mut());
        span
    });
    RequestLog::new(request_id, request.method(), request.uri(), span)
}

/// The span of one request, for trace export: its fields are filled in as
/// they become known.
pub(super) fn request_span(
    request_id: &http::HeaderValue,
    method: &http::Method,
    path: &str,
) -> tracing::Span {
    let knative = knative();
    tracing::info_span!(
        REQUEST_SPAN,
        request_id = %request_id.to_str().unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    use tracing::callsite::DefaultCallsite;
    use tracing::metadata::Kind;
    use tracing::{Level, Metadata, Subscriber as _, field::FieldSet};

    use super::*;
    use crate::telemetry::record::ACCESS_LOG;

    /// An access line's callsite, as `tracing::info!(target: ACCESS_LOG,
    /// ...)` makes one.
    static ACCESS_LINE: DefaultCallsite = DefaultCallsite::new(&ACCESS_LINE_META);
    static ACCESS_LINE_META: Metadata<'static> = Metadata::new(
        "request",
        ACCESS_LOG,
        Level::INFO,
        None,
        None,
        None,
        FieldSet::new(&["status"], tracing::callsite::Identifier(&ACCESS_LINE)),
        Kind::EVENT,
    );

    fn interest(filter: &str, format: LogFormat) -> tracing::subscriber::Interest {
        let (writer, _guard) = LogWriter::start(std::io::sink(), 16);
        let lines = lines(EnvFilter::new(filter), format, writer);
        subscriber(lines, None).register_callsite(&ACCESS_LINE_META)
    }

    #[test]
    fn an_event_the_log_filter_refuses_is_never_looked_at_again() {
        for format in [LogFormat::Text, LogFormat::Json] {
            assert!(interest("info", format).is_always(), "{format:?}");
            for refused in [
                "warn",
                "warn,shoal_host::cli=info",
                "info,shoal::access=off",
            ] {
                assert!(
                    interest(refused, format).is_never(),
                    "{refused}, {format:?}: the access line is looked at on every request"
                );
            }
        }
    }
}
