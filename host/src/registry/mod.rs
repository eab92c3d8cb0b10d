//! The functions a host serves, the route table that finds them, and their
//! lifecycle (see [`entry`]): compiled in the background ([`compiler`]),
//! warmed by their first request, scaled to zero when idle ([`reaper`]).

pub mod compiler;
pub mod entry;
mod reaper;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_runtime::{FunctionSpec, Runtime};

use self::compiler::{CompileJob, Compiler, JobState};
use self::entry::{FunctionEntry, FunctionError, Lease, ScalePolicy};
use crate::admission::{Gate, GateLimits};
use crate::manifest::Manifest;
use crate::router::{RouteMatch, Router};
use crate::telemetry::metrics::Metrics;

/// How long a function stays warm without requests, unless its manifest
/// says otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Milliseconds since the registry was created: cheap to read, to store in
/// an atomic, and to compare.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// Milliseconds since the clock started.
    pub fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// Every function of the manifest, behind its routes.
pub struct Registry {
    runtime: Arc<Runtime>,
    /// The host-wide gate in front of the instance pool.
    gate: Gate,
    compiler: Arc<Compiler>,
    router: Router<Arc<FunctionEntry>>,
    functions: Vec<Arc<FunctionEntry>>,
    jobs: Vec<Arc<CompileJob>>,
    clock: Clock,
}

impl Registry {
    /// Registers every function of `manifest` and starts compiling their
    /// components in the background, one job per distinct file. Fails at
    /// once, before anything is compiled, if a component file is missing or
    /// is not a component.
    pub fn start(
        runtime: Arc<Runtime>,
        manifest: &Manifest,
        default_idle_timeout: Duration,
        host_gate: GateLimits,
        metrics: &Arc<Metrics>,
    ) -> Result<Arc<Self>, FunctionError> {
        let mut jobs: HashMap<PathBuf, Arc<CompileJob>> = HashMap::new();
        let mut order = Vec::new();
        let mut users: HashMap<PathBuf, usize> = HashMap::new();
        for decl in &manifest.functions {
            *users.entry(decl.component.clone()).or_default() += 1;
        }
        let mut functions = Vec::with_capacity(manifest.functions.len());
        for decl in &manifest.functions {
            let job = match jobs.get(&decl.component) {
                Some(job) => job.clone(),
                None => {
                    shoal_runtime::precheck(&decl.component).map_err(|error| FunctionError {
                        function: decl.name.to_string(),
                        error: Arc::new(error),
                    })?;
                    let job = CompileJob::new(decl.component.clone(), users[&decl.component]);
                    jobs.insert(decl.component.clone(), job.clone());
                    order.push(job.clone());
                    job
                }
            };
            let spec = FunctionSpec {
                name: decl.name.to_string(),
                env: decl
                    .env
                    .iter()
                    .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                    .collect(),
                max_instance_reuse: decl.max_instance_reuse,
                limits: decl.limits,
                outbound: decl.outbound.clone(),
            };
            let policy = ScalePolicy {
                idle_timeout: decl.idle_timeout.unwrap_or(default_idle_timeout),
                min_instances: decl.min_instances,
            };
            functions.push(Arc::new(FunctionEntry::new(
                decl.name.clone(),
                decl.routes.clone(),
                spec,
                policy,
                Gate::new(decl.gate),
                job,
                metrics.clone(),
            )));
        }

        let routes = functions
            .iter()
            .flat_map(|f| f.routes().iter().map(|r| (r.clone(), f.clone())));
        let router = Router::new(routes).unwrap_or_else(|conflict| {
            // `Manifest::parse` has already refused every conflict.
            unreachable!(
                "route {} conflicts after the manifest was checked",
                conflict.pattern
            )
        });

        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let compiler = Compiler::start(runtime.clone(), order.clone(), workers);
        let registry = Arc::new(Self {
            runtime,
            gate: Gate::new(host_gate),
            compiler,
            router,
            functions,
            jobs: order,
            clock: Clock(Instant::now()),
        });

        tokio::spawn(compiler::report_progress(registry.jobs.clone()));
        tokio::spawn(reaper::run(registry.clone()));
        for entry in registry
            .functions
            .iter()
            .filter(|f| f.policy().min_instances > 0)
        {
            let (registry, entry) = (registry.clone(), entry.clone());
            tokio::spawn(async move { entry.prewarm(&registry.runtime, &registry.compiler).await });
        }
        Ok(registry)
    }

    /// The function serving `path`, if any, and the route that matched.
    pub fn route<'p>(&self, path: &'p str) -> Option<(RouteMatch<'p>, &Arc<FunctionEntry>)> {
        self.router.find(path)
    }

    /// The warm function of `entry` for one request, cold-starting it if
    /// needed.
    pub async fn acquire(&self, entry: &Arc<FunctionEntry>) -> Result<Lease, FunctionError> {
        entry
            .acquire(&self.runtime, &self.compiler, &self.clock)
            .await
    }

    /// The host-wide gate: at most as many requests run at once as the
    /// instance pool has slots.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Every function, in the manifest's order.
    pub fn functions(&self) -> &[Arc<FunctionEntry>] {
        &self.functions
    }

    fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Waits until every component is compiled; fails with the first one
    /// refused, naming a function that uses it.
    pub async fn compiled(&self) -> Result<(), FunctionError> {
        for job in &self.jobs {
            if let Err(error) = job.artifact().await {
                let function = self
                    .functions
                    .iter()
                    .find(|f| Arc::ptr_eq(f.job(), job))
                    .map_or_else(String::new, |f| f.name().to_string());
                return Err(FunctionError { function, error });
            }
        }
        Ok(())
    }

    /// Whether every component is compiled.
    pub fn all_compiled(&self) -> bool {
        self.jobs
            .iter()
            .all(|job| matches!(job.state(), JobState::Done(Ok(_))))
    }
}
