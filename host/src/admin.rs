//! The admin listener: what the host is doing, for operators and tools.
//! It listens on loopback by default and never on the public port.
//!
//! - `GET /v1/functions`: every function of the table serving now, with its
//!   routes, component digest, lifecycle state (`registered`, `compiling`,
//!   `compiled`, `warm`, `failed`), cold starts so far, requests in flight
//!   and waiting, and its limits, as JSON.
//! - `GET /v1/status`: the table's generation (how many changes it has been
//!   through), how many functions it holds, whether all have compiled, and
//!   how many requests wait for the host-wide gate.
//! - `GET /metrics`: Prometheus metrics (see [`crate::telemetry::metrics`]),
//!   readable without a token.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde::Serialize;

use crate::body::HostBody;
use crate::registry::Registry;
use crate::registry::entry::LifeState;
use crate::server::Handler;
use crate::telemetry::metrics::Metrics;

/// The admin address when `--admin-listen` is not given.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9464";

/// Ports the admin listener must not take: Knative's queue-proxy uses 8012,
/// 8013 and 8022, and 9090 and 9091 for its metrics.
pub const RESERVED_PORTS: [u16; 5] = [8012, 8013, 8022, 9090, 9091];

/// The admin API's handler.
pub struct Admin {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

impl Admin {
    /// The admin API over `registry` and its `metrics`.
    pub fn new(registry: Arc<Registry>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self { registry, metrics })
    }

    fn functions(&self) -> Vec<FunctionView> {
        self.registry
            .table()
            .functions()
            .iter()
            .map(|f| FunctionView {
                name: f.name().to_string(),
                routes: f.def().routes.iter().map(ToString::to_string).collect(),
                component: f.def().component.to_string(),
                state: f.state(),
                cold_starts: f.cold_starts(),
                in_flight: f.in_flight(),
                idle_timeout_ms: f.policy().idle_timeout.as_millis() as u64,
                min_instances: f.policy().min_instances,
                max_instance_reuse: f.max_instance_reuse(),
                idle_instances: f.idle_instances(),
                waiting: f.gate().waiting(),
                limits: LimitsView {
                    memory: f.limits().memory,
                    timeout_ms: f.limits().timeout.as_millis() as u64,
                    max_body: f.limits().max_body,
                    max_concurrency: f.gate().limits().max_concurrency,
                    max_queue: f.gate().limits().max_queue,
                    queue_timeout_ms: f.gate().limits().queue_timeout.as_millis() as u64,
                },
                error: f.failure().map(|e| e.to_string()),
            })
            .collect()
    }
}

/// One function, as `GET /v1/functions` shows it.
#[derive(Serialize)]
struct FunctionView {
    name: String,
    routes: Vec<String>,
    component: String,
    state: LifeState,
    cold_starts: u64,
    in_flight: u64,
    idle_timeout_ms: u64,
    min_instances: u32,
    max_instance_reuse: u32,
    idle_instances: usize,
    waiting: usize,
    limits: LimitsView,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A function's limits, as `GET /v1/functions` shows them (bytes and
/// milliseconds).
#[derive(Serialize)]
struct LimitsView {
    memory: u64,
    timeout_ms: u64,
    max_body: u64,
    max_concurrency: u32,
    max_queue: u32,
    queue_timeout_ms: u64,
}

impl Handler for Admin {
    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<HostBody> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/v1/functions") => json(StatusCode::OK, &self.functions()),
            (&Method::GET, "/v1/status") => {
                let table = self.registry.table();
                json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "generation": table.generation(),
                        "functions": table.functions().len(),
                        "compiled": self.registry.all_compiled(),
                        "waiting": self.registry.gate().waiting(),
                    }),
                )
            }
            (&Method::GET, "/metrics") => {
                let text = self.metrics.render(&self.registry.gauges());
                let mut response = Response::new(HostBody::text(text));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            (_, "/v1/functions" | "/v1/status" | "/metrics") => json(
                StatusCode::METHOD_NOT_ALLOWED,
                &serde_json::json!({ "error": "only GET is allowed here" }),
            ),
            (_, path) => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({ "error": format!("no admin endpoint at {path}") }),
            ),
        }
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<HostBody> {
    let body = serde_json::to_vec_pretty(value).expect("admin views serialize");
    let mut response = Response::new(HostBody::text(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
