//! `host run`: serve a manifest's functions, or one bare component.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shoal_runtime::{Allocation, Runtime, RuntimeConfig};

use crate::manifest::{FunctionDecl, FunctionName, Manifest};
use crate::registry::Registry;
use crate::router::RoutePattern;
use crate::server::{self, Server};

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

    /// Folder for the host's files (the compiled-artifact cache). Defaults
    /// to `$XDG_CACHE_HOME/shoal`, else `$HOME/.cache/shoal`.
    #[arg(long, env = "SHOAL_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// After SIGTERM or SIGINT, how long requests in flight may take to
    /// finish before the host exits anyway.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_DRAIN_TIMEOUT, value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
}

impl RunArgs {
    /// Loads every function, listens, and serves until SIGTERM or SIGINT.
    pub fn execute(self) -> anyhow::Result<()> {
        let manifest = load_target(&self.target)?;
        let listen = match self.listen {
            Some(addr) => addr,
            None => default_listen_addr()?,
        };
        let data_dir = match self.data_dir {
            Some(dir) => dir,
            None => default_data_dir()?,
        };

        let runtime = Runtime::new(&RuntimeConfig::new(data_dir.join("artifacts")))?;
        match runtime.allocation() {
            Allocation::Pooling { instances } => tracing::info!(
                instances,
                "instances come from the pooling allocator, with copy-on-write memory images"
            ),
            Allocation::OnDemand => tracing::info!("instances are allocated on demand"),
        }
        let registry = Arc::new(Registry::load(&runtime, &manifest)?);

        let tokio = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        tokio.block_on(async {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let local = listener.local_addr()?;
            tracing::info!(functions = registry.function_count(), %local, "serving");
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", server::listening_line(local))?;
            stdout.flush()?;
            drop(stdout);
            Server::new(registry)
                .serve(listener, shutdown_signal(), self.drain_timeout)
                .await;
            anyhow::Ok(())
        })?;
        // Guest tasks still running past the drain timeout are abandoned.
        tokio.shutdown_background();
        Ok(())
    }
}

/// A manifest, or a bare component served at every path.
fn load_target(target: &Path) -> anyhow::Result<Manifest> {
    if target.extension().is_some_and(|ext| ext == "wasm") {
        let stem = target.file_stem().unwrap_or_default().to_string_lossy();
        return Ok(Manifest {
            functions: vec![FunctionDecl {
                name: FunctionName::from_stem(&stem),
                component: target.to_owned(),
                routes: vec![RoutePattern::Prefix(String::new())],
                env: BTreeMap::new(),
            }],
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

fn default_data_dir() -> anyhow::Result<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .context("no --data-dir given, and neither XDG_CACHE_HOME nor HOME is set")?;
    Ok(cache.join("shoal"))
}

/// Completes on the first SIGTERM (Kubernetes stopping the pod) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("cannot listen for SIGTERM");
    let mut int = signal(SignalKind::interrupt()).expect("cannot listen for SIGINT");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
