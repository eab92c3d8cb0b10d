//! Trace export over OTLP/HTTP, on when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (the standard OpenTelemetry
//! variables; `OTEL_EXPORTER_OTLP_PROTOCOL` picks `http/protobuf`, the
//! default, or `http/json`).
//!
//! Each request's `request` span becomes a server span. Its parent is the
//! caller's `traceparent`, if the request had one, and the guest sees (and
//! its outbound calls carry) a `traceparent` naming the host's span, so
//! that what the function calls joins the same trace beneath it. Spans leave
//! in batches from a thread of their own; the last batch is sent when the
//! host stops.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, bail};
use http::{HeaderMap, HeaderValue};
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::logs::knative;

/// The header naming a request's place in a trace (W3C Trace Context).
const TRACEPARENT: &str = "traceparent";

/// How long the host waits, when it stops, for the last spans to leave.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are exported (the process's environment asked for it).
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// The tracer provider the environment asks for, if it asks for one.
pub(super) fn provider_from_env() -> anyhow::Result<Option<SdkTracerProvider>> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if !configured {
        return Ok(None);
    }
    let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
        Err(_) | Ok("http/protobuf") => Protocol::HttpBinary,
        Ok("http/json") => Protocol::HttpJson,
        Ok(other) => bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported: use http/protobuf or http/json"
        ),
    };
    // The endpoint, timeout and headers come from the standard variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
        .context("cannot set up the OTLP trace exporter")?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .or_else(|| knative().service.clone())
        .unwrap_or_else(|| "shoal".to_owned());
    let knative = knative();
    let revision = [
        ("knative.service", &knative.service),
        ("knative.revision", &knative.revision),
        ("knative.configuration", &knative.configuration),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some(KeyValue::new(key, value.clone()?)));
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attributes(revision)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    Ok(Some(provider))
}

/// The layer that turns request spans into OpenTelemetry spans.
pub(super) fn layer<S>(provider: SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use tracing_subscriber::Layer as _;
    let tracer = provider.tracer("shoal");
    let _ = PROVIDER.set(provider);
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span() && meta.name() == super::logs::REQUEST_SPAN
        }))
}

/// Places a request's span in its caller's trace, and tells the guest
/// (through the request's `traceparent`) that the host's span is now the
/// parent of whatever it calls.
pub fn join_trace(span: &tracing::Span, headers: &mut HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(parent);
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if !span_context.is_valid() {
        return;
    }
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    );
    if let Ok(value) = HeaderValue::from_str(&traceparent) {
        headers.insert(TRACEPARENT, value);
    }
}

/// Marks a request's span as failed (a 5xx answer).
pub fn failed(span: &tracing::Span, status: u16) {
    span.set_status(opentelemetry::trace::Status::error(format!(
        "answered {status}"
    )));
}

/// Sends the spans still waiting; called once, when the host stops.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(error) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
    {
        tracing::warn!(%error, "the last spans could not be exported");
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
