//! The public listener's handler: each request to its function.
//!
//! A request gets its id and log, loads the registry's current table once,
//! and keeps the function it found there until its response ends, whatever
//! changes meanwhile. It then passes the function's gate and the host's
//! (admission), takes the warm function (a cold start if needed), and runs
//! in a fresh instance; the response streams back while the request holds
//! its places. Knative's probes are answered before any of this
//! ([`probes`]). Every failure on the way is classified once
//! ([`Failure`]) and answered.

use std::sync::{Arc, Weak};
use std::time::Instant;

use http::{HeaderValue, Request, Response, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use shoal_runtime::{CallBody, CallError, CallFuture, OwnHost};

use crate::answer::Failure;
use crate::body::{CountedBody, HostBody, InFlight, RequestBody};
use crate::events::Recent;
use crate::probes;
use crate::registry::Registry;
use crate::registry::entry::FunctionEntry;
use crate::request_id::{self, RequestIds};
use crate::server::Handler;
use crate::telemetry::logs;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::record::RequestRecord;

/// The response header naming the revision that answered (functions
/// deployed through the admin API).
pub const REVISION_HEADER: &str = "x-shoal-revision";

/// The public listener's handler: routes each request to its function.
pub struct Functions {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    ids: RequestIds,
    /// The events delivered lately, to report duplicates.
    recent: Recent,
    /// Whether batches of events are taken (`--events-batch`).
    events_batch: bool,
}

impl Functions {
    /// A handler for the functions of `registry`, counting into `metrics`;
    /// `events_batch` takes batches of events.
    pub fn new(registry: Arc<Registry>, metrics: Arc<Metrics>, events_batch: bool) -> Arc<Self> {
        Arc::new(Self {
            registry,
            metrics,
            ids: RequestIds::default(),
            recent: Recent::default(),
            events_batch,
        })
    }

    /// Whether batches of events are taken.
    pub(crate) fn events_batch(&self) -> bool {
        self.events_batch
    }

    /// The registry it serves.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The host's metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The events delivered lately.
    pub(crate) fn recent(&self) -> &Recent {
        &self.recent
    }
}

impl Handler for Functions {
    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<HostBody> {
        self.serve(request.map(RequestBody::Streamed)).await
    }
}

/// The functions' calls to their own host (`http://self`), served in
/// process as requests to the public listener are.
pub struct OwnCalls(Weak<Functions>);

impl OwnCalls {
    /// Serves the calls with `functions` while it lives.
    pub fn new(functions: &Arc<Functions>) -> Arc<Self> {
        Arc::new(Self(Arc::downgrade(functions)))
    }
}

impl OwnHost for OwnCalls {
    fn serve(&self, request: Request<CallBody>) -> CallFuture {
        let functions = self.0.upgrade();
        Box::pin(async move {
            let response = match functions {
                Some(functions) => functions.serve(request.map(RequestBody::Call)).await,
                // The host has stopped serving.
                None => {
                    let mut response = Response::new(HostBody::text("the host is stopping\n"));
                    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    response
                }
            };
            // The guest that called learns that the body broke off; the
            // cause is logged on this side.
            response.map(|body| {
                body.map_err(|_| CallError::HttpResponseIncomplete)
                    .boxed_unsync()
            })
        })
    }
}

impl Functions {
    /// The response to `request`, from a client or from a function's call
    /// to this host.
    async fn serve(&self, mut request: Request<RequestBody>) -> Response<HostBody> {
        if probes::is_probe(&request) {
            return probes::answer(self.registry.all_compiled());
        }
        let start = Instant::now();
        let id = self
            .ids
            .for_request(request.headers().get(request_id::HEADER));
        // The guest sees the id too, and can pass it on.
        request.headers_mut().insert(request_id::HEADER, id.clone());
        let log = logs::request_log(&id, &mut request);
        let mut record = RequestRecord::new(log.clone(), start);

        let found = match host_problem(&request) {
            Some(problem) => Err(Failure::BadHost(problem)),
            None => {
                let table = self.registry.table();
                if table.events_path() == Some(request.uri().path()) {
                    drop(table);
                    // Boxed: the event's future is several times the size
                    // of a call's, and every request's future would be as
                    // large, copied whole each time it moves.
                    let event = Box::pin(self.event(request, &id, record));
                    let mut response = log.instrument(event).await;
                    response.headers_mut().insert(request_id::HEADER, id);
                    return response;
                }
                match table.route(request.uri().path()) {
                    Some((route, function)) => {
                        let entry = function.choose(request.headers());
                        record.routed(entry, route);
                        Ok(entry.clone())
                    }
                    None => Err(Failure::NoRoute(request.uri().path())),
                }
            }
        };
        let mut response = match found {
            Ok(entry) => {
                let revision = entry
                    .revision()
                    .and_then(|r| HeaderValue::try_from(r.to_string()).ok());
                let mut response = log.instrument(self.call(entry, request, &id, record)).await;
                if let Some(revision) = revision {
                    response.headers_mut().insert(REVISION_HEADER, revision);
                }
                response
            }
            Err(failure) => {
                let id_text = id.to_str().unwrap_or_default();
                record.answered(failure.answer(&self.metrics, None, id_text))
            }
        };
        response.headers_mut().insert(request_id::HEADER, id);
        response
    }
}

impl Functions {
    /// Runs `request` on `entry`'s function, once admitted. The record is
    /// written when the response body is done.
    pub(crate) async fn call(
        &self,
        entry: Arc<FunctionEntry>,
        request: Request<RequestBody>,
        id: &HeaderValue,
        mut record: RequestRecord,
    ) -> Response<HostBody> {
        let id_text = id.to_str().unwrap_or_default();
        let function = Some((entry.name().as_str(), entry.metrics()));
        let fail = |failure: Failure<'_>, mut record: RequestRecord| {
            record.answered(failure.answer(&self.metrics, function, id_text))
        };
        let max_body = entry.limits().max_body;
        if content_length(&request).is_some_and(|length| length > max_body) {
            return fail(Failure::BodyTooLarge(max_body), record);
        }
        let function_place = match entry.gate().admit().await {
            Ok(place) => place,
            Err(refusal) => return fail(Failure::FunctionOverloaded(refusal), record),
        };
        let host_place = match self.registry.gate().admit().await {
            Ok(place) => place,
            Err(refusal) => return fail(Failure::HostOverloaded(refusal), record),
        };
        let lease = match self.registry.acquire(&entry).await {
            Ok(lease) => lease,
            Err(error) => return fail(Failure::Unavailable(&error), record),
        };
        let request = request.map(|body| CountedBody::new(body, entry.metrics().clone()));
        // The places count running guests: the instance holds them to the
        // end of its work, which may outlast the response body.
        let places = (function_place, host_place);
        let response = match lease.function().handle(request, id_text, places).await {
            Ok(response) => response,
            Err(error) => return fail(Failure::of(&error), record),
        };
        let status = response.status().as_u16();
        // A 1xx is not an answer (and a 101 would switch protocols): the
        // guest's response is dropped, which stops the guest.
        if !(200..=599).contains(&status) {
            return fail(Failure::BadStatus(status), record);
        }
        record.status(status);
        response.map(|body| HostBody::Guest {
            body,
            in_flight: InFlight { lease, record },
        })
    }
}

/// What is wrong with the request's `Host`, if anything: RFC 9112 wants a
/// 400 for an HTTP/1.1 request without one, and for more than one or an
/// invalid one in any request. HTTP/1.0 requests need none.
fn host_problem<B>(request: &Request<B>) -> Option<&'static str> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Some("the request has more than one Host header"),
        (Some(host), None) if !host.is_empty() && !is_authority(host) => {
            Some("the request's Host header is not a valid host")
        }
        (None, None)
            if request.version() == Version::HTTP_11 && request.uri().authority().is_none() =>
        {
            Some("the request has no Host header")
        }
        _ => None,
    }
}

/// Whether `host` is `host[:port]`, without user information.
fn is_authority(host: &HeaderValue) -> bool {
    let Ok(authority) = http::uri::Authority::try_from(host.as_bytes()) else {
        return false;
    };
    // The `http` crate takes any text as a port, and user information.
    let after_host = &authority.as_str()[authority.host().len()..];
    !authority.as_str().contains('@') && (after_host.is_empty() || authority.port().is_some())
}

/// The declared length of a request's body, if it has one.
fn content_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_authorities_without_user_information() {
        for good in ["example.com", "example.com:8080", "[::1]:80", "10.0.0.1"] {
            assert!(is_authority(&HeaderValue::from_static(good)), "{good}");
        }
        for bad in [
            "a b",
            "user@example.com",
            "example.com:port",
            "/path",
            "[::1",
        ] {
            assert!(!is_authority(&HeaderValue::from_static(bad)), "{bad}");
        }
    }
}
