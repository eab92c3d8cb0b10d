//! The functions a host serves, and the one path by which they change.
//!
//! The registry publishes an immutable [`Table`] (every function and the
//! routes to them) through an atomic pointer: a request loads the current
//! table once and keeps the function it found until its response ends.
//!
//! Every change (a reloaded manifest now; uploads later) goes through
//! [`Registry::apply`], one at a time:
//!
//! 1. read every component the new set of functions names, and name each by
//!    its content digest;
//! 2. compare each function's definition with the one it would replace: an
//!    equal definition keeps its function as it is (warm, counting); a new
//!    or different one gets a new function, whose component compiles in
//!    the background (or reuses the artifact of the same bytes);
//! 3. build the whole new table beside the current one and check it (route
//!    conflicts, names);
//! 4. wait until what is new has compiled, and warm what replaces a warm
//!    function, so that no request meets a cold or failing function because
//!    of the change;
//! 5. swap the table in.
//!
//! A change that fails at any step leaves the current table serving, and
//! says why. At start-up the first table is published at step 4 instead,
//! so the host listens at once while its components compile.
//!
//! A function's own life (compiled, warm, scaled to zero) is in [`entry`];
//! compiling is in [`compiler`]; the tasks that run beside the requests
//! (scaling idle functions to zero, progress lines) in [`background`].

pub mod background;
pub mod compiler;
pub mod entry;
pub mod table;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use shoal_runtime::{ComponentSource, Runtime};

use self::compiler::{Compiler, JobState};
use self::entry::{FunctionDef, FunctionEntry, FunctionError, Lease, LifeState};
use self::table::{Change, Table, TableError};
use crate::admission::{Gate, GateLimits};
use crate::manifest::{FunctionDecl, FunctionName};
use crate::telemetry::metrics::{FunctionGauges, Gauges, Metrics};

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

/// When a change's new table is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// Once its new components have compiled: a change to a serving host.
    WhenCompiled,
    /// At once, its components compiling in the background: the first
    /// table, so that the host listens without waiting for compiles.
    Now,
}

/// What a change did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The generation of the table serving after it.
    pub generation: u64,
    /// Functions that were not there before.
    pub added: Vec<FunctionName>,
    /// Functions replaced by a different definition.
    pub changed: Vec<FunctionName>,
    /// Functions taken out.
    pub removed: Vec<FunctionName>,
}

impl Applied {
    /// Whether the change changed nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |names: &[FunctionName]| {
            names
                .iter()
                .map(FunctionName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let parts = [
            ("added", &self.added),
            ("changed", &self.changed),
            ("removed", &self.removed),
        ];
        let parts: Vec<String> = parts
            .into_iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(what, names)| format!("{what} {}", list(names)))
            .collect();
        if parts.is_empty() {
            f.write_str("nothing changed")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// Why a change was refused. The table serving before it still serves.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChangeError {
    /// A component could not be read, compiled or warmed.
    #[error(transparent)]
    Function(#[from] FunctionError),
    /// The new table would be invalid (a route conflict, say).
    #[error(transparent)]
    Table(#[from] TableError),
}

/// The functions of the host, behind their routes.
pub struct Registry {
    runtime: Arc<Runtime>,
    compiler: Arc<Compiler>,
    /// The host-wide gate in front of the instance pool.
    gate: Gate,
    table: ArcSwap<Table<FunctionEntry>>,
    /// Held by the change being made: changes happen one at a time.
    changing: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
    default_idle_timeout: Duration,
    clock: Clock,
}

impl Registry {
    /// An empty registry. It starts nothing: see [`Registry::start`] for
    /// the work it does in the background.
    pub fn new(
        runtime: Arc<Runtime>,
        metrics: Arc<Metrics>,
        host_gate: GateLimits,
        default_idle_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            compiler: Compiler::new(runtime.clone()),
            runtime,
            gate: Gate::new(host_gate),
            table: ArcSwap::from_pointee(Table::empty()),
            changing: tokio::sync::Mutex::new(()),
            metrics,
            default_idle_timeout,
            clock: Clock(Instant::now()),
        })
    }

    /// Starts the compiler's workers and the background tasks; they stop
    /// when the returned handle is stopped or dropped.
    pub fn start(self: &Arc<Self>) -> background::Background {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.compiler.start(workers);
        background::Background::start(self)
    }

    /// The table serving now.
    pub fn table(&self) -> arc_swap::Guard<Arc<Table<FunctionEntry>>> {
        self.table.load()
    }

    /// Makes the registry serve exactly `functions`: see the module's doc.
    pub async fn apply(
        self: &Arc<Self>,
        functions: &[FunctionDecl],
        publish: Publish,
    ) -> Result<Applied, ChangeError> {
        let _one_at_a_time = self.changing.lock().await;
        let current = self.table.load_full();
        let sources = read_sources(functions).await?;

        let mut applied = Applied::default();
        let mut changes = Vec::new();
        // New functions, and whether the function they replace is warm.
        let mut fresh = Vec::new();
        for (decl, source) in functions.iter().zip(sources) {
            let def = FunctionDef::new(decl, source.digest, self.default_idle_timeout);
            let old = current.get(&decl.name);
            if old.is_some_and(|old| *old.def() == def) {
                continue;
            }
            let job = self.compiler.job(source);
            let output = old.map_or_else(Arc::default, |old| old.output().clone());
            let entry = Arc::new(FunctionEntry::new(def, job, output, self.metrics.clone()));
            match old {
                Some(_) => applied.changed.push(decl.name.clone()),
                None => applied.added.push(decl.name.clone()),
            }
            fresh.push((entry.clone(), old.is_some_and(|old| old.is_warm())));
            changes.push(Change::Put(entry));
        }
        let named: HashSet<&FunctionName> = functions.iter().map(|decl| &decl.name).collect();
        for function in current.functions() {
            if !named.contains(function.name()) {
                applied.removed.push(function.name().clone());
                changes.push(Change::Remove(function.name().clone()));
            }
        }
        if changes.is_empty() {
            applied.generation = current.generation();
            return Ok(applied);
        }
        let next = current.change(changes)?;

        match publish {
            Publish::WhenCompiled => {
                for (entry, _) in &fresh {
                    self.compiler.prioritize(entry.job());
                }
                for (entry, replaces_warm) in &fresh {
                    entry
                        .job()
                        .artifact()
                        .await
                        .map_err(|error| FunctionError {
                            function: entry.name().to_string(),
                            error,
                        })?;
                    if *replaces_warm || entry.policy().min_instances > 0 {
                        entry.prewarm(&self.runtime, &self.compiler).await?;
                    }
                }
            }
            Publish::Now => {
                for (entry, _) in fresh {
                    if entry.policy().min_instances > 0 {
                        background::prewarm(self, entry);
                    }
                }
            }
        }

        applied.generation = next.generation();
        self.table.store(Arc::new(next));
        for name in &applied.removed {
            self.metrics.forget(name.as_str());
        }
        Ok(applied)
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

    /// Waits until every function of the table has compiled; fails with
    /// the first one refused, naming it. A table replaced meanwhile is
    /// waited for instead.
    pub async fn compiled(&self) -> Result<(), FunctionError> {
        loop {
            let table = self.table.load_full();
            let mut refused = None;
            for entry in table.functions() {
                if let Err(error) = entry.job().artifact().await {
                    refused = Some(FunctionError {
                        function: entry.name().to_string(),
                        error,
                    });
                    break;
                }
            }
            match refused {
                None => return Ok(()),
                Some(refused) if Arc::ptr_eq(&table, &self.table.load_full()) => {
                    return Err(refused);
                }
                Some(_) => {}
            }
        }
    }

    /// Whether every function of the table has compiled.
    pub fn all_compiled(&self) -> bool {
        self.table
            .load()
            .functions()
            .iter()
            .all(|f| matches!(f.job().state(), JobState::Done(Ok(_))))
    }

    /// The gauges the metrics show, read now.
    pub fn gauges(&self) -> Gauges {
        let table = self.table.load();
        let mut states = LifeState::ALL.map(|state| (state.label(), 0));
        let mut functions = Vec::new();
        for entry in table.functions() {
            states[entry.state() as usize].1 += 1;
            // A function that never had a request has no series.
            if entry.has_metrics() {
                functions.push(FunctionGauges {
                    name: entry.name().to_string(),
                    in_flight: entry.in_flight(),
                    waiting: entry.gate().waiting() as u64,
                    guest_output_dropped: entry.output().dropped(),
                });
            }
        }
        let budget = self.runtime.memory_budget();
        Gauges {
            generation: table.generation(),
            functions,
            states: states.to_vec(),
            memory_budget: budget.limit(),
            memory_in_use: budget.used(),
            log_lines_dropped: crate::telemetry::logs::dropped_lines(),
            host_waiting: self.gate.waiting() as u64,
        }
    }

    fn clock(&self) -> &Clock {
        &self.clock
    }
}

/// Reads the component of every function (each file once), on a blocking
/// thread.
async fn read_sources(functions: &[FunctionDecl]) -> Result<Vec<ComponentSource>, FunctionError> {
    let wanted: Vec<(FunctionName, PathBuf)> = functions
        .iter()
        .map(|decl| (decl.name.clone(), decl.component.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut read: HashMap<PathBuf, ComponentSource> = HashMap::new();
        wanted
            .into_iter()
            .map(|(name, path)| {
                if let Some(source) = read.get(&path) {
                    return Ok(source.clone());
                }
                let source = ComponentSource::read(&path).map_err(|error| FunctionError {
                    function: name.to_string(),
                    error: Arc::new(error),
                })?;
                read.insert(path, source.clone());
                Ok(source)
            })
            .collect()
    })
    .await
    .expect("reading components does not panic")
}
