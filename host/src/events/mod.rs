//! Functions as Knative Eventing sinks: CloudEvents delivered to one path
//! (`--events-path`, `/` by default), each routed to a function by its
//! attributes ([`trigger`]).
//!
//! The events path exists while any function declares `events`; it then
//! takes that exact path from the routes (a wildcard route still serves the
//! paths below it). A request there:
//! 1. must be a `POST` (`OPTIONS` is answered with `Allow: POST`, and the
//!    CloudEvents webhook handshake; any other method 405);
//! 2. must hold one CloudEvents 1.0 event, binary or structured
//!    ([`cloudevent`]) (with `--events-batch`, or a batch: its events are
//!    delivered one after the other, until one is not accepted); the
//!    function receives it in binary mode, whichever way it came, so any
//!    `wasi:http` function can handle events;
//! 3. goes to the function of the most specific trigger it meets, and on
//!    through the same gates, limits and fresh instance as any request.
//!
//! The answer follows the Knative Eventing data plane, so that a broker
//! retries what may succeed later and nothing else:
//!
//! | status | when | the broker |
//! |---|---|---|
//! | 200 | the function replied with an event and the request asked for one (`Prefer: reply`) | takes the reply |
//! | 202 | the function answered 2xx (a reply nobody asked for is dropped, and logged) | done |
//! | 400 | the request holds no valid event (the body names what is wrong) | dead letter, no retry |
//! | 405 | not a `POST` | no retry |
//! | 413 | a structured event larger than the host reads ([`MAX_STRUCTURED`]) | no retry |
//! | 415 | a batch without `--events-batch`, or a structured format other than JSON | no retry |
//! | 422 | no trigger matches the event | dead letter, no retry |
//! | 429, 5xx | the function's own answer, or the host's (overloaded: 503 with `Retry-After`; trapped, timed out: 500, 504) | retries with backoff |
//! | other 4xx | the function's own answer | dead letter, no retry |
//!
//! An event that matches no trigger is answered 422, not 404: Knative
//! retries a 404 (an endpoint that may appear), while an event no function
//! takes will not be taken on a retry either; 422 sends it to the dead
//! letter sink if there is one, and counts it.
//!
//! A 2xx is sent only once the function has finished its response body:
//! "accepted" means processed. Delivery is at least once, so the same
//! event may come again; duplicates are reported ([`recent`]), and still
//! delivered.

pub mod cloudevent;
pub mod recent;
pub mod trigger;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use shoal_runtime::{BodyError, DEFAULT_MAX_BODY};

use self::cloudevent::{Attributes, EventError, Mode};
pub use self::recent::Recent;
pub use self::trigger::{Filter, Trigger, TriggerConflict, Triggers};
use crate::answer::Failure;
use crate::body::{HostBody, RequestBody};
use crate::dispatch::{Functions, REVISION_HEADER};
use crate::registry::entry::FunctionEntry;
use crate::router::RouteMatch;
use crate::telemetry::metrics::{EventOutcome, Metrics};
use crate::telemetry::record::RequestRecord;

/// Where events are delivered unless `--events-path` says otherwise.
pub const DEFAULT_EVENTS_PATH: &str = "/";

/// The largest structured event the host reads (it holds it in memory to
/// turn it into binary mode); a binary event's data streams, limited only
/// by its function's `max_body`.
pub const MAX_STRUCTURED: u64 = DEFAULT_MAX_BODY;

/// The methods the events path takes.
const ALLOW: &str = "POST";

impl Functions {
    /// Delivers the event in `request` (at the events path) to its
    /// function, or with `--events-batch` each event of a batch to its
    /// own, and answers as the module's doc says.
    pub(crate) async fn event(
        &self,
        request: Request<RequestBody>,
        id: &HeaderValue,
        mut record: RequestRecord,
    ) -> Response<HostBody> {
        let id_text = id.to_str().unwrap_or_default();
        let refuse = |failure: Failure<'_>, mut record: RequestRecord| {
            record.answered(failure.answer(self.metrics(), None, id_text))
        };
        match *request.method() {
            Method::POST => {}
            Method::OPTIONS => return record.answered(options(request.headers())),
            _ => return refuse(Failure::EventMethod, record),
        }
        let (mut parts, body) = request.into_parts();
        let mode = match cloudevent::mode(&parts.headers) {
            Ok(Mode::Batch) if !self.events_batch() => Err(EventError::Batch),
            mode => mode,
        };
        let (attributes, request) = match mode {
            Err(error) => return refuse(Failure::BadEvent(&error), record),
            Ok(Mode::Binary) => match cloudevent::binary(&parts.headers) {
                Ok(attributes) => (attributes, Request::from_parts(parts, body)),
                Err(error) => return refuse(Failure::BadEvent(&error), record),
            },
            Ok(Mode::Structured) => {
                let event = match read_whole(body)
                    .await
                    .and_then(|bytes| cloudevent::structured(&bytes).map_err(Unread::Invalid))
                {
                    Ok(event) => event,
                    Err(unread) => return refuse(unread.as_failure(), record),
                };
                strip_content(&mut parts.headers);
                (event.attributes.clone(), binary_request(&parts, event))
            }
            Ok(Mode::Batch) => {
                let events = match read_whole(body)
                    .await
                    .and_then(|bytes| cloudevent::batch(&bytes).map_err(Unread::Invalid))
                {
                    Ok(events) => events,
                    Err(unread) => return refuse(unread.as_failure(), record),
                };
                strip_content(&mut parts.headers);
                return self.batch(&parts, events, id, record).await;
            }
        };
        let wants_reply = prefers_reply(request.headers());
        self.deliver(attributes, request, wants_reply, id, record)
            .await
    }

    /// Delivers the events of a batch one after the other, each as if sent
    /// alone without asking for a reply; the first that is not accepted
    /// ends the batch, with its answer, so that the broker sends the batch
    /// again (the events delivered already are then duplicates). 202 when
    /// every one was accepted.
    async fn batch(
        &self,
        parts: &http::request::Parts,
        events: Vec<cloudevent::Converted>,
        id: &HeaderValue,
        mut record: RequestRecord,
    ) -> Response<HostBody> {
        let count = events.len();
        for (index, event) in events.into_iter().enumerate() {
            let attributes = event.attributes.clone();
            let request = binary_request(parts, event);
            let one = RequestRecord::new(record.log().clone(), Instant::now());
            let response = self.deliver(attributes, request, false, id, one).await;
            if !response.status().is_success() {
                record.log().in_scope(|| {
                    tracing::warn!(
                        status = response.status().as_u16(),
                        "batch stopped at event {} of {count}: its answer is the batch's",
                        index + 1
                    );
                });
                record.status(response.status().as_u16());
                return response;
            }
        }
        record.answered(accepted())
    }

    /// Delivers one event, read as `attributes`, to the function of its
    /// trigger.
    async fn deliver(
        &self,
        attributes: Attributes,
        request: Request<RequestBody>,
        wants_reply: bool,
        id: &HeaderValue,
        mut record: RequestRecord,
    ) -> Response<HostBody> {
        let id_text = id.to_str().unwrap_or_default();
        let log = record.log().clone();
        log.event(&attributes.ty, &attributes.id, &attributes.source);

        let (entry, type_label) = {
            let table = self.registry().table();
            let Some((trigger, function)) = table.event(
                &attributes.ty,
                &attributes.source,
                attributes.subject.as_deref(),
            ) else {
                let failure = Failure::NoTrigger(&attributes.ty);
                return record.answered(failure.answer(self.metrics(), None, id_text));
            };
            let entry = function.choose(request.headers()).clone();
            record.routed(&entry, RouteMatch::Exact(request.uri().path()));
            (entry, trigger.ty.to_string())
        };
        let name = entry.name().as_str();
        let revision = entry
            .revision()
            .map(ToString::to_string)
            .unwrap_or_default();
        if self.recent().seen(&attributes.source, &attributes.id) {
            self.metrics().event_duplicate(name, &revision, &type_label);
            log.in_scope(|| {
                tracing::info!(
                    function = %entry.name(), event_id = %attributes.id,
                    event_source = %attributes.source,
                    "duplicate delivery: this event (source and id) was delivered lately"
                );
            });
        }
        let response = self.call(entry.clone(), request, id, record).await;
        let mut response = settle(response, wants_reply, &entry, self.metrics(), id_text).await;
        let outcome = EventOutcome::of(response.status());
        self.metrics().event(name, &revision, &type_label, outcome);
        if let Ok(revision) = HeaderValue::try_from(revision)
            && !revision.is_empty()
        {
            response.headers_mut().insert(REVISION_HEADER, revision);
        }
        response
    }
}

/// Why a request at the events path holds no event to deliver.
enum Unread {
    Invalid(EventError),
    TooLarge,
}

impl Unread {
    fn as_failure(&self) -> Failure<'_> {
        match self {
            Self::Invalid(error) => Failure::BadEvent(error),
            Self::TooLarge => Failure::EventTooLarge(MAX_STRUCTURED),
        }
    }
}

/// A structured event's or a batch's whole body, up to [`MAX_STRUCTURED`].
async fn read_whole(body: RequestBody) -> Result<Bytes, Unread> {
    Limited::new(body, MAX_STRUCTURED as usize)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                Unread::TooLarge
            } else {
                Unread::Invalid(EventError::Unreadable(error.to_string()))
            }
        })
}

/// Takes out the headers that described a structured body.
fn strip_content(headers: &mut HeaderMap) {
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
}

/// The binary-mode request of `event`, with the other headers of `parts`
/// (whose body headers are taken out).
fn binary_request(
    parts: &http::request::Parts,
    event: cloudevent::Converted,
) -> Request<RequestBody> {
    let mut request = Request::new(RequestBody::Read(Some(event.data.clone())));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    let headers = request.headers_mut();
    headers.clone_from(&parts.headers);
    headers.extend(event.headers);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(event.data.len()));
    request
}

/// `202 Accepted`, empty.
fn accepted() -> Response<HostBody> {
    let mut response = Response::new(HostBody::Full(None));
    *response.status_mut() = StatusCode::ACCEPTED;
    response
}

/// The answer to the function's `response`: a reply passes when wanted;
/// any other 2xx becomes 202 once the function has finished; the rest
/// passes as it is.
async fn settle(
    response: Response<HostBody>,
    wants_reply: bool,
    entry: &Arc<FunctionEntry>,
    metrics: &Metrics,
    request_id: &str,
) -> Response<HostBody> {
    let status = response.status();
    if !status.is_success() {
        return response;
    }
    let reply = status == StatusCode::OK && cloudevent::carries_event(response.headers());
    if reply && wants_reply {
        let mut response = response;
        response
            .headers_mut()
            .insert("preference-applied", HeaderValue::from_static("reply"));
        return response;
    }
    let (_, body) = response.into_parts();
    if let HostBody::Guest {
        mut body,
        mut in_flight,
    } = body
    {
        if reply {
            in_flight.record.log().in_scope(|| {
                tracing::info!(
                    function = %entry.name(),
                    "the function's reply was dropped: the request did not ask for one (Prefer: reply)"
                );
            });
        }
        // Accepted means processed: wait for the function to finish.
        while let Some(frame) = body.frame().await {
            if let Err(error) = frame {
                let failure = match &error {
                    BodyError::Failed(failure) => Failure::Guest(failure),
                    BodyError::Stream(error) => Failure::Setup(error.to_string()),
                };
                let function = Some((entry.name().as_str(), entry.metrics()));
                return in_flight
                    .record
                    .answered(failure.answer(metrics, function, request_id));
            }
        }
        in_flight.record.status(StatusCode::ACCEPTED.as_u16());
    }
    accepted()
}

/// Whether the request asks for a reply event (`Prefer: reply`, RFC 7240).
fn prefers_reply(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|preference| {
            let token = preference.split(';').next().unwrap_or_default().trim();
            token.eq_ignore_ascii_case("reply")
        })
}

/// The answer to `OPTIONS`: the methods taken, and the CloudEvents webhook
/// handshake (any origin, any rate) when asked.
fn options(headers: &HeaderMap) -> Response<HostBody> {
    let mut response = Response::new(HostBody::Full(None));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let out = response.headers_mut();
    out.insert(header::ALLOW, HeaderValue::from_static(ALLOW));
    if let Some(origin) = headers.get("webhook-request-origin") {
        out.insert("webhook-allowed-origin", origin.clone());
        out.insert("webhook-allowed-rate", HeaderValue::from_static("*"));
    }
    response
}

/// The `Allow` header of a 405 at the events path.
pub fn allow() -> HeaderValue {
    HeaderValue::from_static(ALLOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_reply_is_a_token_among_others() {
        let with = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("prefer", HeaderValue::from_static(value));
            }
            prefers_reply(&headers)
        };
        assert!(with(&["reply"]));
        assert!(with(&["respond-async, Reply"]));
        assert!(with(&["wait=10", "reply; x=1"]));
        assert!(!with(&[]));
        assert!(!with(&["return=minimal"]));
        assert!(!with(&["replying"]));
    }
}
