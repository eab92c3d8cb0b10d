//! The state of one request's [`wasmtime::Store`]: its WASI context, its
//! `wasi:http` context and the resource table both share.
//!
//! A store normally lives exactly as long as one request, so nothing a guest
//! does can be seen by the next request: every request starts from a fresh
//! instance and a fresh context built from the function's declared settings.
//! A function that opts into instance reuse keeps its store (and whatever the
//! guest left in its memory) across the requests of one instance.

use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::guest_log::{GuestLog, LogTags, OutputLimits, Stream};
use crate::limits::{MemoryBudget, MemoryLimiter, Refusal};
use crate::outbound::{Outbound, OutboundClient, OutboundPolicy};

/// What a function's stores are built from; prepared once when it is loaded.
pub(crate) struct StoreTemplate {
    pub(crate) function: Arc<str>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) outbound: Arc<OutboundPolicy>,
    pub(crate) client: OutboundClient,
    pub(crate) budget: Arc<MemoryBudget>,
    pub(crate) output: Arc<OutputLimits>,
}

/// Per-request store data (per instance, when an instance is reused).
pub struct StoreState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    log: Arc<LogTags>,
    limiter: MemoryLimiter,
    /// When the current request must be done.
    deadline: Instant,
    outbound: Outbound,
}

impl StoreState {
    pub(crate) fn new(
        template: &StoreTemplate,
        request_id: &str,
        trace_headers: HeaderMap,
        memory_limit: u64,
        deadline: Instant,
    ) -> Self {
        let log = LogTags::new(
            template.function.clone(),
            request_id,
            template.output.clone(),
        );
        let wasi = WasiCtxBuilder::new()
            .envs(&template.env)
            .stdout(GuestLog::new(&log, Stream::Stdout))
            .stderr(GuestLog::new(&log, Stream::Stderr))
            // Sockets are linked (toolchains import them) but never usable.
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            log,
            limiter: MemoryLimiter::new(memory_limit, template.budget.clone()),
            deadline,
            outbound: Outbound {
                function: template.function.clone(),
                request_id: request_id.to_owned(),
                policy: template.outbound.clone(),
                client: template.client.clone(),
                propagate: trace_headers,
            },
        }
    }

    /// Readies a reused instance's state for the next request.
    pub(crate) fn begin_request(
        &mut self,
        request_id: &str,
        trace_headers: HeaderMap,
        deadline: Instant,
    ) {
        self.log.set_request_id(request_id);
        self.outbound.request_id = request_id.to_owned();
        self.outbound.propagate = trace_headers;
        self.limiter.forget_refusal();
        self.deadline = deadline;
    }

    pub(crate) fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }

    /// Which limit refused memory growth in this store, if one did.
    pub(crate) fn memory_refused(&self) -> Option<Refusal> {
        self.limiter.refused()
    }

    /// When the current request must be done.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}
