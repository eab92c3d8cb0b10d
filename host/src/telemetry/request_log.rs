//! A request's place in the logs, kept without a `tracing` span when no
//! trace is exported.
//!
//! Every line a request logs carries the request's fields (its id, method,
//! path, function, route, and at the end its status and duration), as if it
//! were written inside a `request` span: the text format's `request{...}:`
//! prefix, the JSON format's `span` object. A real span costs, per request,
//! a slot in the subscriber's registry, a formatted copy of its fields that
//! grows with every field recorded (parsed again into a map for every JSON
//! line), and bookkeeping on each poll. So unless trace export is on (where
//! the span is what gets exported), the fields live in [`RequestLog`]
//! instead:
//!
//! - the request's futures run through [`RequestLog::instrument`], which
//!   makes the fields the thread's current request for the length of each
//!   poll;
//! - [`RequestLines`], the log layer's event format, writes an event that
//!   has no span around it as if the current request's span were around
//!   it, byte for byte as the span would have been written.
//!
//! With trace export on, [`RequestLog`] also holds the real span: the
//! fields are recorded into both, the span is entered as before, and an
//! event inside it is written by `tracing-subscriber`'s own format.

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use http::{HeaderValue, Method, Uri};
use serde::ser::{Serialize, SerializeMap as _, Serializer};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::logs::{REQUEST_SPAN, knative};
use crate::deploy::state::RevisionName;
use crate::manifest::FunctionName;
use crate::registry::entry::FunctionEntry;
use crate::router::RouteMatch;

/// A request's log fields, shared by whatever logs for it; cheap to clone.
#[derive(Clone)]
pub struct RequestLog {
    fields: Arc<Mutex<Fields>>,
    /// The request's span, only while traces are exported.
    span: Option<tracing::Span>,
}

/// What is known of a request so far.
struct Fields {
    request_id: HeaderValue,
    method: Method,
    uri: Uri,
    function: Option<FunctionName>,
    revision: Option<RevisionName>,
    route: Option<String>,
    event: Option<EventFields>,
    end: Option<(Status, f64)>,
}

struct EventFields {
    ty: String,
    id: String,
    source: String,
}

/// A request's status as its log line gives it.
#[derive(Clone, Copy)]
enum Status {
    Answered(u16),
    Cancelled,
}

impl RequestLog {
    /// The log of a request, with the span that trace export reads if
    /// `span` is given.
    pub fn new(
        request_id: &HeaderValue,
        method: &Method,
        uri: &Uri,
        span: Option<tracing::Span>,
    ) -> Self {
        Self {
            fields: Arc::new(Mutex::new(Fields {
                request_id: request_id.clone(),
                method: method.clone(),
                uri: uri.clone(),
                function: None,
                revision: None,
                route: None,
                event: None,
                end: None,
            })),
            span,
        }
    }

    /// The request's span, while traces are exported.
    pub fn span(&self) -> Option<&tracing::Span> {
        self.span.as_ref()
    }

    fn fields(&self) -> MutexGuard<'_, Fields> {
        self.fields.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The request was routed to `entry` by `route`.
    pub fn routed(&self, entry: &FunctionEntry, route: RouteMatch<'_>) {
        self.routed_to(entry.name(), entry.revision(), route);
    }

    fn routed_to(
        &self,
        function: &FunctionName,
        revision: Option<&RevisionName>,
        route: RouteMatch<'_>,
    ) {
        if let Some(span) = &self.span {
            span.record("function", tracing::field::display(function));
            if let Some(revision) = revision {
                span.record("revision", tracing::field::display(revision));
            }
            span.record("route", tracing::field::display(route));
        }
        let mut fields = self.fields();
        fields.function = Some(function.clone());
        fields.revision = revision.cloned();
        fields.route = Some(route.to_string());
    }

    /// The request is the event of type `ty`, id `id` from `source`.
    pub fn event(&self, ty: &str, id: &str, source: &str) {
        if let Some(span) = &self.span {
            span.record("event_type", ty);
            span.record("event_id", id);
            span.record("event_source", source);
        }
        self.fields().event = Some(EventFields {
            ty: ty.to_owned(),
            id: id.to_owned(),
            source: source.to_owned(),
        });
    }

    /// The request ended with `status` (`None`: cancelled) after
    /// `duration_ms`.
    pub fn ended(&self, status: Option<u16>, duration_ms: f64) {
        let status = status.map_or(Status::Cancelled, Status::Answered);
        if let Some(span) = &self.span {
            match status {
                Status::Answered(status) => span.record("status", status),
                Status::Cancelled => span.record("status", "cancelled"),
            };
            span.record("duration_ms", duration_ms);
        }
        self.fields().end = Some((status, duration_ms));
    }

    /// Runs `f` as part of the request: what it logs carries the request's
    /// fields.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let _current = Current::enter(&self.fields);
        let _entered = self.span.as_ref().map(tracing::Span::enter);
        f()
    }

    /// Runs `future` as part of the request: what it logs, in any of its
    /// polls, carries the request's fields.
    pub async fn instrument<F: Future>(&self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| self.in_scope(|| future.as_mut().poll(cx))).await
    }
}

thread_local! {
    /// The fields of the request whose future this thread is polling.
    static CURRENT: RefCell<Option<Arc<Mutex<Fields>>>> = const { RefCell::new(None) };
}

/// The thread's current request while it lives; the one before it after.
struct Current(Option<Arc<Mutex<Fields>>>);

impl Current {
    fn enter(fields: &Arc<Mutex<Fields>>) -> Self {
        Self(CURRENT.with(|current| current.replace(Some(fields.clone()))))
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        let before = self.0.take();
        CURRENT.with(|current| *current.borrow_mut() = before);
    }
}

/// The log layer's event format: `tracing-subscriber`'s text or JSON, with
/// an event outside any span written as if inside the current request's.
pub(super) enum RequestLines {
    Text {
        /// The whole line, for an event inside a span or outside a request.
        whole: Format<Full, Rfc3339>,
        /// What follows the span: the target and the fields.
        rest: Format<Full, ()>,
    },
    Json(Format<Json, Rfc3339>),
}

impl RequestLines {
    /// Readable lines.
    pub(super) fn text() -> Self {
        let whole = Format::default().with_timer(Rfc3339);
        let rest = Format::default().without_time().with_level(false);
        Self::Text { whole, rest }
    }

    /// One JSON object a line: the event's fields flattened, and the
    /// current span's as `span`.
    pub(super) fn json() -> Self {
        Self::Json(
            Format::default()
                .json()
                .with_timer(Rfc3339)
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false),
        )
    }
}

impl<S, N> FormatEvent<S, N> for RequestLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // (A line written while the thread ends, its locals gone, has no
        // request.)
        let current = match ctx.parent_span() {
            Some(_) => None,
            None => CURRENT
                .try_with(|current| current.borrow().clone())
                .ok()
                .flatten(),
        };
        let Some(current) = current else {
            return match self {
                Self::Text { whole, .. } => whole.format_event(ctx, writer, event),
                Self::Json(json) => json.format_event(ctx, writer, event),
            };
        };
        let fields = current.lock().unwrap_or_else(|e| e.into_inner());
        match self {
            Self::Text { rest, .. } => {
                let ansi = writer.has_ansi_escapes();
                write_time_and_level(&mut writer, event.metadata().level(), ansi)?;
                fields.write_text(&mut writer, ansi)?;
                rest.format_event(ctx, writer, event)
            }
            Self::Json(json) => {
                let mut line = String::with_capacity(256);
                json.format_event(ctx, Writer::new(&mut line), event)?;
                // `{...}\n`: the span goes in before the closing brace.
                let Some(object) = line.trim_end().strip_suffix('}') else {
                    return writer.write_str(&line);
                };
                let span = serde_json::to_string(&*fields).map_err(|_| fmt::Error)?;
                writeln!(writer, "{object},\"span\":{span}}}")
            }
        }
    }
}

/// The time of a line, as `tracing-subscriber`'s `SystemTime` writes it
/// (`2026-12-02T03:22:31.123456Z`), at a third of its cost: its digits
/// go through `core::fmt`'s padding one field at a time, where
/// `humantime` writes them into a buffer.
pub(super) struct Rfc3339;

impl FormatTime for Rfc3339 {
    fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
        /// 10000-01-01: `humantime` writes years of four digits.
        const YEAR_10000: u64 = 253_402_300_800;
        let now = std::time::SystemTime::now();
        match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(since) if since.as_secs() < YEAR_10000 => {
                write!(writer, "{}", humantime::format_rfc3339_micros(now))
            }
            _ => SystemTime.format_time(writer),
        }
    }
}

/// `tracing-subscriber`'s escape codes, as it writes them in colour.
mod ansi {
    pub(super) const BOLD: &str = "\x1b[1m";
    pub(super) const DIMMED: &str = "\x1b[2m";
    pub(super) const ITALIC: &str = "\x1b[3m";
    pub(super) const RESET: &str = "\x1b[0m";
}

/// The start of a text line, as `tracing-subscriber` writes it: the time,
/// then the level.
fn write_time_and_level(writer: &mut Writer<'_>, level: &Level, ansi: bool) -> fmt::Result {
    if ansi {
        writer.write_str(ansi::DIMMED)?;
    }
    if Rfc3339.format_time(writer).is_err() {
        writer.write_str("<unknown time>")?;
    }
    if ansi {
        writer.write_str(ansi::RESET)?;
    }
    let (name, colour) = match *level {
        Level::TRACE => ("TRACE", "\x1b[35m"),
        Level::DEBUG => ("DEBUG", "\x1b[34m"),
        Level::INFO => (" INFO", "\x1b[32m"),
        Level::WARN => (" WARN", "\x1b[33m"),
        Level::ERROR => ("ERROR", "\x1b[31m"),
    };
    match ansi {
        true => write!(writer, " {colour}{name}{} ", ansi::RESET),
        false => write!(writer, " {name} "),
    }
}

impl Fields {
    /// `request{request_id=... method=GET ...}: `, the fields in the order
    /// the span had them recorded.
    fn write_text(&self, writer: &mut Writer<'_>, ansi: bool) -> fmt::Result {
        let mut text = TextFields {
            writer,
            ansi,
            first: true,
        };
        let (bold, dimmed, reset) = match ansi {
            true => (ansi::BOLD, ansi::DIMMED, ansi::RESET),
            false => ("", "", ""),
        };
        write!(text.writer, "{bold}{REQUEST_SPAN}{reset}{bold}{{{reset}")?;
        text.field("request_id", self.request_id.to_str().unwrap_or_default())?;
        text.field("method", &self.method)?;
        text.field("path", self.uri.path())?;
        let knative = knative();
        for (name, value) in [
            ("k_service", &knative.service),
            ("k_revision", &knative.revision),
            ("k_configuration", &knative.configuration),
        ] {
            if let Some(value) = value {
                text.field(name, format_args!("{value:?}"))?;
            }
        }
        if let Some(event) = &self.event {
            text.field("event_type", format_args!("{:?}", event.ty))?;
            text.field("event_id", format_args!("{:?}", event.id))?;
            text.field("event_source", format_args!("{:?}", event.source))?;
        }
        if let Some(function) = &self.function {
            text.field("function", function)?;
        }
        if let Some(revision) = &self.revision {
            text.field("revision", revision)?;
        }
        if let Some(route) = &self.route {
            text.field("route", route)?;
        }
        if let Some((status, duration_ms)) = self.end {
            match status {
                Status::Answered(status) => text.field("status", status)?,
                Status::Cancelled => text.field("status", "\"cancelled\"")?,
            }
            text.field("duration_ms", format_args!("{duration_ms:?}"))?;
        }
        write!(text.writer, "{bold}}}{reset}{dimmed}:{reset} ")
    }
}

/// Fields written as `tracing-subscriber`'s default field format writes
/// them: `name=value`, separated by spaces.
struct TextFields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    ansi: bool,
    first: bool,
}

impl TextFields<'_, '_> {
    fn field(&mut self, name: &str, value: impl fmt::Display) -> fmt::Result {
        let space = if self.first { "" } else { " " };
        self.first = false;
        match self.ansi {
            true => write!(
                self.writer,
                "{space}{}{name}{}{}={}{value}",
                ansi::ITALIC,
                ansi::RESET,
                ansi::DIMMED,
                ansi::RESET
            ),
            false => write!(self.writer, "{space}{name}={value}"),
        }
    }
}

/// The JSON `span` object: the fields in the order of their names (as
/// `tracing-subscriber` reads them back into a map), then the span's name.
impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let knative = knative();
        let mut map = serializer.serialize_map(None)?;
        if let Some((_, duration_ms)) = &self.end {
            map.serialize_entry("duration_ms", duration_ms)?;
        }
        if let Some(event) = &self.event {
            map.serialize_entry("event_id", &event.id)?;
            map.serialize_entry("event_source", &event.source)?;
            map.serialize_entry("event_type", &event.ty)?;
        }
        if let Some(function) = &self.function {
            map.serialize_entry("function", function.as_str())?;
        }
        for (name, value) in [
            ("k_configuration", &knative.configuration),
            ("k_revision", &knative.revision),
            ("k_service", &knative.service),
        ] {
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        map.serialize_entry("method", self.method.as_str())?;
        map.serialize_entry("path", self.uri.path())?;
        map.serialize_entry("request_id", self.request_id.to_str().unwrap_or_default())?;
        if let Some(revision) = &self.revision {
            map.serialize_entry("revision", &format_args!("{revision}"))?;
        }
        if let Some(route) = &self.route {
            map.serialize_entry("route", route)?;
        }
        if let Some((status, _)) = &self.end {
            match status {
                Status::Answered(status) => map.serialize_entry("status", status)?,
                Status::Cancelled => map.serialize_entry("status", "cancelled")?,
            }
        }
        map.serialize_entry("name", REQUEST_SPAN)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use tracing::subscriber::DefaultGuard;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::telemetry::captured::Captured;
    use crate::telemetry::json_fields::JsonSpanFields;
    use crate::telemetry::logs::request_span;
    use crate::telemetry::record::ACCESS_LOG;

    /// The host's log formats.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Shape {
        Text,
        /// Text at a terminal.
        Colour,
        Json,
    }

    /// A subscriber that writes lines as the host's log layer does.
    fn subscriber(shape: Shape) -> (Captured, DefaultGuard) {
        let lines = Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(shape == Shape::Colour)
            .with_writer(lines.writer());
        let registry = tracing_subscriber::registry();
        let guard = match shape {
            Shape::Json => tracing::subscriber::set_default(
                registry.with(
                    layer
                        .event_format(RequestLines::json())
                        .fmt_fields(JsonSpanFields),
                ),
            ),
            Shape::Text | Shape::Colour => tracing::subscriber::set_default(
                registry.with(layer.event_format(RequestLines::text())),
            ),
        };
        (lines, guard)
    }

    /// Logs a request's life (an event, routed, a guest's line, its end)
    /// with a real span or without, and gives back the lines.
    fn a_request(shape: Shape, with_span: bool, status: Option<u16>) -> Vec<String> {
        let (lines, _guard) = subscriber(shape);
        let id = HeaderValue::from_static("req-1");
        let uri = Uri::from_static("/log/a?x=1");
        let span = with_span.then(|| request_span(&id, &Method::POST, uri.path()));
        let log = RequestLog::new(&id, &Method::POST, &uri, span);
        tracing::info!("before the request");
        log.event("com.example.\"quoted\"", "e-1", "/src");
        let function = FunctionName::try_from("logger".to_owned()).unwrap();
        let revision = RevisionName::new(&function, 7);
        log.routed_to(&function, Some(&revision), RouteMatch::Prefix("/log"));
        log.in_scope(|| tracing::warn!(target: "shoal::guest", stream = "stderr", "a line"));
        log.ended(status, 1.25);
        log.in_scope(|| match status {
            Some(status) => tracing::info!(target: ACCESS_LOG, status, bytes = 5, "request"),
            None => tracing::info!(target: ACCESS_LOG, status = "cancelled", "request"),
        });
        tracing::info!("after the request");
        lines.text().lines().map(str::to_owned).collect()
    }

    /// A line without its time, which differs from one line to the next.
    fn timeless(line: &str, shape: Shape) -> &str {
        match shape {
            Shape::Json => &line[line.find(",\"level\"").expect(line)..],
            Shape::Text | Shape::Colour => &line[line.find(' ').expect(line)..],
        }
    }

    #[test]
    fn a_request_without_a_span_is_logged_byte_for_byte_as_with_one() {
        for shape in [Shape::Text, Shape::Colour, Shape::Json] {
            for status in [Some(200), None] {
                let with = a_request(shape, true, status);
                let without = a_request(shape, false, status);
                assert_eq!(with.len(), 4, "{with:#?}");
                assert_eq!(without.len(), 4, "{without:#?}");
                for (with, without) in with.iter().zip(&without) {
                    assert_eq!(timeless(with, shape), timeless(without, shape));
                }
                // What is compared has the request's fields where they
                // belong, and only there.
                let [before, guest, access, after] = &without[..] else {
                    unreachable!()
                };
                for line in [guest, access] {
                    assert!(
                        line.contains("req-1") && line.contains("logger-00007"),
                        "{line}"
                    );
                }
                for line in [before, after] {
                    assert!(!line.contains("req-1"), "{line}");
                }
                if shape == Shape::Json {
                    let access: serde_json::Value = serde_json::from_str(access).unwrap();
                    assert_eq!(access["span"]["route"], "/log/...");
                    assert_eq!(access["span"]["path"], "/log/a");
                    assert_eq!(access["span"]["event_type"], "com.example.\"quoted\"");
                    let status = status.map_or(serde_json::json!("cancelled"), |s| s.into());
                    assert_eq!(access["span"]["status"], status);
                } else if shape == Shape::Text {
                    assert!(
                        access.contains(" request{request_id=req-1 method=POST path=/log/a "),
                        "{access}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_time_is_written_as_tracing_subscriber_writes_it() {
        let time = |timer: &dyn FormatTime| {
            let mut text = String::new();
            timer.format_time(&mut Writer::new(&mut text)).unwrap();
            text
        };
        // Until the two are read within one second.
        let (ours, theirs) = loop {
            let before = time(&SystemTime);
            let ours = time(&Rfc3339);
            let after = time(&SystemTime);
            if before[..19] == after[..19] {
                break (ours, before);
            }
        };
        assert_eq!(ours.len(), theirs.len(), "{ours} {theirs}");
        assert_eq!(ours[..20], theirs[..20], "{ours} {theirs}");
        assert!(ours[20..26].bytes().all(|b| b.is_ascii_digit()), "{ours}");
        assert!(ours.ends_with('Z'), "{ours}");
    }

    #[test]
    fn a_request_future_carries_its_fields_in_each_poll_and_only_there() {
        let (lines, _guard) = subscriber(Shape::Text);
        let log = RequestLog::new(
            &HeaderValue::from_static("req-2"),
            &Method::GET,
            &Uri::from_static("/a"),
            None,
        );
        let mut polls = 0;
        let future = log.instrument(std::future::poll_fn(|cx| {
            polls += 1;
            tracing::info!("poll {polls}");
            match polls {
                1 => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                _ => Poll::Ready(()),
            }
        }));
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(future.as_mut().poll(&mut cx).is_pending());
        tracing::info!("between the polls");
        assert!(future.as_mut().poll(&mut cx).is_ready());
        let text = lines.text();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].contains("request{request_id=req-2 method=GET path=/a}: "),
            "{text}"
        );
        assert!(!lines[1].contains("request{"), "{text}");
        assert!(
            lines[2].contains("request{request_id=req-2 method=GET path=/a}: "),
            "{text}"
        );
    }
}
