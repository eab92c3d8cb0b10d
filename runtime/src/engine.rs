//! The one wasmtime [`Engine`] of the process and the [`Linker`] every
//! function is linked against.
//!
//! Instances come from wasmtime's pooling allocator: every slot (linear
//! memory, table, stack, instance data) is reserved once at start-up, and a
//! request's instance takes a slot and gives it back when it is dropped.
//! Linear memories are initialised copy-on-write from the component's
//! memory image, so instantiation maps pages instead of copying data.
//!
//! The pool reserves virtual address space for every slot up front. Where the
//! process may not reserve that much (a small `ulimit -v`, a 39-bit address
//! space), creating the pooled engine fails; the runtime then falls back to
//! on-demand allocation and says so in the log.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use std::sync::Arc;

use crate::artifact::{Artifact, Kept};
use crate::cache::{ArtifactCache, Collected, UNUSED_ARTIFACT_GRACE};
use crate::error::{LoadError, RuntimeError};
use crate::function::{Function, FunctionSpec};
use crate::kept::KeptCode;
use crate::limits::{EpochHandle, EpochTicker, MemoryBudget};
use crate::outbound::{OutboundClient, OwnHost};
use crate::ready::DEFAULT_READY_INSTANCES;
use crate::reuse::IDLE_INSTANCES;
use crate::source::{ComponentSource, Digest};
use crate::store::StoreState;
use crate::swap;
use crate::waiting::WaitingInstances;

/// How many instances may be alive at once across all functions, by default.
pub const DEFAULT_MAX_INSTANCES: u32 = 1_000;

/// The smallest instance pool worth having; where not even this fits in the
/// address space, instances are allocated on demand.
const MIN_POOLED_INSTANCES: u32 = 16;

/// Core instances (a component's modules, adapters included) per component
/// instance the pool is sized for, on average.
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;

/// Linear memories per component instance the pool is sized for, on average.
const MEMORIES_PER_COMPONENT: u32 = 2;

/// Largest table a pooled instance may have, in elements. Language runtimes
/// (SpiderMonkey, CPython) have tables of tens of thousands of functions.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Largest instance metadata (`VMContext`) a core module may need.
const MAX_CORE_INSTANCE_SIZE: usize = 4 << 20;

/// Where the kernel has `PAGEMAP_SCAN` (Linux 6.7+) and no page of the
/// process can be swapped out (see [`swap`]), the pages an instance
/// dirtied are restored in place when it is dropped, up to this many bytes
/// per linear memory, instead of being unmapped with `madvise`: no system
/// call to unmap, no TLB shootdown, and no page faults for the next instance
/// in the slot. This halves the cost of a fresh-instance request. The price
/// is that a used slot keeps the pages its instances touched (at most this
/// much) resident while it waits for its next instance.
const MEMORY_KEEP_RESIDENT: usize = 4 << 20;

/// The same, for tables.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Settings the runtime is created with.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled (AOT) artifacts are cached.
    pub cache_dir: PathBuf,
    /// A read-only folder of artifacts compiled ahead of time (by
    /// [`Precompiler`](crate::Precompiler)), looked in when the cache has
    /// none; never written.
    pub precompiled_dir: Option<PathBuf>,
    /// The most instances alive at once, across all functions.
    pub max_instances: u32,
    /// Bytes of linear memory all instances may hold together.
    pub memory_budget: u64,
    /// The CPU components are compiled for.
    pub cpu: TargetCpu,
    /// Bytes of compiled code kept mapped once no warm function holds it
    /// (the functions scaled to zero most recently), so that their next
    /// cold start skips loading it; 0 unmaps code at once.
    pub keep_code: u64,
    /// Fresh instances made ahead of their request at most, across all
    /// functions (at most a quarter of `max_instances`); 0 makes none.
    pub ready_instances: u32,
    /// Whether a pooled memory may be reset by restoring only the pages
    /// its instance wrote ([`MemoryReset::DirtyPages`]), where the kernel
    /// can find them and no page of this process can be swapped out;
    /// `false` releases it whole after each instance.
    pub dirty_page_reset: bool,
}

/// The compiled code kept mapped by default: 128 MiB.
pub const DEFAULT_KEEP_CODE: u64 = 128 << 20;

/// The CPU components are compiled for. Artifacts are keyed by it: a host
/// uses only artifacts compiled for the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TargetCpu {
    /// This machine's CPU, with every feature wasmtime detects on it.
    #[default]
    Native,
    /// A baseline every CPU of this architecture has: x86-64-v2 (SSE4.2,
    /// POPCNT, no AVX) on x86-64, the base architecture elsewhere. Code may
    /// be a little slower, but artifacts compiled for it serve on any node.
    Portable,
}

/// Features of x86-64-v2 that Cranelift uses, beyond the base x86-64
/// (SSE2).
const X86_64_V2: [&str; 5] = [
    "has_sse3",
    "has_ssse3",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
];

impl RuntimeConfig {
    /// A configuration with every default, caching artifacts in `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            precompiled_dir: None,
            max_instances: DEFAULT_MAX_INSTANCES,
            memory_budget: u64::MAX,
            cpu: TargetCpu::Native,
            keep_code: DEFAULT_KEEP_CODE,
            ready_instances: DEFAULT_READY_INSTANCES,
            dirty_page_reset: true,
        }
    }
}

/// How instances get their memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Pre-reserved slots with copy-on-write memory images.
    Pooling {
        /// Instance slots in the pool for requests.
        instances: u32,
        /// Slots beyond those, for instances made ahead of their request.
        ready: u32,
        /// And for idle instances of functions that reuse them.
        idle: u32,
        /// How a slot's memory is made pristine for its next instance.
        reset: MemoryReset,
    },
    /// `mmap` per instance; used where the pool cannot be reserved.
    OnDemand,
}

/// How a pooled linear memory is made pristine for its next instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryReset {
    /// The pages the last instance wrote, found with `PAGEMAP_SCAN` and
    /// restored in place, up to the bytes kept resident; the rest released.
    DirtyPages,
    /// Released whole (`madvise`): the next instance faults in the pages it
    /// touches. Why not [`MemoryReset::DirtyPages`]:
    Released(WhyReleased),
}

/// Why pooled memory is released whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhyReleased {
    /// The kernel has no `PAGEMAP_SCAN` (before Linux 6.7).
    NoPagemapScan,
    /// This process's memory may be swapped out, and the dirty-page reset
    /// would leave a swapped page as the last instance wrote it.
    Swap,
    /// [`RuntimeConfig::dirty_page_reset`] is off.
    Configured,
}

impl fmt::Display for MemoryReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DirtyPages => "dirty pages, in place (PAGEMAP_SCAN)",
            Self::Released(WhyReleased::NoPagemapScan) => {
                "released whole (madvise): the kernel has no PAGEMAP_SCAN"
            }
            Self::Released(WhyReleased::Swap) => {
                "released whole (madvise): this process's memory may be swapped out"
            }
            Self::Released(WhyReleased::Configured) => "released whole (madvise), as configured",
        })
    }
}

/// How pooled memory is reset under `config`, on this machine.
fn memory_reset(config: &RuntimeConfig) -> MemoryReset {
    if !config.dirty_page_reset {
        return MemoryReset::Released(WhyReleased::Configured);
    }
    if !PoolingAllocationConfig::is_pagemap_scan_available() {
        return MemoryReset::Released(WhyReleased::NoPagemapScan);
    }
    match swap::may_swap() {
        None => MemoryReset::DirtyPages,
        Some(why) => {
            tracing::warn!(
                why,
                "instance memory is released whole after each instance, not restored in place: \
                 a swapped-out page would otherwise keep what the last instance wrote"
            );
            MemoryReset::Released(WhyReleased::Swap)
        }
    }
}

/// The engine, the linker and the artifact cache: everything shared by all
/// functions of the process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StoreState>,
    cache: ArtifactCache,
    kept: Arc<Kept>,
    allocation: Allocation,
    outbound: OutboundClient,
    budget: Arc<MemoryBudget>,
    ready: Arc<WaitingInstances>,
    idle: Arc<WaitingInstances>,
    epoch: EpochTicker,
}

impl Runtime {
    /// Creates the engine (pooled if the machine allows it), links all of
    /// WASI 0.2 plus `wasi:http`, and opens the artifact cache.
    pub fn new(config: &RuntimeConfig) -> Result<Self, RuntimeError> {
        let (engine, allocation) = match pooled_engine(config)? {
            Some(pooled) => pooled,
            None => {
                let on_demand = engine_config(None, config.cpu).map_err(RuntimeError::Engine)?;
                let engine = Engine::new(&on_demand).map_err(RuntimeError::Engine)?;
                (engine, Allocation::OnDemand)
            }
        };
        let (ready, idle) = match allocation {
            Allocation::Pooling { ready, idle, .. } => (ready, idle),
            Allocation::OnDemand => waiting_instances(config, config.max_instances),
        };
        let budget = Arc::new(MemoryBudget::new(config.memory_budget));
        let linker = linker(&engine).map_err(RuntimeError::Engine)?;
        let cache = ArtifactCache::open(
            &config.cache_dir,
            config.precompiled_dir.as_deref(),
            &engine,
        )
        .map_err(|source| RuntimeError::Cache {
            path: config.cache_dir.clone(),
            source,
        })?;
        Ok(Self {
            epoch: EpochTicker::start(&engine),
            engine,
            linker,
            cache,
            kept: Arc::new(KeptCode::new(config.keep_code)),
            allocation,
            outbound: OutboundClient::new(),
            ready: Arc::new(WaitingInstances::new(ready, budget.clone())),
            idle: Arc::new(WaitingInstances::new(idle, budget.clone())),
            budget,
        })
    }

    /// What keeps the epoch advancing while guests run.
    pub(crate) fn epoch(&self) -> EpochHandle {
        self.epoch.handle()
    }

    /// The count of instances made ahead of their request.
    pub(crate) fn ready(&self) -> &Arc<WaitingInstances> {
        &self.ready
    }

    /// The count of idle instances of functions that reuse them.
    pub(crate) fn idle(&self) -> &Arc<WaitingInstances> {
        &self.idle
    }

    /// Instances made ahead of their request, now.
    pub fn ready_instances(&self) -> usize {
        self.ready.count()
    }

    /// Idle instances of functions that reuse them, now.
    pub fn idle_instances(&self) -> usize {
        self.idle.count()
    }

    /// The memory all instances draw from.
    pub fn memory_budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// How instances get their memory.
    pub fn allocation(&self) -> Allocation {
        self.allocation
    }

    /// How many instances may be alive at once: the pool's size, or, on
    /// demand, `configured`.
    pub fn max_instances(&self, configured: u32) -> u32 {
        match self.allocation {
            Allocation::Pooling { instances, .. } => instances,
            Allocation::OnDemand => configured,
        }
    }

    /// Removes the cached artifacts that no function of this host uses
    /// (`used` are the components of those that it serves) and no host
    /// sharing the cache folder has used for [`UNUSED_ARTIFACT_GRACE`].
    /// Lists and removes files: run it off the request path.
    pub fn collect_artifacts(&self, used: &HashSet<Digest>) -> std::io::Result<Collected> {
        self.cache.collect(used, UNUSED_ARTIFACT_GRACE)
    }

    /// Compiles the component of `source`, or finds its artifact in the
    /// cache, and checks that it links and serves HTTP. CPU-heavy on a
    /// cache miss: run it off the request path.
    pub fn compile(&self, source: &ComponentSource) -> Result<Arc<Artifact>, LoadError> {
        Artifact::compile(&self.engine, &self.linker, &self.cache, &self.kept, source).map(Arc::new)
    }

    /// Warms a function of `artifact`: maps the artifact and links it
    /// (pre-instantiates it), unless another warm function of the same
    /// component holds it linked already or it was kept since its functions
    /// scaled to zero. This is the work of a cold start.
    pub fn warm(
        &self,
        artifact: &Arc<Artifact>,
        spec: FunctionSpec,
    ) -> Result<Function, LoadError> {
        Function::warm(self, artifact, spec)
    }

    /// Bytes of compiled code kept mapped that no warm function holds.
    pub fn kept_code(&self) -> u64 {
        self.kept.size().1
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self) -> &Linker<StoreState> {
        &self.linker
    }

    pub(crate) fn outbound_client(&self) -> &OutboundClient {
        &self.outbound
    }

    /// Makes `http://self`, in the functions' outbound calls, reach `host`
    /// in process: the host listening on `address`. The first call wins.
    pub fn serve_own_calls(&self, address: std::net::SocketAddr, host: Arc<dyn OwnHost>) {
        self.outbound.set_own_host(address, host);
    }
}

/// An engine with the largest instance pool the address space holds, from
/// the configured size down by halves to [`MIN_POOLED_INSTANCES`], with the
/// slots for instances made ahead beyond it if they fit too; `None` if not
/// even the smallest pool fits.
fn pooled_engine(config: &RuntimeConfig) -> Result<Option<(Engine, Allocation)>, RuntimeError> {
    let instances = config.max_instances;
    let sizes = std::iter::successors(Some(instances), |size| {
        (size / 2 >= MIN_POOLED_INSTANCES).then_some(size / 2)
    });
    // At each size, with the slots for waiting instances, then without.
    let pools = sizes.flat_map(|size| {
        let (ready, idle) = waiting_instances(config, size);
        [(size, ready, idle), (size, 0, 0)]
            .into_iter()
            .take(if ready + idle > 0 { 2 } else { 1 })
    });
    let reset = memory_reset(config);
    let mut failed = None;
    for (size, ready, idle) in pools {
        let slots = size + ready + idle;
        let pool = Pool {
            instances: slots,
            dirty_pages_resident: (reset == MemoryReset::DirtyPages)
                .then(|| keep_resident(config.memory_budget, slots)),
        };
        let settings = engine_config(Some(pool), config.cpu).map_err(RuntimeError::Engine)?;
        match Engine::new(&settings) {
            Ok(engine) => {
                if size < instances {
                    tracing::warn!(
                        configured = instances,
                        pooled = size,
                        "the instance pool was sized down to fit the address space"
                    );
                }
                return Ok(Some((
                    engine,
                    Allocation::Pooling {
                        instances: size,
                        ready,
                        idle,
                        reset,
                    },
                )));
            }
            Err(error) => {
                tracing::debug!(
                    size,
                    ready,
                    idle,
                    error = format!("{error:#}"),
                    "the instance pool does not fit"
                );
                failed = Some(error);
            }
        }
    }
    tracing::warn!(
        error = failed.map(|error| format!("{error:#}")),
        "the instance pool cannot be reserved here; allocating instances on demand"
    );
    Ok(None)
}

/// The instances that may wait for a request at most, for `instances` of
/// requests: made ahead (as configured) and idle, each up to a quarter of
/// them; one idle instance at least, so that instance reuse works with any
/// instance cap.
fn waiting_instances(config: &RuntimeConfig, instances: u32) -> (u32, u32) {
    (
        config.ready_instances.min(instances / 4),
        IDLE_INSTANCES.min(instances / 4).max(1),
    )
}

/// The size of the instance pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pool {
    instances: u32,
    /// With the dirty-page reset ([`MemoryReset::DirtyPages`]), the bytes
    /// of each linear memory kept resident between instances; `None`
    /// releases memory whole.
    dirty_pages_resident: Option<usize>,
}

/// The bytes each pooled linear memory keeps resident between instances:
/// [`MEMORY_KEEP_RESIDENT`], unless a quarter of the memory budget cannot
/// hold that much for every slot (pages kept this way are resident, but
/// held by no instance, so the budget does not see them).
fn keep_resident(budget: u64, instances: u32) -> usize {
    const PAGE: u64 = 4096;
    let share = budget / 4 / u64::from(instances.max(1)) / PAGE * PAGE;
    usize::try_from(share).map_or(MEMORY_KEEP_RESIDENT, |share| {
        share.min(MEMORY_KEEP_RESIDENT)
    })
}

/// The engine configuration; `pool` sizes the pooling allocator, `None`
/// allocates on demand. Compiled artifacts depend on this configuration, and
/// the cache keys them by it (the pool's size does not change them: see the
/// test below).
pub(crate) fn engine_config(pool: Option<Pool>, cpu: TargetCpu) -> wasmtime::Result<Config> {
    let mut config = Config::new();
    if cpu == TargetCpu::Portable {
        // Naming the target, even this machine's, turns off the detection
        // of its CPU's features; the baseline's are then enabled by name.
        config.target(&target_lexicon::HOST.to_string())?;
        if cfg!(target_arch = "x86_64") {
            for flag in X86_64_V2 {
                // SAFETY: wasmtime checks that this CPU has every feature
                // enabled here before it runs code compiled with it (and
                // refuses an artifact needing one it lacks when loading it).
                #[allow(unsafe_code)]
                unsafe {
                    config.cranelift_flag_enable(flag);
                }
            }
        }
    }
    config.wasm_component_model(true);
    config.memory_init_cow(true);
    // Components serve through the WASIp2 path; the concurrent (WASIp3)
    // machinery would only add per-store work.
    config.concurrency_support(false);
    // Deadlines and fair sharing of threads (see `limits`).
    config.epoch_interruption(true);
    if let Some(Pool {
        instances,
        dirty_pages_resident,
    }) = pool
    {
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(instances)
            .total_core_instances(instances * CORE_INSTANCES_PER_COMPONENT)
            .total_memories(instances * MEMORIES_PER_COMPONENT)
            .total_tables(instances * MEMORIES_PER_COMPONENT)
            .total_stacks(instances)
            .table_elements(MAX_TABLE_ELEMENTS)
            .max_core_instance_size(MAX_CORE_INSTANCE_SIZE);
        if let Some(keep_resident) = dirty_pages_resident {
            pooling
                .pagemap_scan(Enabled::Yes)
                .linear_memory_keep_resident(keep_resident)
                .table_keep_resident(TABLE_KEEP_RESIDENT);
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    }
    Ok(config)
}

/// All of WASI 0.2 (toolchains import wasi:cli, wasi:filesystem and
/// wasi:sockets beyond the proxy world) plus `wasi:http`. What the guest may
/// actually reach is decided per store: no preopened directories, no
/// network addresses, only the declared environment.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::engine_key;

    #[test]
    fn pooled_and_on_demand_engines_share_artifacts() {
        // Precompiled artifacts come from an on-demand engine; a host with
        // a pool of any size must find them under its own key.
        let pool = Pool {
            instances: MIN_POOLED_INSTANCES,
            dirty_pages_resident: Some(MEMORY_KEEP_RESIDENT),
        };
        let key = |pool, cpu| engine_key(&Engine::new(&engine_config(pool, cpu).unwrap()).unwrap());
        for cpu in [TargetCpu::Native, TargetCpu::Portable] {
            assert_eq!(key(None, cpu), key(Some(pool), cpu), "{cpu:?}");
        }
    }

    #[test]
    fn a_portable_engine_is_made_here_and_has_a_key_of_its_own() {
        let config = RuntimeConfig {
            cpu: TargetCpu::Portable,
            ..RuntimeConfig::new(tempfile::tempdir().unwrap().path())
        };
        let portable = Runtime::new(&config).unwrap();
        let native = Engine::new(&engine_config(None, TargetCpu::Native).unwrap()).unwrap();
        // This CPU has features beyond x86-64-v2 (AVX at least) on the
        // machines the tests run on.
        assert_ne!(engine_key(&portable.engine), engine_key(&native));
    }
}
