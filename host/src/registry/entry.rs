//! One registered function and its life:
//!
//! ```text
//!   registered ──compile──▶ compiled ──first request──▶ warm
//!   (declared)              (artifact      (cold start)   (artifact mapped,
//!                            on disk)  ◀──idle_timeout──   InstancePre ready)
//! ```
//!
//! A warm function is an [`Arc<Function>`] in an [`ArcSwapOption`]: the
//! request path reads it without a lock. A cold start takes the entry's
//! `warming` lock, so concurrent first requests warm the function once and
//! share it. Scaling to zero swaps the function out; requests in flight keep
//! their own reference, so nothing is cut off, and the mapping is released
//! when the last of them finishes.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use shoal_runtime::{Digest, Function, FunctionSpec, Limits, LoadError, OutputLimits, Runtime};

use super::Clock;
use super::compiler::{CompileJob, Compiler, JobState};
use crate::admission::{Gate, GateLimits};
use crate::deploy::state::RevisionName;
use crate::events::Trigger;
use crate::manifest::{FunctionDecl, FunctionName};
use crate::router::RoutePattern;
use crate::telemetry::metrics::{FunctionMetrics, Metrics};

/// When a function scales to zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalePolicy {
    /// Warm time without requests before scaling to zero.
    pub idle_timeout: Duration,
    /// Above 0, never scale to zero.
    pub min_instances: u32,
}

/// Everything that makes a function what it is: its declaration, with the
/// host's defaults filled in and its component named by content. Two
/// functions with equal definitions behave the same, so a change that
/// leaves a definition equal leaves its function alone (warm, counting).
///
/// The declaration is shared with the source that declared it, not copied:
/// with 100,000 functions, copies of every name, route and variable were a
/// fifth of the memory and much of the time to ready.
#[derive(Debug, Clone)]
pub struct FunctionDef {
    decl: Arc<FunctionDecl>,
    /// The revision it is, for a function deployed through the admin API.
    pub revision: Option<RevisionName>,
    /// Its component, by content.
    pub component: Digest,
    /// When it scales to zero.
    pub policy: ScalePolicy,
}

impl FunctionDef {
    /// The definition of `decl`, whose component has `component` as digest;
    /// `default_idle_timeout` applies unless the declaration sets one.
    pub fn new(
        decl: &Arc<FunctionDecl>,
        component: Digest,
        default_idle_timeout: Duration,
        revision: Option<RevisionName>,
    ) -> Self {
        Self {
            revision,
            component,
            policy: ScalePolicy {
                idle_timeout: decl.idle_timeout.unwrap_or(default_idle_timeout),
                min_instances: decl.min_instances,
            },
            decl: decl.clone(),
        }
    }

    /// Whether `decl` is the very declaration it was made from.
    pub fn is_declared_by(&self, decl: &Arc<FunctionDecl>) -> bool {
        Arc::ptr_eq(&self.decl, decl)
    }

    /// Its function's name.
    pub fn name(&self) -> &FunctionName {
        &self.decl.name
    }

    /// Where it is served.
    pub fn routes(&self) -> &[RoutePattern] {
        &self.decl.routes
    }

    /// The events it takes.
    pub fn events(&self) -> &[Trigger] {
        &self.decl.events
    }

    /// How many requests one instance serves.
    pub fn max_instance_reuse(&self) -> NonZeroU32 {
        self.decl.max_instance_reuse
    }

    /// Memory, time and body limits per request.
    pub fn limits(&self) -> Limits {
        self.decl.limits
    }

    /// Requests at once, and how many may wait, for how long.
    pub fn gate(&self) -> GateLimits {
        self.decl.gate
    }

    /// What the runtime needs to warm the function, whose guests' output
    /// is bounded by `output`.
    fn spec(&self, output: &Arc<OutputLimits>) -> FunctionSpec {
        FunctionSpec {
            output: output.clone(),
            name: self.decl.name.to_string(),
            env: self
                .decl
                .env
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                .collect(),
            max_instance_reuse: self.decl.max_instance_reuse,
            limits: self.decl.limits,
            outbound: self.decl.outbound.clone(),
        }
    }
}

/// Equal when they would serve alike: where the component file lies and
/// how it is built do not count, only its content.
impl PartialEq for FunctionDef {
    fn eq(&self, other: &Self) -> bool {
        // Names every field: a new one does not compile until it is named
        // here, and compared unless it cannot change how the function serves.
        let FunctionDecl {
            name,
            component: _,
            routes,
            events,
            env,
            idle_timeout: _,  // in `policy`
            min_instances: _, // in `policy`
            max_instance_reuse,
            limits,
            gate,
            outbound,
            build: _,
        } = &*self.decl;
        let theirs = &*other.decl;
        self.revision == other.revision
            && self.component == other.component
            && self.policy == other.policy
            && (Arc::ptr_eq(&self.decl, &other.decl)
                || (*name == theirs.name
                    && *routes == theirs.routes
                    && *events == theirs.events
                    && *env == theirs.env
                    && *max_instance_reuse == theirs.max_instance_reuse
                    && *limits == theirs.limits
                    && *gate == theirs.gate
                    && *outbound == theirs.outbound))
    }
}

/// Where a function is in its life, as the admin API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LifeState {
    /// Declared; its component is waiting to be compiled.
    Registered,
    /// Its component is being compiled (or looked up in the cache).
    Compiling,
    /// Its artifact is on disk; it holds no memory.
    Compiled,
    /// Mapped and pre-instantiated.
    Warm,
    /// Its component was refused.
    Failed,
}

impl LifeState {
    /// Every state, in order.
    pub const ALL: [Self; 5] = [
        Self::Registered,
        Self::Compiling,
        Self::Compiled,
        Self::Warm,
        Self::Failed,
    ];

    /// The state's name, as the admin API and the metrics write it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Compiling => "compiling",
            Self::Compiled => "compiled",
            Self::Warm => "warm",
            Self::Failed => "failed",
        }
    }
}

/// A function of the registry.
pub struct FunctionEntry {
    def: FunctionDef,
    gate: Gate,
    job: Arc<CompileJob>,
    /// What its guests may write; kept from the version it replaces.
    output: Arc<OutputLimits>,
    /// Its revision's name, written out once.
    revision_text: Option<String>,
    warm: ArcSwapOption<Function>,
    warming: tokio::sync::Mutex<()>,
    /// Last request start or end, in [`Clock`] milliseconds.
    last_used: AtomicU64,
    in_flight: AtomicU64,
    cold_starts: AtomicU64,
    /// The host's metrics, and this function's counters, resolved on its
    /// first request: a function never called holds no series.
    all_metrics: Arc<Metrics>,
    metrics: OnceLock<FunctionMetrics>,
    /// Where it goes when it warms, for the sweep that scales it to zero.
    warm_set: Arc<WarmSet>,
}

/// The functions warm now: the sweep that scales idle functions to zero
/// walks these, not every function registered, and sleeps while there are
/// none, so a host of 100,000 functions at rest does no work.
#[derive(Default)]
pub(super) struct WarmSet {
    entries: Mutex<Vec<Weak<FunctionEntry>>>,
    added: tokio::sync::Notify,
}

impl WarmSet {
    /// `entry` has warmed.
    fn add(&self, entry: &Arc<FunctionEntry>) {
        self.lock().push(Arc::downgrade(entry));
        self.added.notify_one();
    }

    /// Scales the idle ones to zero, and forgets them and those gone from
    /// the registry. Returns the shortest idle timeout of those still warm,
    /// `None` if none is.
    pub(super) fn sweep(&self, clock: &Clock) -> Option<Duration> {
        let mut entries = std::mem::take(&mut *self.lock());
        entries.sort_by_key(Weak::as_ptr);
        entries.dedup_by(|a, b| a.ptr_eq(b));
        let mut shortest = None::<Duration>;
        entries.retain(|entry| {
            let Some(entry) = entry.upgrade() else {
                return false;
            };
            if !entry.is_warm() || entry.policy().min_instances > 0 {
                return false;
            }
            if entry.scale_to_zero_if_idle(clock) {
                return false;
            }
            let timeout = entry.policy().idle_timeout;
            shortest = Some(shortest.map_or(timeout, |s| s.min(timeout)));
            true
        });
        // Those that warmed during the sweep were added meanwhile.
        self.lock().append(&mut entries);
        shortest
    }

    /// Waits until a function warms (at once if one did since the last
    /// call).
    pub(super) async fn wait_for_one(&self) {
        self.added.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<FunctionEntry>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A function whose component was refused, or could not be warmed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("function `{function}`: {error}")]
pub struct FunctionError {
    /// The function.
    pub function: String,
    /// Why.
    pub error: Arc<LoadError>,
}

impl FunctionEntry {
    /// A function of definition `def`, whose component `job` compiles,
    /// and whose guests' output is bounded by `output`.
    pub(super) fn new(
        def: FunctionDef,
        job: Arc<CompileJob>,
        output: Arc<OutputLimits>,
        metrics: Arc<Metrics>,
        warm_set: Arc<WarmSet>,
    ) -> Self {
        Self {
            gate: Gate::new(def.gate()),
            revision_text: def.revision.as_ref().map(ToString::to_string),
            def,
            job,
            output,
            warm: ArcSwapOption::empty(),
            warming: tokio::sync::Mutex::new(()),
            last_used: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            cold_starts: AtomicU64::new(0),
            all_metrics: metrics,
            metrics: OnceLock::new(),
            warm_set,
        }
    }

    /// The function's name.
    pub fn name(&self) -> &FunctionName {
        self.def.name()
    }

    /// What it is.
    pub fn def(&self) -> &FunctionDef {
        &self.def
    }

    /// The revision it is, for a deployed function.
    pub fn revision(&self) -> Option<&RevisionName> {
        self.def.revision.as_ref()
    }

    /// Its `revision` label: the revision's name, empty for a manifest
    /// function.
    pub fn revision_label(&self) -> &str {
        self.revision_text.as_deref().unwrap_or("")
    }

    /// When it scales to zero.
    pub fn policy(&self) -> ScalePolicy {
        self.def.policy
    }

    /// How many requests one instance serves.
    pub fn max_instance_reuse(&self) -> u32 {
        self.def.max_instance_reuse().get()
    }

    /// Memory, time and body limits per request.
    pub fn limits(&self) -> Limits {
        self.def.limits()
    }

    /// The function's counters.
    pub fn metrics(&self) -> &FunctionMetrics {
        self.metrics.get_or_init(|| {
            self.all_metrics
                .function(self.def.name().as_str(), self.revision_label())
        })
    }

    /// Whether the function has counters yet (it has had a request).
    pub fn has_metrics(&self) -> bool {
        self.metrics.get().is_some()
    }

    /// The function's admission gate.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Its compile job.
    pub(super) fn job(&self) -> &Arc<CompileJob> {
        &self.job
    }

    /// What its guests may write to stdout and stderr, and what they wrote
    /// past it.
    pub fn output(&self) -> &Arc<OutputLimits> {
        &self.output
    }

    /// Whether it is warm now.
    pub fn is_warm(&self) -> bool {
        self.warm.load().is_some()
    }

    /// Instances kept for reuse between requests.
    pub fn idle_instances(&self) -> usize {
        self.warm.load().as_ref().map_or(0, |f| f.idle_instances())
    }

    /// Cold starts so far.
    pub fn cold_starts(&self) -> u64 {
        self.cold_starts.load(Ordering::Relaxed)
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Where the function is in its life.
    pub fn state(&self) -> LifeState {
        if self.warm.load().is_some() {
            return LifeState::Warm;
        }
        match self.job.state() {
            JobState::Queued => LifeState::Registered,
            JobState::Compiling(_) => LifeState::Compiling,
            JobState::Done(Ok(_)) => LifeState::Compiled,
            JobState::Done(Err(_)) => LifeState::Failed,
        }
    }

    /// Why its component was refused, if it was.
    pub fn failure(&self) -> Option<Arc<LoadError>> {
        match self.job.state() {
            JobState::Done(Err(error)) => Some(error),
            _ => None,
        }
    }

    /// The warm function for one request, cold-starting it if needed. The
    /// lease counts the request as in flight until it is dropped.
    pub async fn acquire(
        self: &Arc<Self>,
        runtime: &Runtime,
        compiler: &Compiler,
        clock: &Clock,
    ) -> Result<Lease, FunctionError> {
        let function = match self.warm.load_full() {
            Some(function) => function,
            None => self.cold_start(runtime, compiler).await?,
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch(clock);
        Ok(Lease {
            function,
            entry: self.clone(),
            clock: *clock,
        })
    }

    async fn cold_start(
        self: &Arc<Self>,
        runtime: &Runtime,
        compiler: &Compiler,
    ) -> Result<Arc<Function>, FunctionError> {
        let start = Instant::now();
        let _warming = self.warming.lock().await;
        if let Some(function) = self.warm.load_full() {
            // Another request warmed it while this one waited.
            return Ok(function);
        }
        let unavailable = |error| FunctionError {
            function: self.def.name().to_string(),
            error,
        };
        compiler.prioritize(&self.job);
        let artifact = self.job.artifact().await.map_err(unavailable)?;
        let waited = start.elapsed();
        // Mapping and linking take well under a millisecond for most
        // components, a few for the largest: done inline, which is cheaper
        // than handing the work to another thread.
        let function = runtime
            .warm(&artifact, self.def.spec(&self.output))
            .map_err(|e| unavailable(Arc::new(e)))?;
        let function = Arc::new(function);
        self.warm.store(Some(function.clone()));
        self.warm_set.add(self);
        let count = self.cold_starts.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics().cold_start(start.elapsed());
        tracing::info!(
            function = %self.def.name(),
            elapsed_ms = start.elapsed().as_secs_f64() * 1e3,
            waited_for_compile_ms = waited.as_secs_f64() * 1e3,
            loaded_code = function.loaded_code(),
            cold_starts = count,
            "cold start"
        );
        Ok(function)
    }

    /// Warms the function now, without a request: for `min_instances`, or
    /// to take over from a warm version it replaces.
    pub(super) async fn prewarm(
        self: &Arc<Self>,
        runtime: &Runtime,
        compiler: &Compiler,
    ) -> Result<(), FunctionError> {
        self.cold_start(runtime, compiler).await.map(drop)
    }

    /// Scales the function to zero if it is warm, idle and allowed to.
    /// Returns whether it did.
    pub(super) fn scale_to_zero_if_idle(&self, clock: &Clock) -> bool {
        if self.def.policy.min_instances > 0 || self.warm.load().is_none() {
            return false;
        }
        let idle_ms = clock
            .now_ms()
            .saturating_sub(self.last_used.load(Ordering::Relaxed));
        if self.in_flight() > 0 || u128::from(idle_ms) < self.def.policy.idle_timeout.as_millis() {
            return false;
        }
        // A cold start in progress holds the lock; leave the function to it.
        let Ok(_warming) = self.warming.try_lock() else {
            return false;
        };
        if self.warm.swap(None).is_some() {
            if let Some(metrics) = self.metrics.get() {
                metrics.cool_down();
            }
            tracing::info!(function = %self.def.name(), idle_ms, "scaled to zero");
            return true;
        }
        false
    }

    fn touch(&self, clock: &Clock) {
        self.last_used.store(clock.now_ms(), Ordering::Relaxed);
    }
}

/// A warm function held for one request.
pub struct Lease {
    function: Arc<Function>,
    entry: Arc<FunctionEntry>,
    clock: Clock,
}

impl Lease {
    /// The function to run the request on.
    pub fn function(&self) -> &Function {
        &self.function
    }

    /// The registry entry.
    pub fn entry(&self) -> &FunctionEntry {
        &self.entry
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.entry.touch(&self.clock);
        self.entry.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::manifest::EnvName;

    fn def(decl: FunctionDecl) -> FunctionDef {
        let digest = Digest::of(b"the same component");
        FunctionDef::new(&Arc::new(decl), digest, Duration::from_secs(60), None)
    }

    fn hello(component: &str) -> FunctionDecl {
        let name = FunctionName::from_stem("hello");
        let routes = vec![RoutePattern::Exact("/hello".to_owned())];
        FunctionDecl::new(name, PathBuf::from(component), routes)
    }

    #[test]
    fn definitions_differ_by_what_serves_not_by_where_the_file_lies() {
        // The same bytes from another path, declared apart: the same.
        assert_eq!(def(hello("a/hello.wasm")), def(hello("b/hello.wasm")));

        let mut more_env = hello("a/hello.wasm");
        let greeting = EnvName::try_from("GREETING".to_owned()).unwrap();
        more_env.env.insert(greeting, "hi".to_owned());
        assert_ne!(def(hello("a/hello.wasm")), def(more_env));

        let mut other_route = hello("a/hello.wasm");
        other_route.routes = vec![RoutePattern::Prefix("/hello".to_owned())];
        assert_ne!(def(hello("a/hello.wasm")), def(other_route));

        let mut shorter_idle = hello("a/hello.wasm");
        shorter_idle.idle_timeout = Some(Duration::from_secs(1));
        assert_ne!(def(hello("a/hello.wasm")), def(shorter_idle));
    }
}
