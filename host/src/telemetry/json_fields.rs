//! Span fields for the JSON log format, kept as the text of one JSON object.
//!
//! `tracing-subscriber`'s own `JsonFields` keeps the same text, but each time
//! a field is recorded into a span it parses the object it has and writes it
//! out again whole. A request's span has fields recorded five times (its
//! function, revision, route, status and duration), so that was five parses
//! and five writes per request. These fields are appended instead: a field
//! recorded twice appears twice, and the last one wins where the line is
//! written (the object is read back into a map there), as it did before.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::Writer;

/// Formats span fields as a JSON object, appending fields recorded later.
pub(super) struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut entries = Entries::default();
        fields.record(&mut entries);
        writer.write_char('{')?;
        writer.write_str(&entries.0)?;
        writer.write_char('}')
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut entries = Entries::default();
        fields.record(&mut entries);
        if entries.0.is_empty() {
            return Ok(());
        }
        let object = &mut current.fields;
        match object.as_str() {
            "" | "{}" => {
                object.clear();
                object.push('{');
            }
            // `{...}`: the closing brace gives way to the new entries.
            _ => {
                object.pop();
                object.push(',');
            }
        }
        object.push_str(&entries.0);
        object.push('}');
        Ok(())
    }
}

/// `"name":value` pairs, separated by commas, as `serde_json` writes them.
#[derive(Default)]
struct Entries(String);

impl Entries {
    fn entry(&mut self, field: &Field, value: impl serde::Serialize) {
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        // Serialising fails only for a value that cannot be serialised,
        // which no type below is; such a pair would be left out whole.
        if let (Ok(name), Ok(value)) = (serde_json::to_string(name), serde_json::to_string(&value))
        {
            if !self.0.is_empty() {
                self.0.push(',');
            }
            let _ = write!(self.0, "{name}:{value}");
        }
    }
}

impl Visit for Entries {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // As `serde_json::Value` has it: NaN and infinities are `null`.
        self.entry(field, serde_json::Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, value);
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.entry(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::telemetry::captured::Captured;

    /// The `span` object of the one line logged by `log`, with this module's
    /// fields (`ours`) or with `tracing-subscriber`'s.
    fn logged_span(ours: bool, log: impl Fn()) -> serde_json::Value {
        let lines = Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(lines.writer());
        if ours {
            let layer = layer.fmt_fields(JsonSpanFields);
            tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), &log);
        } else {
            tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), &log);
        }
        let line: serde_json::Value = serde_json::from_str(lines.text().trim()).unwrap();
        line["span"].clone()
    }

    #[test]
    fn a_span_reads_as_with_tracing_subscribers_own_json_fields() {
        let log = || {
            let span = tracing::info_span!(
                "request",
                request_id = "a\"b\\c\n",
                method = %http::Method::GET,
                function = tracing::field::Empty,
                status = tracing::field::Empty,
                duration_ms = tracing::field::Empty,
                ratio = tracing::field::Empty,
                k_service = None::<&str>,
            );
            span.record("function", tracing::field::display("hello"));
            span.record("status", 200);
            span.record("status", "cancelled");
            span.record("duration_ms", 2.5);
            span.record("ratio", f64::NAN);
            span.in_scope(|| tracing::info!(status = 200, "request"));
        };
        let ours = logged_span(true, log);
        assert_eq!(ours, logged_span(false, log));
        assert_eq!(ours["request_id"], "a\"b\\c\n");
        assert_eq!(ours["status"], "cancelled", "the last one recorded");
        assert_eq!(ours["duration_ms"], 2.5);
    }

    #[test]
    fn a_span_without_fields_reads_as_an_empty_object_and_takes_fields_later() {
        let log = || {
            let span = tracing::info_span!("bare");
            span.in_scope(|| tracing::info!("first"));
        };
        assert_eq!(logged_span(true, log), serde_json::json!({"name": "bare"}));
        let log = || {
            let span = tracing::info_span!("late", status = tracing::field::Empty);
            span.record("status", 503);
            span.in_scope(|| tracing::info!("first"));
        };
        let ours = logged_span(true, log);
        assert_eq!(ours, logged_span(false, log));
        assert_eq!(ours["status"], 503);
    }
}
