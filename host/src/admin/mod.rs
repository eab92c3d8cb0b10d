//! The admin listener: what the host is doing, for operators and tools, and
//! the write API that deploys functions to it. It listens on loopback by
//! default and never on the public port.
//!
//! Read:
//! - `GET /metrics`: Prometheus metrics (see [`crate::telemetry::metrics`]),
//!   always without a token.
//! - `GET /v1/status`: the table's generation (how many changes it has been
//!   through), how many functions it holds, whether all have compiled, how
//!   many are warm, and how many requests wait for the host-wide gate.
//! - `GET /v1/functions`, `GET /v1/functions/NAME`: the functions serving
//!   now ([`views`]).
//! - `GET /v1/functions/NAME/revisions`: a deployed function's revisions and
//!   traffic.
//!
//! Write ([`write`]), only with a token:
//! - `POST /v1/components`: upload a component (streamed);
//! - `PUT /v1/functions/NAME`: deploy a definition as a new revision;
//! - `PUT /v1/functions/NAME/traffic`: split traffic, pin headers;
//! - `POST /v1/functions/NAME/rollback`: all traffic to one revision;
//! - `DELETE /v1/functions/NAME`.
//!
//! Access: without a token configured, the read API is open and the write
//! API is off (403, saying how to turn it on). With one, every `/v1/` call
//! needs `Authorization: Bearer TOKEN` (401 otherwise, nothing changed);
//! tokens are compared in constant time and never logged.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde::Serialize;
use subtle::ConstantTimeEq as _;

mod array;
mod views;
mod write;

use self::views::FunctionView;
use crate::body::HostBody;
use crate::deploy::Deployments;
use crate::manifest::FunctionName;
use crate::registry::Registry;
use crate::server::Handler;
use crate::telemetry::metrics::Metrics;

/// The admin address when `--admin-listen` is not given.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9464";

/// The shortest admin token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// The admin API's secret.
pub struct Token(Vec<u8>);

impl Token {
    /// A token, if it is long enough.
    pub fn new(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "an admin token must be at least {MIN_TOKEN_LEN} characters"
            ));
        }
        Ok(Self(text.as_bytes().to_vec()))
    }

    fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(given) = authorization.and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")) else {
            return false;
        };
        bool::from(given.ct_eq(&self.0))
    }
}

/// The admin API's handler.
pub struct Admin {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    deployments: Arc<Deployments>,
    token: Option<Token>,
}

impl Admin {
    /// The admin API over `registry`, its `metrics` and its
    /// `deployments`; the write API is on only with a `token`.
    pub fn new(
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        deployments: Arc<Deployments>,
        token: Option<Token>,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry,
            metrics,
            deployments,
            token,
        })
    }

    /// Refuses a call the token does not allow: `None` if it may go on.
    fn refuse(&self, request: &Request<Incoming>, writes: bool) -> Option<Response<HostBody>> {
        match &self.token {
            Some(token) if token.admits(request.headers().get(header::AUTHORIZATION)) => None,
            Some(_) => {
                let mut response = error(
                    StatusCode::UNAUTHORIZED,
                    "this call needs the admin token: `Authorization: Bearer TOKEN`",
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                Some(response)
            }
            None if writes => Some(error(
                StatusCode::FORBIDDEN,
                "the write API is off: start the host with --admin-token-file FILE or \
                 SHOAL_ADMIN_TOKEN set to turn it on",
            )),
            None => None,
        }
    }

    fn status(&self) -> Response<HostBody> {
        let table = self.registry.table();
        json(
            StatusCode::OK,
            &serde_json::json!({
                "generation": table.generation(),
                "functions": table.len(),
                "compiled": self.registry.all_compiled(),
                "warm": self.registry.warm_functions(),
                "waiting": self.registry.gate().waiting(),
            }),
        )
    }

    fn functions(&self) -> Response<HostBody> {
        let table = Arc::clone(&self.registry.table());
        let mut place = 0;
        array::answer(std::iter::from_fn(move || {
            let (at, function) = table.function_from(place)?;
            place = at + 1;
            Some(FunctionView::of(function))
        }))
    }

    fn function(&self, name: &FunctionName) -> Response<HostBody> {
        match self.registry.table().get(name) {
            Some(function) => json(StatusCode::OK, &FunctionView::of(function)),
            None => no_function(name),
        }
    }
}

/// The metrics-only listener's handler (`--metrics-listen`): `GET /metrics`
/// without a token, for the cluster's Prometheus, and nothing else.
pub struct MetricsOnly {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

impl MetricsOnly {
    /// Serves `metrics`, with the gauges of `registry`.
    pub fn new(registry: Arc<Registry>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self { registry, metrics })
    }
}

impl Handler for MetricsOnly {
    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<HostBody> {
        if request.uri().path() != "/metrics" {
            return error(
                StatusCode::NOT_FOUND,
                "this listener serves /metrics only; the admin API is on --admin-listen",
            );
        }
        if !Endpoint::Metrics.allows(request.method()) {
            return not_allowed(&Endpoint::Metrics);
        }
        metrics(&self.registry, &self.metrics)
    }
}

/// The Prometheus text exposition of `metrics` and the gauges of `registry`.
fn metrics(registry: &Registry, metrics: &Metrics) -> Response<HostBody> {
    let text = metrics.render(&registry.gauges());
    let mut response = Response::new(HostBody::text(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// An admin API path, parsed.
enum Endpoint {
    Metrics,
    Status,
    Functions,
    Components,
    Function(FunctionName),
    Revisions(FunctionName),
    Traffic(FunctionName),
    Rollback(FunctionName),
}

impl Endpoint {
    fn of(path: &str) -> Option<Result<Self, String>> {
        let endpoint = match path {
            "/metrics" => Self::Metrics,
            "/v1/status" => Self::Status,
            "/v1/functions" => Self::Functions,
            "/v1/components" => Self::Components,
            _ => {
                let rest = path.strip_prefix("/v1/functions/")?;
                let (name, what) = rest.split_once('/').unwrap_or((rest, ""));
                let name = match FunctionName::try_from(name.to_owned()) {
                    Ok(name) => name,
                    Err(why) => return Some(Err(why)),
                };
                match what {
                    "" => Self::Function(name),
                    "revisions" => Self::Revisions(name),
                    "traffic" => Self::Traffic(name),
                    "rollback" => Self::Rollback(name),
                    _ => return None,
                }
            }
        };
        Some(Ok(endpoint))
    }

    /// Whether it answers `method`.
    fn allows(&self, method: &Method) -> bool {
        self.allowed()
            .split(", ")
            .any(|allowed| allowed == method.as_str())
    }

    /// The methods it answers, for `Allow`.
    fn allowed(&self) -> &'static str {
        match self {
            Self::Metrics | Self::Status | Self::Functions | Self::Revisions(_) => "GET",
            Self::Components | Self::Rollback(_) => "POST",
            Self::Function(_) => "GET, PUT, DELETE",
            Self::Traffic(_) => "PUT",
        }
    }
}

impl Handler for Admin {
    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<HostBody> {
        let endpoint = match Endpoint::of(request.uri().path()) {
            Some(Ok(endpoint)) => endpoint,
            Some(Err(why)) => return error(StatusCode::BAD_REQUEST, &why),
            None => {
                let path = request.uri().path();
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("no admin endpoint at {path}"),
                );
            }
        };
        if !endpoint.allows(request.method()) {
            return not_allowed(&endpoint);
        }
        // Prometheus scrapes without a token.
        if let Endpoint::Metrics = endpoint {
            return metrics(&self.registry, &self.metrics);
        }
        let writes = *request.method() != Method::GET;
        if let Some(refusal) = self.refuse(&request, writes) {
            return refusal;
        }
        let deployments = &self.deployments;
        match (request.method().clone(), endpoint) {
            (Method::GET, Endpoint::Status) => self.status(),
            (Method::GET, Endpoint::Functions) => self.functions(),
            (Method::GET, Endpoint::Function(name)) => self.function(&name),
            (Method::GET, Endpoint::Revisions(name)) => views::revisions(deployments, &name),
            (Method::POST, Endpoint::Components) => write::upload(deployments, request).await,
            (Method::PUT, Endpoint::Function(name)) => {
                write::deploy(deployments, &name, request).await
            }
            (Method::PUT, Endpoint::Traffic(name)) => {
                write::traffic(deployments, &name, request).await
            }
            (Method::POST, Endpoint::Rollback(name)) => {
                write::roll_back(deployments, &name, request).await
            }
            (Method::DELETE, Endpoint::Function(name)) => write::delete(deployments, &name).await,
            (_, endpoint) => not_allowed(&endpoint),
        }
    }
}

fn not_allowed(endpoint: &Endpoint) -> Response<HostBody> {
    let allowed = endpoint.allowed();
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("only {allowed} is allowed here"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}

fn no_function(name: &FunctionName) -> Response<HostBody> {
    error(
        StatusCode::NOT_FOUND,
        &format!("there is no function `{name}`"),
    )
}

/// A JSON answer.
fn json(status: StatusCode, value: &impl Serialize) -> Response<HostBody> {
    let mut body = serde_json::to_vec_pretty(value).expect("admin views serialize");
    body.push(b'\n');
    json_body(status, HostBody::text(Bytes::from(body)))
}

/// A JSON answer whose body is made already.
fn json_body(status: StatusCode, body: HostBody) -> Response<HostBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON error: `{"error": "..."}`.
fn error(status: StatusCode, message: &str) -> Response<HostBody> {
    json(status, &serde_json::json!({ "error": message }))
}
