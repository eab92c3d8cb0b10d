//! The functions a host serves, and the one path by which they change.
//!
//! The registry publishes an immutable [`Table`] (every function and the
//! routes to them) through an atomic pointer: a request loads the current
//! table once and keeps the function it found until its response ends.
//!
//! Functions come from two sources ([`Sources`]): the manifest, and what
//! was deployed through the admin API (each function with the revisions
//! that serve it). Every change to either (a reloaded manifest, an upload, a
//! traffic split, a deletion) goes through [`Registry::change`], one at a
//! time:
//!
//! 1. edit a copy of the sources;
//! 2. find the functions to look at: all of them if the manifest was
//!    replaced, else only the deployed functions the edit changed;
//! 3. read the components of their new declarations, naming each by its
//!    content digest, and compare each revision's definition with the one
//!    serving now: an equal definition keeps its revision as it is (warm,
//!    counting); a new or different one gets a new revision, whose
//!    component compiles in the background (or reuses the artifact of the
//!    same bytes);
//! 4. build the new table beside the current one, sharing with it what the
//!    change leaves alone, and check it (route conflicts, names claimed by
//!    both sources);
//! 5. wait until what is new has compiled, and warm what replaces a warm
//!    revision, so that no request meets a cold or failing function because
//!    of the change;
//! 6. commit: the caller makes the change durable (the deployed state is
//!    written to disk) or refuses it;
//! 7. swap the table in.
//!
//! A change that fails at any step leaves the current table (and the
//! sources) as they were, and says why. At start-up the first table is
//! published at step 5 instead, so the host listens at once while its
//! components compile.
//!
//! A function's own life (compiled, warm, scaled to zero) is in [`entry`];
//! compiling is in [`compiler`]; the tasks that run beside the requests
//! (scaling idle functions to zero, progress lines) in [`background`].

pub mod background;
pub mod compiler;
pub mod entry;
pub mod function;
pub mod table;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use imbl::OrdMap;
use imbl::ordmap::DiffItem;
use shoal_runtime::{ComponentSource, Digest, LoadError, Runtime};

use self::compiler::{Compiler, JobState};
use self::entry::{FunctionDef, FunctionEntry, FunctionError, Lease, LifeState, WarmSet};
use self::function::{Function, Share, Source};
use self::table::{Change, Routed, Table, TableError};
use crate::admission::{Gate, GateLimits};
use crate::deploy::state::RevisionName;
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
    /// Both sources declare a function of this name.
    #[error(
        "function `{0}` is both in the manifest and deployed through the admin API; \
         a function belongs to one of them"
    )]
    NameTaken(FunctionName),
    /// The caller refused to commit it (the deployed state could not be
    /// written, say).
    #[error("{0}")]
    Commit(String),
}

/// One function as a source wants it served.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Its name.
    pub name: FunctionName,
    /// Where it comes from.
    pub source: Source,
    /// The revisions that serve it, with their shares (one, with all the
    /// traffic, for a manifest function).
    pub revisions: Vec<DesiredRevision>,
}

/// A revision a source wants to serve.
#[derive(Debug, Clone)]
pub struct DesiredRevision {
    /// Its name (`None` for a manifest function).
    pub revision: Option<RevisionName>,
    /// Its declaration.
    pub decl: Arc<FunctionDecl>,
    /// Its share of the function's requests.
    pub share: Share,
}

/// Two revisions are the same if they are declared by the same declaration
/// (not an equal one: the registry keeps what a declaration made) and
/// share alike.
impl PartialEq for DesiredRevision {
    fn eq(&self, other: &Self) -> bool {
        self.revision == other.revision
            && Arc::ptr_eq(&self.decl, &other.decl)
            && self.share == other.share
    }
}

impl Desired {
    /// The manifest's functions, each its own one revision.
    pub fn from_manifest(functions: &[Arc<FunctionDecl>]) -> Vec<Desired> {
        functions
            .iter()
            .map(|decl| Desired {
                name: decl.name.clone(),
                source: Source::Manifest,
                revisions: vec![DesiredRevision {
                    revision: None,
                    decl: decl.clone(),
                    share: Share {
                        percent: 100,
                        pins: Vec::new(),
                    },
                }],
            })
            .collect()
    }
}

/// Every source of functions.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The manifest's functions: replaced as a whole when the manifest is
    /// (reloaded), shared as they are by every other change.
    pub manifest: Arc<[Desired]>,
    /// The functions deployed through the admin API, by name: a
    /// persistent map, so that a change to one of them copies none of the
    /// others and the plan finds the changed ones without looking at every
    /// one.
    pub deployed: OrdMap<FunctionName, Desired>,
}

/// The functions of the host, behind their routes.
pub struct Registry {
    runtime: Arc<Runtime>,
    compiler: Arc<Compiler>,
    /// The host-wide gate in front of the instance pool.
    gate: Gate,
    table: ArcSwap<Table<Function>>,
    /// The sources of the table serving; held by the change being made, so
    /// that changes happen one at a time.
    sources: tokio::sync::Mutex<Sources>,
    metrics: Arc<Metrics>,
    /// The functions warm now.
    warm: Arc<WarmSet>,
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
        events_path: &str,
    ) -> Arc<Self> {
        Arc::new(Self {
            compiler: Compiler::new(runtime.clone()),
            runtime,
            gate: Gate::new(host_gate),
            table: ArcSwap::from_pointee(Table::with_events_path(events_path)),
            sources: tokio::sync::Mutex::new(Sources::default()),
            metrics,
            warm: Arc::default(),
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
    pub fn table(&self) -> arc_swap::Guard<Arc<Table<Function>>> {
        self.table.load()
    }

    /// Makes the registry serve the manifest's `functions` (and what was
    /// deployed, as before).
    pub async fn apply_manifest(
        self: &Arc<Self>,
        functions: &[Arc<FunctionDecl>],
        publish: Publish,
    ) -> Result<Applied, ChangeError> {
        let desired = Desired::from_manifest(functions);
        let (applied, ()) = self
            .change(
                publish,
                |sources| {
                    sources.manifest = desired.into();
                    Ok::<_, ChangeError>(())
                },
                |()| Ok(()),
            )
            .await?;
        Ok(applied)
    }

    /// Changes the sources with `edit`, then, once the new table is built,
    /// checked and compiled, lets `commit` make the change durable (or
    /// refuse it) before the table is swapped in. See the module's doc.
    pub async fn change<T, E: From<ChangeError>>(
        self: &Arc<Self>,
        publish: Publish,
        edit: impl FnOnce(&mut Sources) -> Result<T, E>,
        commit: impl FnOnce(&T) -> Result<(), E>,
    ) -> Result<(Applied, T), E> {
        let mut sources = self.sources.lock().await;
        let mut next_sources = sources.clone();
        let edited = edit(&mut next_sources)?;
        let current = self.table.load_full();
        let (next, applied, fresh) = self.plan(&current, &sources, &next_sources).await?;
        let Some(next) = next else {
            commit(&edited)?;
            *sources = next_sources;
            return Ok((applied, edited));
        };
        match publish {
            Publish::WhenCompiled => self.ready(&fresh).await.map_err(E::from)?,
            Publish::Now => {
                for (entry, _) in fresh {
                    if entry.policy().min_instances > 0 {
                        background::prewarm(self, entry);
                    }
                }
            }
        }
        commit(&edited)?;
        self.publish(next, &applied);
        *sources = next_sources;
        Ok((applied, edited))
    }

    /// The table `after` describes, built beside `current` (which serves
    /// `before`; `None` if it would serve as `current` does), what changes,
    /// and the new revisions with whether each replaces a warm one.
    ///
    /// A change that keeps the manifest as it was (a deploy, a traffic
    /// split, a deletion) looks only at the deployed functions that differ
    /// between `before` and `after`: with 100,000 functions, in the
    /// manifest or deployed, a deploy looks at its own.
    async fn plan(
        &self,
        current: &Table<Function>,
        before: &Sources,
        after: &Sources,
    ) -> Result<PlannedTable, ChangeError> {
        let whole = !Arc::ptr_eq(&before.manifest, &after.manifest);
        // The functions to look at, and those taken out.
        let mut all: Vec<&Desired> = Vec::new();
        let mut gone: Vec<&FunctionName> = Vec::new();
        if whole {
            all.extend(after.manifest.iter().chain(after.deployed.values()));
        } else {
            for item in before.deployed.diff(&after.deployed) {
                match item {
                    DiffItem::Add(_, desired)
                    | DiffItem::Update {
                        new: (_, desired), ..
                    } => {
                        all.push(desired);
                    }
                    DiffItem::Remove(name, _) => gone.push(name),
                }
            }
        }
        let mut names = HashSet::with_capacity(all.len());
        for desired in &all {
            let manifest_has_it = !whole
                && current
                    .get(&desired.name)
                    .is_some_and(|f| f.source() == Source::Manifest);
            if !names.insert(&desired.name) || manifest_has_it {
                return Err(ChangeError::NameTaken(desired.name.clone()));
            }
        }
        if whole {
            let before = before.manifest.iter().chain(before.deployed.values());
            gone.extend(before.map(|d| &d.name).filter(|name| !names.contains(name)));
        }
        // Each function as the table serves it now, looked up once: with
        // 100,000 functions, these lookups were a third of a deploy's time.
        let olds: Vec<Option<&Arc<Function>>> = all
            .iter()
            .map(|desired| current.get(&desired.name))
            .collect();
        // A revision declared by the very declaration the table serves it
        // from is kept as it is, its component not read again: a change to
        // one function (a deploy, say) neither rereads nor reloads the files
        // of the others. A reloaded manifest is all new declarations.
        let unchanged: Vec<Option<Arc<FunctionEntry>>> = all
            .iter()
            .zip(&olds)
            .flat_map(|(desired, &old)| {
                desired.revisions.iter().map(move |wanted| {
                    old?.revisions()
                        .iter()
                        .find(|entry| {
                            entry.revision() == wanted.revision.as_ref()
                                && entry.def().is_declared_by(&wanted.decl)
                        })
                        .cloned()
                })
            })
            .collect();
        let decls: Vec<Arc<FunctionDecl>> = all
            .iter()
            .flat_map(|d| &d.revisions)
            .zip(&unchanged)
            .filter(|(_, unchanged)| unchanged.is_none())
            .map(|(wanted, _)| wanted.decl.clone())
            .collect();
        let mut components = read_sources(decls).await?.into_iter();
        let mut unchanged = unchanged.into_iter();

        let mut applied = Applied::default();
        let mut changes = Vec::new();
        let mut fresh = Vec::new();
        for (desired, old) in all.iter().zip(olds) {
            let mut revisions = Vec::with_capacity(desired.revisions.len());
            for wanted in &desired.revisions {
                if let Some(entry) = unchanged.next().expect("one per revision") {
                    revisions.push((entry, wanted.share.clone()));
                    continue;
                }
                let source = components.next().expect("one component per revision read");
                let def = FunctionDef::new(
                    &wanted.decl,
                    source.digest,
                    self.default_idle_timeout,
                    wanted.revision.clone(),
                );
                let kept = old.and_then(|old| old.revisions().iter().find(|e| *e.def() == def));
                let entry = match kept {
                    Some(entry) => entry.clone(),
                    None => {
                        let output =
                            old.map_or_else(Arc::default, |old| old.primary().output().clone());
                        let job = self.compiler.job(source, Some(&desired.name));
                        let entry = Arc::new(FunctionEntry::new(
                            def,
                            job,
                            output,
                            self.metrics.clone(),
                            self.warm.clone(),
                        ));
                        let replaces_warm = old.is_some_and(|old| old.primary().is_warm());
                        fresh.push((entry.clone(), replaces_warm));
                        entry
                    }
                };
                revisions.push((entry, wanted.share.clone()));
            }
            let function = match desired.source {
                Source::Manifest if revisions.len() == 1 => {
                    let (entry, _) = revisions.pop().expect("one revision");
                    Function::single(desired.name.clone(), desired.source, entry)
                }
                _ => Function::split(desired.name.clone(), desired.source, revisions),
            };
            match old {
                Some(old) if old.same_as(&function) => {}
                Some(_) => {
                    applied.changed.push(desired.name.clone());
                    changes.push(Change::Put(Arc::new(function)));
                }
                None => {
                    applied.added.push(desired.name.clone());
                    changes.push(Change::Put(Arc::new(function)));
                }
            }
        }
        for name in gone {
            applied.removed.push(name.clone());
            changes.push(Change::Remove(name.clone()));
        }
        if changes.is_empty() {
            applied.generation = current.generation();
            return Ok((None, applied, fresh));
        }
        let next = current.change(changes)?;
        applied.generation = next.generation();
        Ok((Some(next), applied, fresh))
    }

    /// Compiles `fresh` revisions, and warms those that replace a warm
    /// one or are kept warm.
    async fn ready(&self, fresh: &[(Arc<FunctionEntry>, bool)]) -> Result<(), ChangeError> {
        for (entry, _) in fresh {
            self.compiler.prioritize(entry.job());
        }
        for (entry, replaces_warm) in fresh {
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
        Ok(())
    }

    /// Swaps `next` in, and forgets the series of the revisions it no
    /// longer serves. A revision replaced by one of the same function and
    /// revision name (a changed definition) keeps its series: the new one
    /// counts on in them, and may already have (a replacement is warmed
    /// before it is published).
    ///
    /// Only the functions `applied` names as changed or removed can have
    /// lost a revision: the others are not looked at (with 100,000
    /// functions, a set of every series served was a quarter of a deploy).
    fn publish(&self, next: Table<Function>, applied: &Applied) {
        let previous = self.table.swap(Arc::new(next));
        let table = self.table.load();
        for name in applied.changed.iter().chain(&applied.removed) {
            let Some(before) = previous.get(name) else {
                continue;
            };
            let after = table.get(name).map_or(&[][..], |f| f.revisions());
            for entry in before.revisions() {
                let label = entry.revision_label();
                if !after.iter().any(|e| e.revision_label() == label) {
                    self.metrics.forget(name.as_str(), label);
                }
            }
        }
    }

    /// Compiles (or finds in the cache) the component of `source` and
    /// checks that it serves HTTP here, without registering anything.
    pub async fn compile(&self, source: ComponentSource) -> Result<(), Arc<LoadError>> {
        let job = self.compiler.job(source, None);
        self.compiler.prioritize(&job);
        job.artifact().await.map(drop)
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

    /// Waits until every revision of the table has compiled; fails with
    /// the first one refused, naming it. A table replaced meanwhile is
    /// waited for instead.
    pub async fn compiled(&self) -> Result<(), FunctionError> {
        loop {
            let table = self.table.load_full();
            let mut refused = None;
            for entry in table.functions().flat_map(|f| f.revisions()) {
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

    /// Removes the cached artifacts that no function of the table serving
    /// uses and that no host sharing the cache has used for
    /// [`UNUSED_ARTIFACT_GRACE`](shoal_runtime::UNUSED_ARTIFACT_GRACE).
    /// Blocking: it lists and removes files.
    pub fn collect_artifacts(&self) {
        let used: std::collections::HashSet<Digest> = self
            .table()
            .functions()
            .flat_map(|f| f.revisions())
            .map(|entry| entry.def().component)
            .collect();
        match self.runtime.collect_artifacts(&used) {
            Ok(collected) if collected.files == 0 => {}
            Ok(collected) => tracing::info!(
                files = collected.files,
                bytes = collected.bytes,
                "unused compiled artifacts removed from the cache"
            ),
            Err(error) => tracing::warn!(%error, "cannot collect the artifact cache"),
        }
    }

    /// Whether every revision of the table has compiled.
    pub fn all_compiled(&self) -> bool {
        self.table
            .load()
            .functions()
            .flat_map(|f| f.revisions())
            .all(|entry| matches!(entry.job().state(), JobState::Done(Ok(_))))
    }

    /// How many functions have a revision warm now.
    pub fn warm_functions(&self) -> usize {
        self.table
            .load()
            .functions()
            .filter(|f| f.revisions().iter().any(|entry| entry.is_warm()))
            .count()
    }

    /// The gauges the metrics show, read now.
    pub fn gauges(&self) -> Gauges {
        let table = self.table.load();
        let mut states = LifeState::ALL.map(|state| (state.label(), 0));
        let mut functions = Vec::new();
        let mut guest_output_dropped = Vec::new();
        for function in table.functions() {
            for entry in function.revisions() {
                let state = entry.state();
                states[state as usize].1 += 1;
                // Gauges are shown for the revisions that are warm or have
                // requests: a host of many functions, most at rest, shows
                // a few.
                if !entry.has_metrics() {
                    continue;
                }
                let (in_flight, waiting) = (entry.in_flight(), entry.gate().waiting() as u64);
                if state == LifeState::Warm || in_flight > 0 || waiting > 0 {
                    functions.push(FunctionGauges {
                        name: entry.name().to_string(),
                        revision: entry.revision_label().to_owned(),
                        in_flight,
                        waiting,
                    });
                }
            }
            let dropped = function.primary().output().dropped();
            if dropped > 0 {
                guest_output_dropped.push((function.name().to_string(), dropped));
            }
        }
        let budget = self.runtime.memory_budget();
        Gauges {
            generation: table.generation(),
            functions,
            guest_output_dropped,
            states: states.to_vec(),
            memory_budget: budget.limit(),
            memory_in_use: budget.used(),
            kept_code: self.runtime.kept_code(),
            ready_instances: self.runtime.ready_instances() as u64,
            idle_instances: self.runtime.idle_instances() as u64,
            log_lines_dropped: crate::telemetry::logs::dropped_lines(),
            host_waiting: self.gate.waiting() as u64,
        }
    }

    fn clock(&self) -> &Clock {
        &self.clock
    }
}

/// What [`Registry::plan`] returns.
type PlannedTable = (
    Option<Table<Function>>,
    Applied,
    Vec<(Arc<FunctionEntry>, bool)>,
);

/// Reads the component of every declaration (each file once), on a
/// blocking thread.
async fn read_sources(
    functions: Vec<Arc<FunctionDecl>>,
) -> Result<Vec<ComponentSource>, FunctionError> {
    tokio::task::spawn_blocking(move || {
        let mut read: HashMap<&Path, ComponentSource> = HashMap::new();
        functions
            .iter()
            .map(|decl| {
                if let Some(source) = read.get(decl.component.as_path()) {
                    return Ok(source.clone());
                }
                let source =
                    ComponentSource::read(&decl.component).map_err(|error| FunctionError {
                        function: decl.name.to_string(),
                        error: Arc::new(error),
                    })?;
                read.insert(&decl.component, source.clone());
                Ok(source)
            })
            .collect()
    })
    .await
    .expect("reading components does not panic")
}
