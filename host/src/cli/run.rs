//! `host run`: serve a manifest's functions, or one bare component.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shoal_runtime::{Allocation, MemoryReset, Runtime, RuntimeConfig};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::admin::{self, Admin, MetricsOnly, Token};
use crate::admission::GateLimits;
use crate::build::{self, SourceWatcher};
use crate::deploy::Deployments;
use crate::deploy::state::DEFAULT_KEEP_REVISIONS;
use crate::dispatch::{Functions, OwnCalls};
use crate::events;
use crate::manifest::{FunctionDecl, FunctionName, Manifest};
use crate::registry::entry::FunctionError;
use crate::registry::{ChangeError, Desired, Publish, Registry};
use crate::router::RoutePattern;
use crate::server::{self, ConnectionLimits};
use crate::sizing;
use crate::telemetry::metrics::{ChangeOutcome, Metrics};
use crate::watch::FileWatcher;

/// The port listened on when neither `--listen` nor `PORT` says otherwise.
pub const DEFAULT_PORT: u16 = 8080;

/// How long in-flight requests may take to finish after SIGTERM, by default.
pub const DEFAULT_DRAIN_TIMEOUT: &str = "30s";

/// Serve the functions of a manifest, or one component at every path.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A manifest (`.toml`), or a component (`.wasm`) to serve at every path.
    target: PathBuf,

    /// Address to listen on. Defaults to `0.0.0.0:$PORT`, with `PORT`
    /// (set by Knative) defaulting to 8080. `127.0.0.1:0` picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Address of the admin API (`GET /v1/functions`). Never the public
    /// port, nor a port Knative (8008, 8012, 8013, 8022, 8112, 9090, 9091)
    /// or Istio (15000-15090) uses in a pod.
    #[arg(long, value_name = "ADDR", default_value = admin::DEFAULT_ADMIN_ADDR)]
    admin_listen: SocketAddr,

    /// Also serve `/metrics`, and nothing else, without a token on this
    /// address: for the cluster's Prometheus while the admin API stays on
    /// loopback (e.g. `0.0.0.0:9465`).
    #[arg(long, env = "SHOAL_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    /// Folder for the host's files (the compiled-artifact cache, deployed
    /// functions). Defaults to `$XDG_CACHE_HOME/shoal`, else
    /// `$HOME/.cache/shoal`, else (no home, or one that cannot be written,
    /// as under a read-only root) `$TMPDIR/shoal-UID`.
    #[arg(long, env = "SHOAL_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// A read-only folder of compiled artifacts (`host package` writes one
    /// into the image, at `/shoal/artifacts`), used when the data dir's
    /// cache has none; never written. An artifact compiled there for other
    /// CPU features or engine settings is logged and compiled again here.
    #[arg(long, env = "SHOAL_PRECOMPILED", value_name = "DIR")]
    precompiled: Option<PathBuf>,

    /// The CPU components are compiled for: `native` (every feature of
    /// this one) or `portable` (x86-64-v2, so that artifacts precompiled
    /// for it on another machine are used here).
    #[arg(long, env = "SHOAL_CPU", value_enum, default_value = "native")]
    cpu: super::package::Cpu,

    /// Where CloudEvents are delivered, for the functions that declare
    /// `events`: an exact path, which events take from the routes while any
    /// function has triggers.
    #[arg(long, env = "SHOAL_EVENTS_PATH", value_name = "PATH",
          default_value = events::DEFAULT_EVENTS_PATH, value_parser = events_path)]
    events_path: String,

    /// Take batches of events (`application/cloudevents-batch+json`): each
    /// event goes to its function in turn, and the first that is not
    /// accepted ends the batch with its answer. Off: batches are refused
    /// with 415.
    #[arg(long)]
    events_batch: bool,

    /// How long a function stays warm without requests before it scales to
    /// zero, unless its manifest sets `idle_timeout`.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = positive_duration)]
    idle_timeout: Duration,

    /// Instances alive at once for requests, across all functions (the
    /// size of the instance pool, beyond the slots of `--ready-instances`).
    /// Fewer if the memory budget could not hold them at
    /// 1 MiB each, or if the address space cannot hold the pool.
    #[arg(long, value_name = "N", default_value_t = sizing::DEFAULT_MAX_INSTANCES,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_instances: u32,

    /// Linear memory all instances may hold together; past it, a guest's
    /// memory cannot grow (its request ends 500). Defaults to the
    /// container's memory limit less a quarter kept for the host (at least
    /// 64MiB), else half of the machine's memory.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory_budget)]
    memory_budget: Option<u64>,

    /// How a pooled instance's memory is made pristine for the next one:
    /// `auto` restores only the pages it wrote, in place, where the kernel
    /// can find them (`PAGEMAP_SCAN`) and no page of this process can be
    /// swapped out (no swap, or a cgroup v2 `memory.swap.max` of 0), and
    /// otherwise releases it whole (with `auto`, a host restoring in place
    /// stops if swap is turned on later); `release` always releases it
    /// whole (slower), for a machine where swap may come and go.
    #[arg(long, env = "SHOAL_MEMORY_RESET", value_enum, default_value = "auto")]
    memory_reset: MemoryResetArg,

    /// Compiled code kept mapped for functions that scaled to zero, the
    /// most recent first: their next cold start skips loading it from the
    /// artifact cache. Only code is kept, never an instance; `0` unmaps a
    /// function's code when it scales to zero.
    #[arg(long, value_name = "SIZE", env = "SHOAL_KEEP_CODE", default_value = "128MiB",
          value_parser = parse_any_size)]
    keep_code: u64,

    /// Fresh instances made ahead of their request, at most, across all
    /// functions: once a function that does not reuse instances has
    /// answered, its next instance is made after the answer is written, so
    /// that the next request does not wait for it. Each function keeps one
    /// at most; at most a quarter of `--max-instances`, in slots of the pool
    /// beyond those; none while the memory budget is more than half used.
    /// `0` makes every instance when its request comes.
    #[arg(long, value_name = "N", env = "SHOAL_READY_INSTANCES",
          default_value_t = shoal_runtime::DEFAULT_READY_INSTANCES)]
    ready_instances: u32,

    /// Open connections at most on the public port; past it, new ones wait
    /// until one closes. Also bounded by the file descriptor limit.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,

    /// How long a client may take to send a request's headers before it is
    /// disconnected, and how long a connection may stay without a request
    /// (HTTP/2 peers are also PINGed this often, and closed if silent).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    header_read_timeout: Duration,

    /// How long a client may take nothing of a response it is sent before
    /// it is disconnected (its response, guest and places are let go). A
    /// slow reader that keeps taking bytes is served to the end.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    send_timeout: Duration,

    /// The largest request head (HTTP/1.1) or header list (HTTP/2), from
    /// 8KiB to 1MiB; a larger one is answered 431.
    #[arg(long, value_name = "SIZE", default_value = "64KiB", value_parser = parse_header_size)]
    max_header_size: usize,

    /// After SIGTERM or SIGINT, how long requests in flight may take to
    /// finish before the host exits anyway. A second signal exits at once.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_DRAIN_TIMEOUT, value_parser = humantime::parse_duration)]
    drain_timeout: Duration,

    /// Watch the manifest and every component it names, and apply changes
    /// while serving (SIGHUP reloads the manifest too, with or without it).
    /// With `--build`, a change to a function's sources (its `build.watch`
    /// globs) rebuilds that function, and the new component is applied.
    #[arg(long)]
    watch: bool,

    /// Run every function's `build` command first (in manifest order), and
    /// stop with the command's output if one fails.
    #[arg(long)]
    build: bool,

    /// A file holding the admin API's bearer token (at least 16
    /// characters). Without it (or `SHOAL_ADMIN_TOKEN`), the write API is
    /// off and the admin listener must stay on loopback; with it, every
    /// `/v1/` call needs the token.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,

    /// The largest component upload.
    #[arg(long, value_name = "SIZE", default_value = "100MiB", value_parser = parse_size)]
    max_upload: u64,

    /// Revisions kept per deployed function: older ones that carry no
    /// traffic are removed at the function's next change, with their
    /// components.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEEP_REVISIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    keep_revisions: usize,
}

/// What `serve` starts from.
struct Start {
    manifest: Manifest,
    listen: SocketAddr,
    host_gate: GateLimits,
    started: Instant,
    data_dir: PathBuf,
    token: Option<Token>,
}

/// Why the host stops.
#[derive(Debug, Clone)]
enum Stop {
    /// SIGTERM or SIGINT.
    Signal,
    /// A second SIGTERM or SIGINT: requests in flight are cut.
    Forced,
    /// A component was refused while the host started.
    Refused(FunctionError),
    /// Swap was turned on (why it may now be used) while memory is reset
    /// in place, which a swapped-out page defeats.
    Swap(String),
}

/// How often a host that restores instance memory in place looks whether
/// swap was turned on since it started.
const SWAP_CHECK_INTERVAL: Duration = Duration::from_secs(2);

impl RunArgs {
    /// Registers every function, listens, and serves until SIGTERM or
    /// SIGINT; fails if a component is refused.
    pub fn execute(self) -> anyhow::Result<()> {
        let started = Instant::now();
        let manifest = load_target(&self.target)?;
        if self.build {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(async {
                    let mut terminate = signal(SignalKind::terminate())?;
                    tokio::select! {
                        built = build::build_all(&manifest.functions) => Ok(built?),
                        _ = terminate.recv() => bail!("stopped (SIGTERM) while building"),
                        _ = tokio::signal::ctrl_c() => bail!("stopped (SIGINT) while building"),
                    }
                })?;
        }
        let listen = match self.listen {
            Some(addr) => addr,
            None => default_listen_addr()?,
        };
        let mut listeners = vec![
            ("the public listener", listen),
            ("--admin-listen", self.admin_listen),
        ];
        listeners.extend(self.metrics_listen.map(|addr| ("--metrics-listen", addr)));
        check_listeners(&listeners)?;
        let token = self.admin_token()?;
        if token.is_none() && !self.admin_listen.ip().is_loopback() {
            bail!(
                "--admin-listen {} is beyond loopback: set --admin-token-file (or \
                 SHOAL_ADMIN_TOKEN) so that the admin API needs a token",
                self.admin_listen
            );
        }
        let data_dir = match self.data_dir.clone() {
            Some(dir) => dir,
            None => default_data_dir()?,
        };
        let container_memory = sizing::container_memory_limit();
        let memory_budget = sizing::memory_budget(
            self.memory_budget,
            container_memory,
            sizing::physical_memory(),
        );
        let max_instances = sizing::max_instances(self.max_instances, memory_budget);
        if max_instances < self.max_instances {
            tracing::info!(
                configured = self.max_instances,
                max_instances,
                memory_budget,
                "the memory budget sizes the instance cap down"
            );
        }
        let mut config = RuntimeConfig::new(data_dir.join("artifacts"));
        config.precompiled_dir = self.precompiled.clone();
        config.cpu = self.cpu.into();
        config.max_instances = max_instances;
        config.memory_budget = memory_budget;
        config.keep_code = self.keep_code;
        config.ready_instances = self.ready_instances;
        config.dirty_page_reset = self.memory_reset == MemoryResetArg::Auto;
        let runtime = Arc::new(Runtime::new(&config)?);
        match runtime.allocation() {
            Allocation::Pooling {
                instances,
                ready,
                idle,
                reset,
            } => tracing::info!(
                instances,
                ready_instances = ready,
                idle_instances = idle,
                memory_budget,
                memory_reset = %reset,
                "instances come from the pooling allocator, with copy-on-write memory images"
            ),
            Allocation::OnDemand => {
                tracing::info!(memory_budget, "instances are allocated on demand");
            }
        }

        shoal_runtime::send_answers_with(crate::outbox::send_held);
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .on_thread_park(crate::outbox::before_park)
            .build()
            .context("cannot start the async runtime")?;
        // Requests run at once across the host: no more than instances.
        let host_gate = GateLimits {
            max_concurrency: runtime.max_instances(max_instances),
            ..GateLimits::default()
        };
        let stop = tokio.block_on(self.serve(
            runtime,
            Start {
                manifest,
                listen,
                host_gate,
                started,
                data_dir,
                token,
            },
        ));
        // Guest tasks still running past the drain timeout are abandoned.
        tokio.shutdown_background();
        match stop? {
            Stop::Signal => Ok(()),
            Stop::Forced => bail!("stopped by a second signal; requests in flight were cut"),
            Stop::Refused(error) => Err(error.into()),
            Stop::Swap(why) => bail!(
                "stopped: swap was turned on ({why}) while instance memory is restored in \
                 place, which a swapped-out page defeats; start the host again (it then releases \
                 memory whole) or run it with --memory-reset release"
            ),
        }
    }

    async fn serve(&self, runtime: Arc<Runtime>, start: Start) -> anyhow::Result<Stop> {
        let Start {
            manifest,
            listen,
            host_gate,
            started,
            data_dir,
            token,
        } = start;
        let metrics = Arc::new(Metrics::new());
        let registry = Registry::new(
            runtime.clone(),
            metrics.clone(),
            host_gate,
            self.idle_timeout,
            &self.events_path,
        );
        let background = registry.start();
        let deployments = Arc::new(
            Deployments::open(
                &data_dir,
                registry.clone(),
                self.keep_revisions,
                self.max_upload,
            )
            .with_context(|| format!("cannot open the deployed state in {}", data_dir.display()))?,
        );
        let deployed = deployments.desired()?;
        registry
            .change(
                Publish::Now,
                |sources| {
                    sources.manifest = Desired::from_manifest(&manifest.functions).into();
                    sources.deployed = deployed;
                    Ok::<_, ChangeError>(())
                },
                |()| Ok(()),
            )
            .await?;
        deployments.collect_blobs();
        if !deployments.owns() {
            let following = deployments.clone();
            tokio::spawn(async move { following.follow().await });
        }
        // Now that the first table names what this host serves.
        let collecting = registry.clone();
        tokio::task::spawn_blocking(move || collecting.collect_artifacts());
        let public_limits = ConnectionLimits {
            max_connections: public_connections(self.max_connections),
            header_read_timeout: self.header_read_timeout,
            send_timeout: self.send_timeout,
            max_header_size: self.max_header_size,
        };
        let admin_limits = ConnectionLimits {
            max_connections: server::ADMIN_MAX_CONNECTIONS,
            ..ConnectionLimits::default()
        };
        let public = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let admin = tokio::net::TcpListener::bind(self.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {} (--admin-listen)", self.admin_listen))?;
        let (public_addr, admin_addr) = (public.local_addr()?, admin.local_addr()?);
        let metrics_only = match self.metrics_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?,
            ),
            None => None,
        };

        let (stop_tx, stop_rx) = watch::channel(None);
        let stop_tx = Arc::new(stop_tx);
        // Installed before the listening line, so that a SIGTERM sent the
        // moment it is printed drains instead of killing the process.
        let mut signals = ShutdownSignals::install()?;
        let reloads = ReloadSignal::install()?;
        let (forced_tx, forced_rx) = watch::channel(false);
        tokio::spawn({
            let stop_tx = stop_tx.clone();
            async move {
                let signal = signals.next().await;
                tracing::info!("{signal} received");
                request_stop(&stop_tx, Stop::Signal);
                let signal = signals.next().await;
                tracing::warn!("{signal} received again; exiting at once");
                stop_tx.send_replace(Some(Stop::Forced));
                let _ = forced_tx.send(true);
            }
        });
        if let Allocation::Pooling {
            reset: MemoryReset::DirtyPages,
            ..
        } = runtime.allocation()
        {
            tokio::spawn(stop_if_swap_comes(stop_tx.clone()));
        }
        tokio::spawn({
            let (registry, stop_tx) = (registry.clone(), stop_tx.clone());
            async move {
                match registry.compiled().await {
                    Ok(()) => tracing::info!(
                        functions = registry.table().len(),
                        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                        "ready: every component is compiled"
                    ),
                    Err(error) => {
                        tracing::error!(%error, "a component was refused; stopping");
                        request_stop(&stop_tx, Stop::Refused(error));
                    }
                }
            }
        });
        let watcher = if self.watch {
            let mut watcher = FileWatcher::new().context("cannot watch files (--watch)")?;
            watcher.watch(watched_files(&self.target, &manifest));
            Some(watcher)
        } else {
            None
        };
        let sources = if self.watch && self.build {
            let mut sources =
                SourceWatcher::new().context("cannot watch the functions' sources (--watch)")?;
            sources.watch(&manifest.functions);
            Some(sources)
        } else {
            None
        };
        let reloader = tokio::spawn(keep_up_to_date(
            self.target.clone(),
            manifest.functions.clone(),
            registry.clone(),
            metrics.clone(),
            Watchers {
                files: watcher,
                sources,
            },
            reloads,
        ));
        let stopped = |mut rx: watch::Receiver<Option<Stop>>| async move {
            let _ = rx.wait_for(Option::is_some).await;
        };
        let drain_timeout = self.drain_timeout;
        let give_up = move |mut forced: watch::Receiver<bool>| async move {
            tokio::select! {
                () = tokio::time::sleep(drain_timeout) => tracing::warn!(
                    timeout_s = drain_timeout.as_secs_f64(),
                    "the drain timeout passed"
                ),
                _ = forced.wait_for(|forced| *forced) => {}
            }
        };

        tracing::info!(functions = registry.table().len(), %public_addr, %admin_addr, "serving");
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "admin on http://{admin_addr}")?;
        if let Some(listener) = &metrics_only {
            writeln!(
                stdout,
                "metrics on http://{}/metrics",
                listener.local_addr()?
            )?;
        }
        writeln!(stdout, "{}", server::listening_line(public_addr))?;
        stdout.flush()?;
        drop(stdout);

        // The public accept loop runs as a task of its own, on a worker
        // thread: a connection it accepts starts on that thread. Run by
        // `block_on`, it would accept on this thread and hand each new
        // connection over to a worker, one more thread woken per connection.
        let functions = Functions::new(registry.clone(), metrics.clone(), self.events_batch);
        // The functions' calls to `http://self` are served in process.
        runtime.serve_own_calls(public_addr, OwnCalls::new(&functions));
        let public = tokio::spawn(server::serve(
            functions,
            public,
            public_limits,
            stopped(stop_rx.clone()),
            give_up(forced_rx.clone()),
        ));
        tokio::join!(
            async {
                if let Err(error) = public.await {
                    std::panic::resume_unwind(error.into_panic());
                }
            },
            server::serve(
                Admin::new(registry.clone(), metrics.clone(), deployments, token),
                admin,
                admin_limits,
                stopped(stop_rx.clone()),
                give_up(forced_rx.clone()),
            ),
            async {
                if let Some(listener) = metrics_only {
                    server::serve(
                        MetricsOnly::new(registry, metrics),
                        listener,
                        admin_limits,
                        stopped(stop_rx.clone()),
                        give_up(forced_rx.clone()),
                    )
                    .await;
                }
            },
        );
        reloader.abort();
        background.stop();
        let stop = stop_rx.borrow().clone();
        Ok(stop.unwrap_or(Stop::Signal))
    }
}

/// What `--watch` watches: the manifest and the components (to reload),
/// and with `--build` the functions' sources (to rebuild).
struct Watchers {
    files: Option<FileWatcher>,
    sources: Option<SourceWatcher>,
}

/// Applies the manifest again on SIGHUP and, with `--watch`, whenever the
/// manifest or a component it names changes; with `--watch --build`,
/// rebuilds a function whose sources changed (its new component then
/// reloads it). A change that fails is logged and leaves the functions
/// serving as they were. `functions` are those of the manifest applied.
async fn keep_up_to_date(
    target: PathBuf,
    mut functions: Vec<Arc<FunctionDecl>>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    watchers: Watchers,
    mut sighup: ReloadSignal,
) {
    let Watchers {
        files: mut watcher,
        sources: mut source_watcher,
    } = watchers;
    let changes = watcher.as_ref().map(FileWatcher::changes);
    let source_changes = source_watcher.as_ref().map(SourceWatcher::changes);
    loop {
        let why = tokio::select! {
            () = sighup.recv() => "SIGHUP",
            () = async { changes.as_ref().expect("guarded").settled().await },
                if changes.is_some() => "a watched file changed",
            () = async { source_changes.as_ref().expect("guarded").settled().await },
                if source_changes.is_some() => {
                let changed = source_watcher.as_ref().expect("guarded").take_changed();
                build::rebuild(&functions, &changed).await;
                continue;
            }
        };
        let manifest = match load_target(&target) {
            Ok(manifest) => manifest,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "reload refused ({why}); the functions keep serving as they were");
                metrics.change(ChangeOutcome::Refused);
                continue;
            }
        };
        // Watched before it is applied: fixing a refused component
        // triggers the next reload.
        if let Some(watcher) = &mut watcher {
            watcher.watch(watched_files(&target, &manifest));
        }
        if let Some(sources) = &mut source_watcher {
            sources.watch(&manifest.functions);
        }
        functions.clone_from(&manifest.functions);
        match registry
            .apply_manifest(&manifest.functions, Publish::WhenCompiled)
            .await
        {
            Ok(applied) if applied.is_empty() => {
                tracing::info!("reloaded ({why}): nothing changed");
                metrics.change(ChangeOutcome::Unchanged);
            }
            Ok(applied) => {
                tracing::info!(
                    generation = applied.generation,
                    "reloaded ({why}): {applied}"
                );
                metrics.change(ChangeOutcome::Applied);
            }
            Err(error) => {
                tracing::error!(%error, "reload refused ({why}); the functions keep serving as they were");
                metrics.change(ChangeOutcome::Refused);
            }
        }
    }
}

/// The files whose change reloads `target`: the manifest, and every
/// component it names.
fn watched_files<'a>(target: &'a Path, manifest: &'a Manifest) -> impl Iterator<Item = &'a Path> {
    std::iter::once(target).chain(manifest.functions.iter().map(|f| f.component.as_path()))
}

/// The connections the public port may hold: `configured`, unless the file
/// descriptor limit leaves room for fewer (which is logged).
fn public_connections(configured: usize) -> usize {
    let budget = descriptor_budget();
    if budget < configured {
        tracing::warn!(
            max_connections = configured,
            descriptors = budget,
            "the file descriptor limit (ulimit -n) lowers --max-connections"
        );
    }
    configured.min(budget)
}

/// Stops the host once swap may be used: the in-place reset it started
/// with would leave a swapped-out page as the last instance wrote it.
async fn stop_if_swap_comes(stop_tx: Arc<watch::Sender<Option<Stop>>>) {
    loop {
        tokio::time::sleep(SWAP_CHECK_INTERVAL).await;
        // Files of /proc and /sys/fs/cgroup: read without waiting on a disk.
        if let Some(why) = shoal_runtime::may_swap() {
            tracing::error!(
                why,
                "swap was turned on while instance memory is restored in place; stopping"
            );
            request_stop(&stop_tx, Stop::Swap(why));
            return;
        }
    }
}

/// `--memory-reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MemoryResetArg {
    /// Only the pages an instance wrote, in place, where that is safe.
    Auto,
    /// The whole memory, released after each instance.
    Release,
}

/// File descriptors left for the public port's connections: the soft
/// limit, less a reserve for the host's own files, listeners, outbound
/// calls and the admin port's connections.
fn descriptor_budget() -> usize {
    const RESERVED_DESCRIPTORS: u64 = 128 + server::ADMIN_MAX_CONNECTIONS as u64;
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit
        .current
        .map_or(usize::MAX, |n| {
            usize::try_from(n.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX)
        })
        .max(1)
}

fn parse_header_size(text: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize = text.parse()?;
    let size = usize::try_from(size.as_u64()).map_err(|e| e.to_string())?;
    let range = server::MIN_MAX_HEADER_SIZE..=server::MAX_MAX_HEADER_SIZE;
    if !range.contains(&size) {
        return Err(format!(
            "must be from {} to {} bytes",
            range.start(),
            range.end()
        ));
    }
    Ok(size)
}

impl RunArgs {
    /// The admin token, from `--admin-token-file` or `SHOAL_ADMIN_TOKEN`.
    fn admin_token(&self) -> anyhow::Result<Option<Token>> {
        let text = match &self.admin_token_file {
            Some(file) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --admin-token-file {}", file.display()))?,
            None => match std::env::var(ADMIN_TOKEN_VARIABLE) {
                Ok(text) => text,
                Err(_) => return Ok(None),
            },
        };
        Token::new(&text)
            .map(Some)
            .map_err(|why| anyhow::anyhow!("{why} (--admin-token-file or {ADMIN_TOKEN_VARIABLE})"))
    }
}

/// The variable that may hold the admin token.
pub const ADMIN_TOKEN_VARIABLE: &str = "SHOAL_ADMIN_TOKEN";

fn parse_size(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text.parse()?;
    if size.as_u64() == 0 {
        return Err("must be more than zero".to_owned());
    }
    Ok(size.as_u64())
}

fn parse_any_size(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text.parse()?;
    Ok(size.as_u64())
}

fn parse_memory_budget(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text.parse()?;
    if size.as_u64() < sizing::MIN_INSTANCE_MEMORY {
        return Err(format!(
            "must be at least {} bytes",
            sizing::MIN_INSTANCE_MEMORY
        ));
    }
    Ok(size.as_u64())
}

fn events_path(text: &str) -> Result<String, String> {
    match RoutePattern::try_from(text.to_owned())? {
        RoutePattern::Exact(path) => Ok(path),
        RoutePattern::Prefix(_) => Err("must be an exact path, not a wildcard".to_owned()),
    }
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be more than zero".to_owned()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(error.to_string()),
    }
}

/// Records the first reason to stop; later ones change nothing.
fn request_stop(stop: &watch::Sender<Option<Stop>>, reason: Stop) {
    stop.send_if_modified(|current| {
        let first = current.is_none();
        if first {
            *current = Some(reason);
        }
        first
    });
}

/// A manifest, or a bare component served at every path.
fn load_target(target: &Path) -> anyhow::Result<Manifest> {
    if target.extension().is_some_and(|ext| ext == "wasm") {
        let stem = target.file_stem().unwrap_or_default().to_string_lossy();
        return Ok(Manifest {
            functions: vec![Arc::new(FunctionDecl::new(
                FunctionName::from_stem(&stem),
                target.to_owned(),
                vec![RoutePattern::Prefix(String::new())],
            ))],
        });
    }
    Ok(Manifest::load(target)?)
}

fn default_listen_addr() -> anyhow::Result<SocketAddr> {
    let port = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .with_context(|| format!("PORT={port} is not a port number"))?,
        Err(_) => DEFAULT_PORT,
    };
    Ok(SocketAddr::from(([0, 0, 0, 0], port)))
}

/// The listeners' addresses: each port its own, none of the ports Knative
/// or Istio use in a pod.
fn check_listeners(listeners: &[(&str, SocketAddr)]) -> anyhow::Result<()> {
    for (i, (flag, addr)) in listeners.iter().enumerate() {
        if let Some(owner) = server::reserved_port(addr.port()) {
            bail!(
                "{flag} {addr}: port {} is used by {owner}; choose another",
                addr.port()
            );
        }
        let shared = listeners[..i]
            .iter()
            .find(|(_, other)| addr.port() != 0 && other.port() == addr.port());
        if let Some((other_flag, _)) = shared {
            bail!(
                "{flag} {addr} uses the port of {other_flag}; each listener needs a port of its own"
            );
        }
    }
    Ok(())
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HOME").filter(|dir| !dir.is_empty())?;
            Some(PathBuf::from(home).join(".cache"))
        })
        .map(|cache| cache.join("shoal"));
    match home {
        Some(dir) if writable(&dir) => Ok(dir),
        home => {
            let uid = rustix::process::getuid();
            let dir = std::env::temp_dir().join(format!("shoal-{}", uid.as_raw()));
            tracing::info!(
                home = home.as_deref().map(Path::display).map(tracing::field::display),
                data_dir = %dir.display(),
                "no writable home folder; the data dir is under the temporary folder"
            );
            private_dir(&dir, uid)?;
            Ok(dir)
        }
    }
}

/// Creates `dir` for this user alone, or checks that the one there is
/// theirs: in a shared temporary folder, another user could have made it.
fn private_dir(dir: &Path, uid: rustix::process::Uid) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(error).with_context(|| format!("cannot create {}", dir.display()));
        }
        _ => {}
    }
    let metadata =
        std::fs::symlink_metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if !metadata.is_dir() || metadata.uid() != uid.as_raw() {
        bail!(
            "{} is not a folder of this user's (uid {}); set --data-dir",
            dir.display(),
            uid.as_raw()
        );
    }
    Ok(())
}

/// Whether the host can create `dir` (if needed) and write in it.
fn writable(dir: &Path) -> bool {
    std::fs::create_dir_all(dir).is_ok() && tempfile::tempfile_in(dir).is_ok()
}

/// SIGTERM (Kubernetes stopping the pod) and SIGINT, caught from the
/// moment they are installed.
struct ShutdownSignals {
    term: Signal,
    int: Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    /// Completes on the next of them, naming it.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// SIGHUP: reload the manifest (a ConfigMap updated under Kubernetes).
struct ReloadSignal(Signal);

impl ReloadSignal {
    fn install() -> anyhow::Result<Self> {
        signal(SignalKind::hangup())
            .map(Self)
            .context("cannot listen for SIGHUP")
    }

    async fn recv(&mut self) {
        self.0.recv().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_listener_has_its_own_port_and_none_of_knatives_or_istios() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let check = |public: &str, admin: &str| {
            check_listeners(&[("public", addr(public)), ("--admin-listen", addr(admin))])
        };
        assert!(check("0.0.0.0:8080", "127.0.0.1:9464").is_ok());
        assert!(check("127.0.0.1:0", "127.0.0.1:0").is_ok());
        let shared = check("0.0.0.0:8080", "127.0.0.1:8080").unwrap_err();
        assert!(
            shared.to_string().contains("uses the port of public"),
            "{shared}"
        );
        for port in [
            8008, 8012, 8013, 8022, 8112, 9090, 9091, 15000, 15021, 15090,
        ] {
            let refused = check("0.0.0.0:8080", &format!("127.0.0.1:{port}")).unwrap_err();
            assert!(refused.to_string().contains("is used by"), "{refused}");
            assert!(check(&format!("0.0.0.0:{port}"), "127.0.0.1:9464").is_err());
        }
        assert!(check("0.0.0.0:14999", "127.0.0.1:15091").is_ok());
    }
}
