//! CloudEvents 1.0 over HTTP, as the host reads them: binary mode (the
//! attributes in `ce-*` headers, `Content-Type` as `datacontenttype`, the
//! body as data) and structured mode (`application/cloudevents+json`: the
//! whole event in a JSON body).
//!
//! Functions always receive binary mode, so a structured event is turned
//! into `ce-*` headers and its data into the body. Header values are
//! decoded as the HTTP binding says: unquoted, then percent-decoded once,
//! and the result must be UTF-8. A `%` not followed by two hex digits is
//! kept as it is, since some senders do not encode at all.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode, utf8_percent_encode};
use serde_json::value::RawValue;

/// The prefix of binary mode's attribute headers.
const PREFIX: &str = "ce-";

/// The only CloudEvents version the host reads.
pub const SPEC_VERSION: &str = "1.0";

/// The media type of a structured event in JSON.
const STRUCTURED: &str = "application/cloudevents+json";

/// The media type of a batch of structured events.
const BATCH: &str = "application/cloudevents-batch+json";

/// What a header value must percent-encode: controls, space, `"`, `%`
/// (and, by `utf8_percent_encode`, every byte outside ASCII).
const ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// How an HTTP request carries its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In `ce-*` headers and the body.
    Binary,
    /// As one JSON document (`application/cloudevents+json`).
    Structured,
    /// As a JSON array of structured events
    /// (`application/cloudevents-batch+json`).
    Batch,
}

/// The attributes an event is routed and told apart by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// `id`: with `source`, what makes the event unique.
    pub id: String,
    /// `source`.
    pub source: String,
    /// `type`.
    pub ty: String,
    /// `subject`, if any.
    pub subject: Option<String>,
}

/// Why a request does not hold a valid event (answered 400, or 415 for a
/// format the host does not read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A required attribute is missing.
    #[error("the event has no `{0}` attribute (binary mode: header `ce-{0}`)")]
    Missing(&'static str),
    /// A required attribute is empty.
    #[error("the event's `{0}` attribute is empty")]
    Empty(&'static str),
    /// An attribute is given twice.
    #[error("the event's `{0}` attribute is given twice")]
    Twice(String),
    /// Not CloudEvents 1.0.
    #[error("the event's specversion is `{0}`; the host reads CloudEvents 1.0 only")]
    SpecVersion(String),
    /// An attribute's value is not UTF-8 once decoded.
    #[error("the event's `{0}` attribute is not valid UTF-8 once percent-decoded")]
    NotUtf8(String),
    /// An attribute's value has the wrong JSON type, or a name that
    /// CloudEvents does not allow.
    #[error("the event's `{name}` attribute is invalid: {why}")]
    Invalid {
        /// The attribute.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A structured event that is not a JSON object.
    #[error("the structured event is not a JSON object: {0}")]
    Json(String),
    /// Both `data` and `data_base64`.
    #[error("the structured event has both `data` and `data_base64`")]
    DataTwice,
    /// `data_base64` that is not base64.
    #[error("the structured event's `data_base64` is not valid base64")]
    Base64,
    /// The body could not be read (the client went away, say).
    #[error("the event's body could not be read: {0}")]
    Unreadable(String),
    /// A batch, which the host takes only with `--events-batch`.
    #[error(
        "batched events ({BATCH}) are not taken here: send each event in binary or structured \
         mode (or start the host with --events-batch)"
    )]
    Batch,
    /// An event of a batch is invalid.
    #[error("event {index} of the batch: {error}")]
    InBatch {
        /// Its place in the batch, from 1.
        index: usize,
        /// What is wrong with it.
        error: Box<EventError>,
    },
    /// A structured format other than JSON.
    #[error("the event format `{0}` is not supported: send application/cloudevents+json")]
    Format(String),
}

impl EventError {
    /// Whether the request is well formed but in a format the host does
    /// not take (415), rather than a broken event (400).
    pub fn is_unsupported_format(&self) -> bool {
        match self {
            Self::Batch | Self::Format(_) => true,
            Self::InBatch { error, .. } => error.is_unsupported_format(),
            _ => false,
        }
    }
}

/// The content mode of a request with `headers`; refused for a structured
/// format other than JSON.
pub fn mode(headers: &HeaderMap) -> Result<Mode, EventError> {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Mode::Binary);
    };
    let media = content_type
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media == STRUCTURED {
        Ok(Mode::Structured)
    } else if media == BATCH {
        Ok(Mode::Batch)
    } else if media.starts_with("application/cloudevents") {
        Err(EventError::Format(media))
    } else {
        Ok(Mode::Binary)
    }
}

/// The attributes of a binary-mode event in `headers`, every `ce-*` header
/// checked.
pub fn binary(headers: &HeaderMap) -> Result<Attributes, EventError> {
    let mut found = Found::default();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix(PREFIX) else {
            continue;
        };
        let value =
            decode(value.as_bytes()).ok_or_else(|| EventError::NotUtf8(attribute.to_owned()))?;
        found.add(attribute, value)?;
    }
    found.attributes()
}

/// A structured event turned into binary mode: its attributes, the `ce-*`
/// and `Content-Type` headers a function receives, and its data.
pub struct Converted {
    /// Its attributes.
    pub attributes: Attributes,
    /// `ce-*` headers, and `Content-Type` if it has a `datacontenttype`.
    pub headers: HeaderMap,
    /// Its data.
    pub data: Bytes,
}

/// Reads a structured-mode event from `body`.
pub fn structured(body: &[u8]) -> Result<Converted, EventError> {
    let raw: BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
    from_members(raw)
}

/// Reads a batch of structured events from `body`: a JSON array.
pub fn batch(body: &[u8]) -> Result<Vec<Converted>, EventError> {
    let events: Vec<BTreeMap<String, Box<RawValue>>> = serde_json::from_slice(body)
        .map_err(|e| EventError::Json(format!("a batch is a JSON array of events: {e}")))?;
    events
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            from_members(raw).map_err(|error| EventError::InBatch {
                index: index + 1,
                error: Box::new(error),
            })
        })
        .collect()
}

/// A structured event from its JSON object's members.
fn from_members(raw: BTreeMap<String, Box<RawValue>>) -> Result<Converted, EventError> {
    // `data` is kept as written (its bytes become the body); every other
    // member is read as a value.
    let mut members = serde_json::Map::new();
    let mut data = None;
    for (name, value) in raw {
        if name == "data" {
            data = Some(value);
            continue;
        }
        let value =
            serde_json::from_str(value.get()).map_err(|e| EventError::Json(e.to_string()))?;
        members.insert(name, value);
    }
    convert(members, data)
}

/// The binary form of a structured event's `members`, with `data` as
/// written.
fn convert(
    members: serde_json::Map<String, serde_json::Value>,
    data: Option<Box<RawValue>>,
) -> Result<Converted, EventError> {
    let mut found = Found::default();
    let mut headers = HeaderMap::new();
    let mut content_type = None;
    let mut data_base64 = None;
    for (name, value) in members {
        let text = match value {
            serde_json::Value::String(text) => text,
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) if n.is_i64() => n.to_string(),
            serde_json::Value::Null => continue,
            _ => {
                return Err(EventError::Invalid {
                    name,
                    why: "it must be a string, an integer or a boolean",
                });
            }
        };
        match name.as_str() {
            "data_base64" => {
                data_base64 = Some(text);
                continue;
            }
            "datacontenttype" => {
                content_type = Some(text);
                continue;
            }
            _ => {}
        }
        let header = header_name(&name)?;
        let value = HeaderValue::try_from(utf8_percent_encode(&text, ENCODE).to_string())
            .expect("percent-encoded text is a valid header value");
        headers.insert(header, value);
        found.add(&name, text)?;
    }
    let attributes = found.attributes()?;
    let data = match (data, data_base64) {
        (Some(_), Some(_)) => return Err(EventError::DataTwice),
        (Some(data), None) => {
            let is_json = content_type.as_deref().is_none_or(is_json);
            match serde_json::from_str::<String>(data.get()) {
                // A JSON string of a non-JSON type is the data itself.
                Ok(text) if !is_json => Bytes::from(text),
                _ => {
                    content_type.get_or_insert_with(|| "application/json".to_owned());
                    Bytes::copy_from_slice(data.get().as_bytes())
                }
            }
        }
        (None, Some(encoded)) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map(Bytes::from)
                .map_err(|_| EventError::Base64)?
        }
        (None, None) => Bytes::new(),
    };
    if let Some(content_type) = content_type {
        let value = HeaderValue::try_from(content_type).map_err(|_| EventError::Invalid {
            name: "datacontenttype".to_owned(),
            why: "it is not a valid media type",
        })?;
        headers.insert(header::CONTENT_TYPE, value);
    }
    Ok(Converted {
        attributes,
        headers,
        data,
    })
}

/// The `ce-*` header of attribute `name`, which CloudEvents limits to
/// `a-z` and `0-9`.
fn header_name(name: &str) -> Result<HeaderName, EventError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !valid {
        return Err(EventError::Invalid {
            name: name.to_owned(),
            why: "attribute names are lowercase letters and digits",
        });
    }
    Ok(HeaderName::try_from(format!("{PREFIX}{name}")).expect("a valid header name"))
}

/// Whether a media type is JSON (`application/json`, `text/json`,
/// `application/*+json`).
fn is_json(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || media == "text/json" || media.ends_with("+json")
}

/// A header value decoded: unquoted (an RFC 9110 quoted-string), then
/// percent-decoded; `None` if that is not UTF-8.
fn decode(raw: &[u8]) -> Option<String> {
    let unquoted: Vec<u8>;
    let raw = match raw {
        [b'"', inner @ .., b'"'] => {
            let mut out = Vec::with_capacity(inner.len());
            let mut bytes = inner.iter();
            while let Some(&b) = bytes.next() {
                match b {
                    b'\\' => out.extend(bytes.next()),
                    b => out.push(b),
                }
            }
            unquoted = out;
            &unquoted[..]
        }
        raw => raw,
    };
    let decoded: Vec<u8> = percent_decode(raw).collect();
    String::from_utf8(decoded).ok()
}

/// Whether a response with `headers` carries an event (a reply): binary
/// mode's `ce-specversion`, or a structured event.
pub fn carries_event(headers: &HeaderMap) -> bool {
    headers.contains_key("ce-specversion") || matches!(mode(headers), Ok(Mode::Structured))
}

/// The attributes collected so far.
#[derive(Default)]
struct Found {
    specversion: Option<String>,
    id: Option<String>,
    source: Option<String>,
    ty: Option<String>,
    subject: Option<String>,
}

impl Found {
    fn add(&mut self, name: &str, value: String) -> Result<(), EventError> {
        let slot = match name {
            "specversion" => &mut self.specversion,
            "id" => &mut self.id,
            "source" => &mut self.source,
            "type" => &mut self.ty,
            "subject" => &mut self.subject,
            _ => return Ok(()),
        };
        if slot.replace(value).is_some() {
            return Err(EventError::Twice(name.to_owned()));
        }
        Ok(())
    }

    fn attributes(self) -> Result<Attributes, EventError> {
        let required = |value: Option<String>, name: &'static str| match value {
            None => Err(EventError::Missing(name)),
            Some(value) if value.is_empty() => Err(EventError::Empty(name)),
            Some(value) => Ok(value),
        };
        let specversion = required(self.specversion, "specversion")?;
        if specversion != SPEC_VERSION {
            return Err(EventError::SpecVersion(specversion));
        }
        Ok(Attributes {
            id: required(self.id, "id")?,
            source: required(self.source, "source")?,
            ty: required(self.ty, "type")?,
            subject: self.subject,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::try_from(*name).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    const REQUIRED: [(&str, &[u8]); 4] = [
        ("ce-specversion", b"1.0"),
        ("ce-id", b"1"),
        ("ce-source", b"/s"),
        ("ce-type", b"t"),
    ];

    #[test]
    fn binary_attributes_are_unquoted_then_percent_decoded_once() {
        let mut pairs = REQUIRED.to_vec();
        pairs[2] = ("ce-source", b"\"/a b%20c\"");
        pairs.push(("ce-subject", b"Euro%20%E2%82%AC%20%F0%9F%98%80"));
        let attributes = binary(&headers(&pairs)).unwrap();
        assert_eq!(attributes.source, "/a b c");
        assert_eq!(attributes.subject.as_deref(), Some("Euro € 😀"));
        // Once: %2541 is `%41`, not `A`; a stray `%` stays.
        pairs[3] = ("ce-type", b"100%2541 %zz%");
        assert_eq!(binary(&headers(&pairs)).unwrap().ty, "100%41 %zz%");
        // A quoted-string's escapes.
        pairs[1] = ("ce-id", br#""a\"b""#);
        assert_eq!(binary(&headers(&pairs)).unwrap().id, "a\"b");
    }

    #[test]
    fn bad_binary_events_are_refused_naming_the_attribute() {
        for missing in ["specversion", "id", "source", "type"] {
            let pairs: Vec<_> = REQUIRED
                .iter()
                .copied()
                .filter(|(name, _)| *name != format!("ce-{missing}"))
                .collect();
            assert_eq!(
                binary(&headers(&pairs)),
                Err(EventError::Missing(match missing {
                    "specversion" => "specversion",
                    "id" => "id",
                    "source" => "source",
                    _ => "type",
                }))
            );
        }
        let with = |extra: (&'static str, &'static [u8])| {
            let mut pairs = REQUIRED.to_vec();
            pairs.retain(|(name, _)| *name != extra.0);
            pairs.push(extra);
            binary(&headers(&pairs))
        };
        assert_eq!(
            with(("ce-subject", b"%FF%FE")),
            Err(EventError::NotUtf8("subject".into()))
        );
        assert_eq!(
            with(("ce-specversion", b"0.3")),
            Err(EventError::SpecVersion("0.3".into()))
        );
        assert_eq!(with(("ce-id", b"")), Err(EventError::Empty("id")));
        let mut twice = REQUIRED.to_vec();
        twice.push(("ce-id", b"2"));
        assert_eq!(
            binary(&headers(&twice)),
            Err(EventError::Twice("id".into()))
        );
    }

    #[test]
    fn the_content_type_chooses_the_mode() {
        let with = |ct: &[u8]| mode(&headers(&[("content-type", ct)]));
        assert_eq!(with(b"application/json"), Ok(Mode::Binary));
        assert_eq!(mode(&HeaderMap::new()), Ok(Mode::Binary));
        assert_eq!(
            with(b"Application/CloudEvents+JSON; charset=utf-8"),
            Ok(Mode::Structured)
        );
        assert_eq!(with(b"application/cloudevents-batch+json"), Ok(Mode::Batch));
        assert!(
            with(b"application/cloudevents+avro")
                .unwrap_err()
                .is_unsupported_format()
        );
    }

    #[test]
    fn structured_events_become_binary_headers_and_a_body() {
        let event = structured(
            br#"{"specversion":"1.0","id":"7","source":"/a b","type":"t.x",
                "subject":"caf\u00e9","sequence":3,"urgent":true,
                "data":{"z":1,  "a":[2]}}"#,
        )
        .unwrap();
        assert_eq!(event.attributes.subject.as_deref(), Some("café"));
        assert_eq!(event.headers["ce-source"], "/a%20b");
        assert_eq!(event.headers["ce-subject"], "caf%C3%A9");
        assert_eq!(event.headers["ce-sequence"], "3");
        assert_eq!(event.headers["ce-urgent"], "true");
        assert_eq!(event.headers[header::CONTENT_TYPE], "application/json");
        // The data's bytes as written, not re-serialized.
        assert_eq!(&event.data[..], br#"{"z":1,  "a":[2]}"#);
        // Back through the binary reader: the same attributes.
        assert_eq!(binary(&event.headers).unwrap(), event.attributes);

        let text = structured(
            br#"{"specversion":"1.0","id":"1","source":"s","type":"t",
                "datacontenttype":"text/plain","data":"hello"}"#,
        )
        .unwrap();
        assert_eq!(&text.data[..], b"hello");
        assert_eq!(text.headers[header::CONTENT_TYPE], "text/plain");
        let base64 = structured(
            br#"{"specversion":"1.0","id":"1","source":"s","type":"t",
                "datacontenttype":"image/png","data_base64":"AAEC/w=="}"#,
        )
        .unwrap();
        assert_eq!(&base64.data[..], [0, 1, 2, 255]);
    }

    #[test]
    fn bad_structured_events_are_refused() {
        let cases: [(&[u8], &str); 6] = [
            (b"[1]", "not a JSON object"),
            (b"{\"id\": ", "not a JSON object"),
            (
                br#"{"specversion":"1.0","id":"1","source":"s"}"#,
                "no `type` attribute",
            ),
            (
                br#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":1,"data_base64":"AA=="}"#,
                "both `data` and `data_base64`",
            ),
            (
                br#"{"specversion":"1.0","id":"1","source":"s","type":"t","Bad-Name":"x"}"#,
                "`Bad-Name` attribute is invalid",
            ),
            (
                br#"{"specversion":"1.0","id":{"a":1},"source":"s","type":"t"}"#,
                "`id` attribute is invalid",
            ),
        ];
        for (body, why) in cases {
            let error = structured(body).err().unwrap().to_string();
            assert!(
                error.contains(why),
                "{}: {error}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_batch_is_an_array_of_structured_events_and_names_the_bad_one() {
        let events = batch(
            br#"[{"specversion":"1.0","id":"1","source":"s","type":"a","data":{"n":1}},
                 {"specversion":"1.0","id":"2","source":"s","type":"b"}]"#,
        )
        .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].attributes.ty, "b");
        assert_eq!(&events[0].data[..], br#"{"n":1}"#);
        assert!(batch(b"[]").unwrap().is_empty());
        let error =
            batch(br#"[{"specversion":"1.0","id":"1","source":"s","type":"a"}, {"id":"2"}]"#)
                .err()
                .unwrap();
        assert_eq!(
            error.to_string(),
            "event 2 of the batch: the event has no `specversion` attribute (binary mode: header `ce-specversion`)"
        );
        assert!(
            batch(br#"{"id":"1"}"#)
                .err()
                .unwrap()
                .to_string()
                .contains("JSON array")
        );
    }

    #[test]
    fn replies_are_told_by_their_headers() {
        assert!(carries_event(&headers(&[("ce-specversion", b"1.0")])));
        assert!(carries_event(&headers(&[(
            "content-type",
            b"application/cloudevents+json"
        )])));
        assert!(!carries_event(&headers(&[(
            "content-type",
            b"application/json"
        )])));
    }
}
