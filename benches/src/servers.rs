//! Starting the servers under test, pinned to the server CPU, and reading
//! the addresses they print: Shoal's `host`, the native hyper hello server
//! and `wasmtime serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::plan::{SERVER_CPU, START_TIMEOUT};
use crate::process::{Line, Pipe, Process};

/// The body every hello server answers with (the Rust hello component with
/// no `?name=`, and the native server).
pub const HELLO_BODY: &str = "Hello, world!\n";

/// The line `host` logs once every component is compiled.
pub const READY_MESSAGE: &str = "ready: every component is compiled";

/// The line `host` logs after each cold start.
pub const COLD_START_MESSAGE: &str = "cold start";

/// What `host` prints on stdout before it listens: its admin address.
const HOST_ADMIN_PREFIX: &str = "admin on http://";

/// What `host` and the native server print once they accept connections.
const LISTENING_PREFIX: &str = "listening on http://";

/// What `wasmtime serve` prints on stderr once it accepts connections.
const WASMTIME_LISTENING_PREFIX: &str = "Serving HTTP on http://";

/// The loopback address with a port the kernel picks.
const ANY_LOOPBACK_PORT: &str = "127.0.0.1:0";

/// The programs and components the benchmarks use.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Shoal's `host` binary (release).
    pub host: PathBuf,
    /// The native hyper hello server.
    pub hello_server: PathBuf,
    /// `wasmtime` (the CLI, for `wasmtime serve`).
    pub wasmtime: PathBuf,
    /// The Rust hello component.
    pub hello_wasm: PathBuf,
    /// The folder of the other languages' hello components
    /// (`hello-js.wasm`, `hello-py.wasm`, ...).
    pub polyglot: PathBuf,
    /// A scratch folder for manifests and data folders.
    pub work: PathBuf,
    /// The data folder of the hosts of sections 1 and 2 (see
    /// [`Paths::fresh_dir`]).
    pub data: PathBuf,
}

impl Paths {
    /// Folder `name` under [`Paths::work`], emptied of what an earlier run
    /// left. Each run starts from an empty artifact cache: the JavaScript
    /// component differs at every build, so a kept cache would only grow.
    pub fn fresh_dir(work: &Path, name: &str) -> anyhow::Result<PathBuf> {
        let dir = work.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot empty {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }
}

/// A server under test.
pub struct Server {
    /// Its process.
    pub process: Process,
    /// Where it serves HTTP.
    pub addr: SocketAddr,
    /// Where its admin API listens (`host` only).
    pub admin: Option<SocketAddr>,
    /// When it printed that it listens.
    pub listening: Line,
}

/// `program args...` pinned to the server CPU.
fn pinned(program: &Path) -> Command {
    let mut command = Command::new("taskset");
    command.args(["-c", &SERVER_CPU.to_string()]).arg(program);
    command
}

impl Server {
    /// `host run <target>` on free loopback ports, with `data_dir`.
    pub async fn host(paths: &Paths, target: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        Self::host_with(paths, target, data_dir, &[]).await
    }

    /// `host run <target> <args>` on free loopback ports, with `data_dir`.
    pub async fn host_with(
        paths: &Paths,
        target: &Path,
        data_dir: &Path,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let mut command = pinned(&paths.host);
        command
            .arg("run")
            .arg(target)
            .args(["--listen", ANY_LOOPBACK_PORT])
            .args(["--admin-listen", ANY_LOOPBACK_PORT])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args);
        let mut process = Process::spawn("host", command)?;
        let (_, admin) = process
            .wait_for("its admin address", START_TIMEOUT, |line| {
                address_after(line, Pipe::Stdout, HOST_ADMIN_PREFIX)
            })
            .await?;
        Self::once_listening(process, Pipe::Stdout, LISTENING_PREFIX, Some(admin)).await
    }

    /// The native hyper hello server.
    pub async fn native(paths: &Paths) -> anyhow::Result<Self> {
        let mut command = pinned(&paths.hello_server);
        command.args(["--listen", ANY_LOOPBACK_PORT]);
        let process = Process::spawn("hello-server", command)?;
        Self::once_listening(process, Pipe::Stdout, LISTENING_PREFIX, None).await
    }

    /// `wasmtime serve -S cli <component>`, each instance serving up to
    /// `reuse` requests (`None`: wasmtime's default).
    pub async fn wasmtime(
        paths: &Paths,
        component: &Path,
        reuse: Option<u64>,
    ) -> anyhow::Result<Self> {
        let mut command = pinned(&paths.wasmtime);
        command
            .args(["serve", "-S", "cli", "--addr", ANY_LOOPBACK_PORT])
            .args(reuse.map(|n| format!("--max-instance-reuse-count={n}")))
            .arg(component);
        let process = Process::spawn("wasmtime serve", command)?;
        Self::once_listening(process, Pipe::Stderr, WASMTIME_LISTENING_PREFIX, None).await
    }

    /// The server `process` is, once it printed its address after `prefix`
    /// on `pipe`.
    async fn once_listening(
        mut process: Process,
        pipe: Pipe,
        prefix: &str,
        admin: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let (listening, addr) = process
            .wait_for("its address", START_TIMEOUT, |line| {
                address_after(line, pipe, prefix)
            })
            .await?;
        Ok(Self {
            process,
            addr,
            admin,
            listening,
        })
    }

    /// The admin address of a `host`.
    pub fn admin(&self) -> anyhow::Result<SocketAddr> {
        self.admin.context("this server has no admin API")
    }

    /// Waits for `host`'s `ready:` line; returns it with the `elapsed_ms`
    /// the host logged in it.
    pub async fn wait_ready(&mut self) -> anyhow::Result<(Line, Duration)> {
        self.process
            .wait_for("`ready:`", START_TIMEOUT, |line| {
                if !line.text.contains(READY_MESSAGE) {
                    return None;
                }
                log_millis(&line.text, "elapsed_ms")
            })
            .await
    }

    /// The `elapsed_ms` of every `cold start` log line of `function`.
    pub fn logged_cold_starts(&self, function: &str) -> Vec<Duration> {
        self.cold_start_lines(function)
            .iter()
            .filter_map(|line| log_millis(line, "elapsed_ms"))
            .collect()
    }

    /// Whether each of `function`'s cold starts, in order, loaded its code
    /// from the artifact (`loaded_code=true`) or found it mapped (`false`);
    /// `None` for a line that does not say.
    pub fn cold_starts_loaded(&self, function: &str) -> Vec<Option<bool>> {
        self.cold_start_lines(function)
            .iter()
            .map(|line| {
                if line.contains(" loaded_code=true") {
                    Some(true)
                } else if line.contains(" loaded_code=false") {
                    Some(false)
                } else {
                    None
                }
            })
            .collect()
    }

    fn cold_start_lines(&self, function: &str) -> Vec<String> {
        let field = format!(" function={function} ");
        self.process
            .lines_matching(|text| text.contains(COLD_START_MESSAGE) && text.contains(&field))
            .into_iter()
            .map(|line| line.text)
            .collect()
    }
}

/// The address printed after `prefix` on `pipe`, if `line` is that line.
fn address_after(line: &Line, pipe: Pipe, prefix: &str) -> Option<SocketAddr> {
    if line.pipe != pipe {
        return None;
    }
    let address = line.text.trim().strip_prefix(prefix)?;
    address.trim_end_matches('/').parse().ok()
}

/// The value of `key=<milliseconds>` in a log line of `host`.
pub fn log_millis(line: &str, key: &str) -> Option<Duration> {
    let value = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix(key)?.strip_prefix('='))?;
    let millis: f64 = value.parse().ok()?;
    Some(Duration::from_secs_f64(millis / 1e3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_milliseconds_from_a_log_line() {
        let line = "2026-01-01T00:00:00.000000Z  INFO shoal_host::registry::entry: cold start \
                    function=hello-rs elapsed_ms=0.512 waited_for_compile_ms=0.001 cold_starts=3";
        assert_eq!(
            log_millis(line, "elapsed_ms"),
            Some(Duration::from_micros(512))
        );
        assert_eq!(log_millis(line, "missing_ms"), None);
    }
}
