//! CloudEvents 1.0: reading the event a function is sent and replying with
//! one.
//!
//! The host delivers an event as an HTTP POST in *binary mode*: each
//! attribute in a `ce-<name>` header, the data content type in
//! `Content-Type` and the data as the body. [`Request::event`] reads that,
//! and also a *structured-mode* event (`Content-Type:
//! application/cloudevents+json`, the whole event one JSON object), so a
//! function can be called with either. [`Response::event`] replies in binary
//! mode.
//!
//! Header values follow the CloudEvents HTTP binding both ways. Reading: a
//! value that is one RFC 9110 quoted-string is unquoted, then `%XX` is
//! percent-decoded once (a `%` not followed by two hex digits is kept as it
//! is), and the bytes must then be UTF-8. Writing: space, `"`, `%` and every
//! byte outside printable ASCII (`!` to `~`) of the UTF-8 value are
//! percent-encoded, so any string survives the trip.
//!
//! An [`Event`] always has spec version `1.0` and extension names of 1 to
//! 20 lower-case letters and digits that are not a context attribute's
//! name; an event read from a request also has a non-empty `id`, `source`
//! and `type`. Other values are not checked (`time` is kept as the text
//! sent).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::{Request, Response};

/// The only CloudEvents version this crate reads and writes.
const SPEC_VERSION: &str = "1.0";

/// The prefix of an attribute's header in binary mode.
const HEADER_PREFIX: &str = "ce-";

/// The `Content-Type` of a structured-mode event.
const STRUCTURED: &str = "application/cloudevents+json";

/// The `Content-Type` of a batch of structured-mode events.
const BATCH: &str = "application/cloudevents-batch+json";

/// The longest extension name, in characters, CloudEvents allows.
const MAX_EXTENSION_NAME: usize = 20;

/// Names of the context attributes, which no extension may take; `data`
/// and `data_base64` are the data's members in structured mode.
const CONTEXT_ATTRIBUTES: [&str; 9] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
];

/// A CloudEvent: its context attributes, extension attributes and data.
///
/// ```
/// use shoal::Event;
///
/// # fn example() -> Result<(), shoal::EventError> {
/// let event = Event::new("A-17/priced", "/shop/orders", "com.example.order.priced")
///     .with_subject("A-17")
///     .with_extension("partitionkey", "A")?
///     .with_json(&serde_json::json!({"order": "A-17", "total_cents": 4150}))?;
/// assert_eq!(event.data_content_type(), Some("application/json"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    id: String,
    source: String,
    ty: String,
    subject: Option<String>,
    time: Option<String>,
    data_content_type: Option<String>,
    data_schema: Option<String>,
    extensions: BTreeMap<String, String>,
    data: Vec<u8>,
}

impl Event {
    /// An event with no data. `id` and `source` together identify it (a
    /// redelivered event has the same ones), `ty` is its type, such as
    /// `com.example.order.created`; CloudEvents requires all three to be
    /// non-empty. The spec version is `1.0`.
    pub fn new(id: impl Into<String>, source: impl Into<String>, ty: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            source: source.into(),
            ty: ty.into(),
            subject: None,
            time: None,
            data_content_type: None,
            data_schema: None,
            extensions: BTreeMap::new(),
            data: Vec::new(),
        }
    }

    /// The same event with a `subject`: what the event is about, within its
    /// source.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// The same event with a `time`: when it happened, as an RFC 3339
    /// timestamp such as `2026-05-01T12:00:00Z` (not checked).
    pub fn with_time(mut self, time: impl Into<String>) -> Self {
        self.time = Some(time.into());
        self
    }

    /// The same event with a `dataschema`: the URI of the schema its data
    /// follows.
    pub fn with_data_schema(mut self, schema: impl Into<String>) -> Self {
        self.data_schema = Some(schema.into());
        self
    }

    /// The same event with `data`, of media type `content_type`.
    pub fn with_data(mut self, content_type: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        self.data_content_type = Some(content_type.into());
        self.data = data.into();
        self
    }

    /// The same event with `value` as JSON data (`application/json`).
    pub fn with_json<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Self, EventError> {
        let json = serde_json::to_vec(value).map_err(|error| {
            EventError::Json(format!("cannot serialize the event's data: {error}"))
        })?;
        Ok(self.with_data("application/json", json))
    }

    /// The same event with extension attribute `name` set to `value`. The
    /// name must be 1 to 20 lower-case letters `a`-`z` and digits, and not a
    /// context attribute's name (`id`, `subject`, ...).
    pub fn with_extension(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, EventError> {
        let name = name.into();
        check_extension_name(&name)?;
        self.extensions.insert(name, value.into());
        Ok(self)
    }

    /// The `id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `source`, a URI reference.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The `type`.
    pub fn ty(&self) -> &str {
        &self.ty
    }

    /// The `specversion`: always `1.0`.
    pub fn specversion(&self) -> &str {
        SPEC_VERSION
    }

    /// The `subject`, if there is one.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The `time`, as sent, if there is one.
    pub fn time(&self) -> Option<&str> {
        self.time.as_deref()
    }

    /// The `datacontenttype`: the media type of the data, if given.
    pub fn data_content_type(&self) -> Option<&str> {
        self.data_content_type.as_deref()
    }

    /// The `dataschema`, if there is one.
    pub fn data_schema(&self) -> Option<&str> {
        self.data_schema.as_deref()
    }

    /// The value of extension attribute `name`, if the event has it.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions.get(name).map(String::as_str)
    }

    /// Every extension attribute, as `(name, value)`, ordered by name.
    pub fn extensions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.extensions
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The data; empty if the event has none.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The data, parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, EventError> {
        serde_json::from_slice(&self.data).map_err(|error| {
            EventError::Json(format!(
                "the event's data is not the JSON expected: {error}"
            ))
        })
    }

    /// The attributes of a binary-mode event, read from its headers; the
    /// data is left empty.
    fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, EventError> {
        let mut attributes = BTreeMap::new();
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            let (attribute, value) = if name == "content-type" {
                ("datacontenttype".to_owned(), value.to_vec())
            } else if let Some(attribute) = name.strip_prefix(HEADER_PREFIX) {
                (
                    attribute.to_owned(),
                    percent_decode(&unquote(value.trim_ascii())),
                )
            } else {
                continue;
            };
            let Ok(value) = String::from_utf8(value) else {
                let reason = if name == "content-type" {
                    "(`Content-Type`) is not valid UTF-8"
                } else {
                    "is not valid UTF-8 after percent-decoding"
                };
                return Err(EventError::invalid(&attribute, reason));
            };
            add(&mut attributes, attribute, value)?;
        }
        Self::from_attributes(attributes, HEADER_PREFIX)
    }

    /// A structured-mode event: one JSON object holding the attributes and
    /// the data.
    fn from_json(body: &[u8]) -> Result<Self, EventError> {
        let mut object: Map<String, Value> = serde_json::from_slice(body).map_err(|error| {
            EventError::Body(format!("the event is not a JSON object: {error}"))
        })?;
        let data = object.remove("data").filter(|data| !data.is_null());
        let data_base64 = object.remove("data_base64").filter(|data| !data.is_null());
        let mut attributes = BTreeMap::new();
        for (name, value) in object {
            let value = match value {
                Value::Null => continue,
                Value::String(value) => value,
                // Extensions may be booleans and integers, which have a
                // canonical string form; context attributes are strings.
                Value::Bool(_) | Value::Number(_) if !CONTEXT_ATTRIBUTES.contains(&&*name) => {
                    value.to_string()
                }
                _ => return Err(EventError::invalid(&name, "is not a string")),
            };
            add(&mut attributes, name, value)?;
        }
        let mut event = Self::from_attributes(attributes, "")?;
        event.data = match (data, data_base64) {
            (Some(_), Some(_)) => {
                return Err(EventError::invalid("data_base64", "is given with `data`"));
            }
            (None, Some(Value::String(base64))) => base64_decode(&base64)
                .ok_or_else(|| EventError::invalid("data_base64", "is not valid base64"))?,
            (None, Some(_)) => return Err(EventError::invalid("data_base64", "is not a string")),
            // JSON data stays JSON; a string of another media type is the
            // data's text.
            (Some(Value::String(text)), None)
                if !event.data_content_type.as_deref().is_none_or(is_json) =>
            {
                text.into_bytes()
            }
            (Some(data), None) => data.to_string().into_bytes(),
            (None, None) => Vec::new(),
        };
        Ok(event)
    }

    /// An event from its attributes by name; `prefix` is put before a
    /// missing attribute's name in the error (`ce-` in binary mode).
    fn from_attributes(
        mut attributes: BTreeMap<String, String>,
        prefix: &str,
    ) -> Result<Self, EventError> {
        let mut required = |name: &str| match attributes.remove(name) {
            None => Err(EventError::Missing(format!("{prefix}{name}"))),
            Some(value) if value.is_empty() => Err(EventError::invalid(name, "is empty")),
            Some(value) => Ok(value),
        };
        let specversion = required("specversion")?;
        if specversion != SPEC_VERSION {
            return Err(EventError::SpecVersion(specversion));
        }
        let (id, source, ty) = (required("id")?, required("source")?, required("type")?);
        let subject = attributes.remove("subject");
        let time = attributes.remove("time");
        let data_content_type = attributes.remove("datacontenttype");
        let data_schema = attributes.remove("dataschema");
        // What is left are extensions. A sender's header that is no valid
        // attribute name (`ce-trace-id`) is no attribute: it is skipped,
        // not held against the event.
        attributes.retain(|name, _| check_extension_name(name).is_ok());
        Ok(Self {
            id,
            source,
            ty,
            subject,
            time,
            data_content_type,
            data_schema,
            extensions: attributes,
            data: Vec::new(),
        })
    }

    /// The headers of this event in binary mode.
    fn headers(&self) -> Vec<(String, Vec<u8>)> {
        let optional = [
            ("subject", &self.subject),
            ("time", &self.time),
            ("dataschema", &self.data_schema),
        ];
        let attributes = [
            ("specversion", SPEC_VERSION),
            ("id", self.id.as_str()),
            ("source", self.source.as_str()),
            ("type", self.ty.as_str()),
        ]
        .into_iter()
        .chain(
            optional
                .into_iter()
                .filter_map(|(name, value)| Some((name, value.as_deref()?))),
        )
        .chain(self.extensions());
        let mut headers: Vec<(String, Vec<u8>)> = attributes
            .map(|(name, value)| (format!("{HEADER_PREFIX}{name}"), percent_encode(value)))
            .collect();
        if let Some(content_type) = &self.data_content_type {
            headers.push(("content-type".to_owned(), content_type.clone().into_bytes()));
        }
        headers
    }
}

impl Request {
    /// The CloudEvent this request carries, in binary mode (`ce-*`
    /// headers, the data as the body) or structured mode (`Content-Type:
    /// application/cloudevents+json`). Reads the whole body.
    pub fn event(self) -> Result<Event, EventError> {
        let media_type = self.header("content-type").map(media_type);
        if media_type.is_some_and(|media_type| media_type.eq_ignore_ascii_case(BATCH)) {
            return Err(EventError::Body(format!(
                "a batch of events (`{BATCH}`) is not supported"
            )));
        }
        if media_type.is_some_and(|media_type| media_type.eq_ignore_ascii_case(STRUCTURED)) {
            return Event::from_json(&read_body(self)?);
        }
        let event = Event::from_headers(self.headers())?;
        Ok(Event {
            data: read_body(self)?,
            ..event
        })
    }
}

fn read_body(request: Request) -> Result<Vec<u8>, EventError> {
    request
        .body()
        .map_err(|error| EventError::Body(format!("cannot read the event: {error}")))
}

impl Response {
    /// `200 OK` carrying `event` in binary mode: its attributes in `ce-*`
    /// headers, its data content type as `Content-Type` and its data as the
    /// body.
    pub fn event(event: Event) -> Self {
        event
            .headers()
            .into_iter()
            .fold(Self::ok(), |response, (name, value)| {
                response.with_header(name, value)
            })
            .with_body(event.data)
    }
}

/// Why a request is not a CloudEvent this crate can read, or an event
/// cannot be built or its data read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventError {
    /// A required attribute is missing, named as it is sent: `ce-id` in
    /// binary mode, `id` in structured mode.
    Missing(String),
    /// An attribute is present but its value cannot be used.
    Invalid {
        /// The attribute's name.
        attribute: String,
        /// What is wrong with it, such as `is empty`.
        reason: String,
    },
    /// The spec version is not `1.0`; it is this one.
    SpecVersion(String),
    /// This extension attribute name is not 1 to 20 lower-case letters and
    /// digits, or is a context attribute's name.
    ExtensionName(String),
    /// The data is not JSON of the type asked for, or a value could not be
    /// serialized as JSON: the message.
    Json(String),
    /// The body could not be read, a structured-mode event is not a JSON
    /// object, or the request is a batch of events: the message.
    Body(String),
}

impl EventError {
    fn invalid(attribute: &str, reason: &str) -> Self {
        Self::Invalid {
            attribute: attribute.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(name) => write!(f, "the event has no `{name}` attribute"),
            Self::Invalid { attribute, reason } => write!(f, "attribute `{attribute}` {reason}"),
            Self::SpecVersion(version) => write!(
                f,
                "CloudEvents spec version `{version}` is not supported: only `{SPEC_VERSION}` is"
            ),
            Self::ExtensionName(name) if CONTEXT_ATTRIBUTES.contains(&name.as_str()) => write!(
                f,
                "`{name}` cannot be an extension attribute: it names a context attribute"
            ),
            Self::ExtensionName(name) => write!(
                f,
                "`{name}` is not a valid extension attribute name: use 1 to \
                 {MAX_EXTENSION_NAME} lower-case letters a-z and digits 0-9"
            ),
            Self::Json(message) | Self::Body(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for EventError {}

/// Adds attribute `name` unless the event already has it.
fn add(
    attributes: &mut BTreeMap<String, String>,
    name: String,
    value: String,
) -> Result<(), EventError> {
    if attributes.contains_key(&name) {
        return Err(EventError::invalid(&name, "is given twice"));
    }
    attributes.insert(name, value);
    Ok(())
}

fn check_extension_name(name: &str) -> Result<(), EventError> {
    let valid = (1..=MAX_EXTENSION_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && !CONTEXT_ATTRIBUTES.contains(&name);
    if valid {
        Ok(())
    } else {
        Err(EventError::ExtensionName(name.to_owned()))
    }
}

/// The media type of a `Content-Type` value, without its parameters.
fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// Whether data of media type `content_type` is JSON.
fn is_json(content_type: &str) -> bool {
    let media_type = media_type(content_type).to_ascii_lowercase();
    media_type == "application/json" || media_type == "text/json" || media_type.ends_with("+json")
}

/// `value` without its quotes and escapes if it is one quoted-string
/// (RFC 9110, 5.6.4); otherwise `value`.
fn unquote(value: &[u8]) -> Cow<'_, [u8]> {
    let Some(inner) = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
    else {
        return Cow::Borrowed(value);
    };
    let mut unquoted = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&byte) = bytes.next() {
        match byte {
            b'\\' => match bytes.next() {
                Some(&escaped) => unquoted.push(escaped),
                None => return Cow::Borrowed(value),
            },
            b'"' => return Cow::Borrowed(value),
            byte => unquoted.push(byte),
        }
    }
    Cow::Owned(unquoted)
}

/// `value` with each `%XX` replaced by the byte it stands for.
fn percent_decode(value: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some((&byte, after)) = rest.split_first() {
        let escaped = match after {
            [high, low, ..] if byte == b'%' => hex_digit(*high).zip(hex_digit(*low)),
            _ => None,
        };
        match escaped {
            Some((high, low)) => {
                decoded.push((high << 4) | low);
                rest = &after[2..];
            }
            None => {
                decoded.push(byte);
                rest = after;
            }
        }
    }
    decoded
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|digit| digit as u8)
}

/// The UTF-8 bytes of `value`, with space, `"`, `%` and every byte outside
/// printable ASCII as `%XX`.
fn percent_encode(value: &str) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut encoded = Vec::with_capacity(value.len());
    for byte in value.bytes() {
        if matches!(byte, b'!'..=b'~') && byte != b'"' && byte != b'%' {
            encoded.push(byte);
        } else {
            encoded.extend([
                b'%',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 15)],
            ]);
        }
    }
    encoded
}

/// The bytes `text` encodes in standard base64 (RFC 4648, 4), padded or
/// not; `None` if it is not base64.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn sextet(byte: u8) -> Option<u32> {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        Some(u32::from(value))
    }
    let text = text.as_bytes();
    let unpadded = text.strip_suffix(b"==").or_else(|| text.strip_suffix(b"="));
    if unpadded.is_some() && !text.len().is_multiple_of(4) {
        return None;
    }
    let text = unpadded.unwrap_or(text);
    if text.len() % 4 == 1 {
        return None;
    }
    let mut decoded = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for chunk in text.chunks(4) {
        let mut bits = 0;
        for (i, &byte) in chunk.iter().enumerate() {
            bits |= sextet(byte)? << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        decoded.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(headers: &[(&str, &str)]) -> Result<Event, EventError> {
        Event::from_headers(
            headers
                .iter()
                .map(|(name, value)| (*name, value.as_bytes())),
        )
    }

    fn minimal() -> Vec<(&'static str, &'static str)> {
        vec![
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
        ]
    }

    fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> &'a str {
        let (_, value) = headers.iter().find(|(n, _)| n == name).unwrap();
        std::str::from_utf8(value).unwrap()
    }

    #[test]
    fn binary_mode_round_trips_any_text() {
        let event = Event::new("id 1", "/shop/orders", "com.example.order.created")
            .with_subject("Euro € 😀")
            .with_time("2026-05-01T12:00:00Z")
            .with_data_schema("https://example.com/schema?v=\"2\"")
            .with_extension("discount", "100%")
            .unwrap()
            .with_data("text/plain; charset=utf-8", "body");
        let headers = event.headers();
        assert_eq!(
            header(&headers, "ce-subject"),
            "Euro%20%E2%82%AC%20%F0%9F%98%80"
        );
        assert_eq!(header(&headers, "ce-discount"), "100%25");
        assert_eq!(
            header(&headers, "ce-dataschema"),
            "https://example.com/schema?v=%222%22"
        );
        assert_eq!(
            header(&headers, "content-type"),
            "text/plain; charset=utf-8"
        );
        let mut decoded =
            Event::from_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()))).unwrap();
        decoded.data = b"body".to_vec();
        assert_eq!(decoded, event);
    }

    #[test]
    fn values_are_unquoted_then_percent_decoded() {
        let mut headers = minimal();
        headers.extend([
            ("ce-subject", r#""a \"quoted\" %41 value""#),
            ("ce-comment", "  100% sure %zz  "),
            ("CE-Upper", "%c3%a9"),
            ("ce-lone", "\""),
        ]);
        let event = decode(&headers).unwrap();
        assert_eq!(event.subject(), Some(r#"a "quoted" A value"#));
        assert_eq!(event.extension("comment"), Some("100% sure %zz"));
        assert_eq!(event.extension("upper"), Some("é"));
        assert_eq!(event.extension("lone"), Some("\""));
        assert_eq!(event.data_content_type(), None);
    }

    #[test]
    fn invalid_utf8_after_decoding_is_refused() {
        let mut headers = minimal();
        headers.push(("ce-subject", "%FF"));
        let error = decode(&headers).unwrap_err();
        assert_eq!(
            error.to_string(),
            "attribute `subject` is not valid UTF-8 after percent-decoding"
        );
    }

    #[test]
    fn required_attributes_and_version_are_checked() {
        for missing in ["ce-specversion", "ce-id", "ce-source", "ce-type"] {
            let headers: Vec<_> = minimal()
                .into_iter()
                .filter(|(n, _)| *n != missing)
                .collect();
            let error = decode(&headers).unwrap_err();
            assert_eq!(error, EventError::Missing(missing.to_owned()));
            assert_eq!(
                error.to_string(),
                format!("the event has no `{missing}` attribute")
            );
        }
        assert_eq!(
            decode(&[("content-type", "application/json")]).unwrap_err(),
            EventError::Missing("ce-specversion".to_owned())
        );
        let mut headers = minimal();
        headers[0].1 = "0.3";
        assert_eq!(
            decode(&headers).unwrap_err().to_string(),
            "CloudEvents spec version `0.3` is not supported: only `1.0` is"
        );
        let mut headers = minimal();
        headers[1].1 = "\"\"";
        assert_eq!(
            decode(&headers).unwrap_err().to_string(),
            "attribute `id` is empty"
        );
        let mut headers = minimal();
        headers.push(("ce-id", "2"));
        assert_eq!(
            decode(&headers).unwrap_err().to_string(),
            "attribute `id` is given twice"
        );
    }

    #[test]
    fn extension_names_are_checked() {
        let event = Event::new("1", "/s", "t");
        for good in ["a", "traceparent", "x0", "abcdefghij0123456789"] {
            assert!(event.clone().with_extension(good, "v").is_ok(), "{good}");
        }
        for bad in [
            "",
            "Trace",
            "trace-id",
            "trace_id",
            "é",
            "abcdefghij01234567890",
            "subject",
            "data",
        ] {
            assert_eq!(
                event.clone().with_extension(bad, "v").unwrap_err(),
                EventError::ExtensionName(bad.to_owned()),
            );
        }
        // Reading, a header that names no valid attribute is skipped.
        let mut headers = minimal();
        headers.push(("ce-trace-id", "1"));
        headers.push(("ce-data", "1"));
        headers.push(("ce-ok", "2"));
        let read = decode(&headers).unwrap();
        assert_eq!(read.extensions().collect::<Vec<_>>(), [("ok", "2")]);
    }

    #[test]
    fn json_data_round_trips() {
        let event = Event::new("1", "/s", "t")
            .with_json(&serde_json::json!({"order": "A-17"}))
            .unwrap();
        assert_eq!(event.data_content_type(), Some("application/json"));
        let value: Value = event.json().unwrap();
        assert_eq!(value["order"], "A-17");
        let error = event.json::<Vec<u32>>().unwrap_err();
        assert!(matches!(error, EventError::Json(_)), "{error}");
    }

    #[test]
    fn structured_mode_reads_json_data() {
        let body = br#"{"specversion": "1.0", "id": "1", "source": "/s", "type": "t",
            "datacontenttype": "application/json", "data": {"order": "A-17"},
            "sampled": true, "sequence": 42, "partitionkey": "A", "subject": null}"#;
        let event = Event::from_json(body).unwrap();
        assert_eq!((event.id(), event.source(), event.ty()), ("1", "/s", "t"));
        assert_eq!(event.subject(), None);
        assert_eq!(event.data(), br#"{"order":"A-17"}"#);
        let extensions: Vec<_> = event.extensions().collect();
        assert_eq!(
            extensions,
            [
                ("partitionkey", "A"),
                ("sampled", "true"),
                ("sequence", "42")
            ]
        );
    }

    #[test]
    fn structured_mode_reads_string_and_base64_data() {
        let text = r#"{"specversion": "1.0", "id": "1", "source": "/s", "type": "t",
            "datacontenttype": "text/plain", "data": "Euro € 😀"}"#;
        assert_eq!(
            Event::from_json(text.as_bytes()).unwrap().data(),
            "Euro € 😀".as_bytes()
        );
        let json_string = br#"{"specversion": "1.0", "id": "1", "source": "/s", "type": "t",
            "data": "hi"}"#;
        assert_eq!(Event::from_json(json_string).unwrap().data(), br#""hi""#);
        let binary = br#"{"specversion": "1.0", "id": "1", "source": "/s", "type": "t",
            "datacontenttype": "application/octet-stream", "data_base64": "AP+A"}"#;
        assert_eq!(Event::from_json(binary).unwrap().data(), [0x00, 0xFF, 0x80]);
    }

    #[test]
    fn structured_mode_refuses_bad_events() {
        let cases: [(&[u8], &str); 5] = [
            (br#"{"id": "1", "source": "/s", "type": "t"}"#, "the event has no `specversion` attribute"),
            (br#"{"specversion": "1.0", "id": 1, "source": "/s", "type": "t"}"#, "attribute `id` is not a string"),
            (
                br#"{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data_base64": "A*=="}"#,
                "attribute `data_base64` is not valid base64",
            ),
            (
                br#"{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": 1, "data_base64": ""}"#,
                "attribute `data_base64` is given with `data`",
            ),
            (b"[]", "the event is not a JSON object: invalid type: sequence, expected a map at line 1 column 0"),
        ];
        for (body, message) in cases {
            assert_eq!(Event::from_json(body).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn base64_decodes_padded_and_unpadded() {
        let cases: [(&str, &[u8]); 6] = [
            ("", b""),
            ("Zg==", b"f"),
            ("Zm8=", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYg", b"foob"),
            ("Zm9vYmE=", b"fooba"),
        ];
        for (text, bytes) in cases {
            assert_eq!(base64_decode(text).as_deref(), Some(bytes), "{text}");
        }
        for bad in ["Z", "Zg=", "Z===", "Zm9v Yg==", "Zm=v", "Zm9v-_"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }
}
