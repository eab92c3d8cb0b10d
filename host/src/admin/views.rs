//! What the admin API shows of the functions: `GET /v1/functions`.
//!
//! Each function is shown by its primary revision (the one serving most of
//! its requests: the only one of a manifest function), with, for a deployed
//! function, every revision that serves it and its share.

use http::{Response, StatusCode};
use serde::Serialize;

use super::{error, json};
use crate::body::HostBody;
use crate::deploy::Deployments;
use crate::events::Trigger;
use crate::manifest::FunctionName;
use crate::registry::entry::{FunctionEntry, LifeState};
use crate::registry::function::{Function, Source};
use crate::registry::table::Routed;

/// One function.
#[derive(Serialize)]
pub(super) struct FunctionView {
    name: String,
    source: Source,
    routes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    events: Vec<Trigger>,
    #[serde(flatten)]
    primary: RevisionView,
    /// A deployed function's revisions that serve requests.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    revisions: Vec<RevisionView>,
}

/// One revision that serves a function.
#[derive(Serialize)]
pub(super) struct RevisionView {
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<String>,
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

/// A revision's limits (bytes and milliseconds).
#[derive(Serialize)]
struct LimitsView {
    memory: u64,
    timeout_ms: u64,
    max_body: u64,
    max_concurrency: u32,
    max_queue: u32,
    queue_timeout_ms: u64,
}

impl FunctionView {
    pub(super) fn of(function: &Function) -> Self {
        let revisions = match function.source() {
            Source::Manifest => Vec::new(),
            Source::Deployed => function
                .revisions()
                .iter()
                .map(|r| RevisionView::of(r))
                .collect(),
        };
        Self {
            name: function.name().to_string(),
            source: function.source(),
            routes: function.routes().iter().map(ToString::to_string).collect(),
            events: function.events().to_vec(),
            primary: RevisionView::of(function.primary()),
            revisions,
        }
    }
}

impl RevisionView {
    fn of(entry: &FunctionEntry) -> Self {
        let gate = entry.gate().limits();
        Self {
            revision: entry.revision().map(ToString::to_string),
            component: entry.def().component.to_string(),
            state: entry.state(),
            cold_starts: entry.cold_starts(),
            in_flight: entry.in_flight(),
            idle_timeout_ms: entry.policy().idle_timeout.as_millis() as u64,
            min_instances: entry.policy().min_instances,
            max_instance_reuse: entry.max_instance_reuse(),
            idle_instances: entry.idle_instances(),
            waiting: entry.gate().waiting(),
            limits: LimitsView {
                memory: entry.limits().memory,
                timeout_ms: entry.limits().timeout.as_millis() as u64,
                max_body: entry.limits().max_body,
                max_concurrency: gate.max_concurrency,
                max_queue: gate.max_queue,
                queue_timeout_ms: gate.queue_timeout.as_millis() as u64,
            },
            error: entry.failure().map(|e| e.to_string()),
        }
    }
}

/// `GET /v1/functions/NAME/revisions`: a deployed function's revisions,
/// oldest first, each with its share, and its traffic.
pub(super) fn revisions(deployments: &Deployments, name: &FunctionName) -> Response<HostBody> {
    let state = deployments.state();
    let Some(deployed) = state.functions.get(name) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("there is no function `{name}` deployed through the admin API"),
        );
    };
    let revisions: Vec<serde_json::Value> = deployed
        .revisions
        .iter()
        .map(|revision| {
            let pinned: Vec<String> = deployed
                .traffic
                .pins
                .iter()
                .filter(|pin| pin.revision == revision.name)
                .map(|pin| format!("{}: {}", pin.header, pin.value))
                .collect();
            serde_json::json!({
                "revision": revision.name.to_string(),
                "component": revision.component.to_string(),
                "created": revision.created,
                "percent": deployed.traffic.split.get(&revision.name).copied().unwrap_or(0),
                "pinned": pinned,
                "definition": revision.definition,
            })
        })
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "function": name.to_string(),
            "revisions": revisions,
            "traffic": deployed.traffic,
        }),
    )
}
