//! Section 3: density. The same Rust hello registered under N names, each
//! at its own route `/f<i>`, with a warm artifact cache (a first start of the
//! host fills it). For each N: the time from spawning the host to its
//! `listening on` and `ready:` lines and its resident memory once ready;
//! then one request to each of the first [`CALLED_AT_MOST`] functions, a
//! wait until the admin API's status shows none warm, the resident memory
//! again, the CPU time over a quiet spell, a listing that checks every
//! function, and the size and time of a `/metrics` scrape. What one more
//! registered, scaled-to-zero function costs is (RSS_N − RSS_1) / (N − 1).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

use crate::admin::Admin;
use crate::client::Connection;
use crate::manifest::{Function, Manifest};
use crate::plan::{DENSITY_IDLE_TIMEOUT, DENSITY_POLL, Plan, SERVER_CPU};
use crate::report::{Table, format_count, format_kib, format_latency, format_latency_or_dash};
use crate::servers::{HELLO_BODY, Paths, Server};
use crate::stats::Sample;

/// The most functions called at one count: a host of 100,000 functions
/// sees a tenth of them called.
pub const CALLED_AT_MOST: usize = 10_000;

/// Scrapes of `/metrics` timed at each count.
const SCRAPES: usize = 5;

/// The quiet spell over which the host's CPU is read once every function
/// has scaled to zero and [`SETTLE`] has passed.
pub const QUIET: Duration = Duration::from_secs(3);

/// The time given to what the last scale to zero sets off (the host gives
/// the memory its instances used back to the system at once), counted on
/// its own before the quiet spell.
pub const SETTLE: Duration = Duration::from_secs(1);

/// The data folder of this section, emptied at its start so that the first
/// start really fills the artifact cache (apart from the other sections').
const DATA_DIR: &str = "density-data";

/// The measurements at one function count.
#[derive(Debug, Clone)]
pub struct DensityPoint {
    /// Registered functions.
    pub functions: usize,
    /// Spawn to `listening on`, one per start.
    pub listening: Sample,
    /// Spawn to the `ready:` line, one per start.
    pub ready: Sample,
    /// The `elapsed_ms` of the `ready:` line (the host's own clock, from
    /// `main`), one per start.
    pub ready_logged: Sample,
    /// `VmRSS` once ready and listening, before any request (median over
    /// the starts).
    pub rss_ready_kib: u64,
    /// `VmRSS` after one request to every function, every function scaled
    /// to zero again.
    pub rss_after_kib: u64,
    /// Functions called (one request each).
    pub called: usize,
    /// How long the requests to them took.
    pub traffic: Duration,
    /// `/metrics` once every function is scaled to zero: its size in bytes.
    pub metrics_bytes: usize,
    /// The time to read the whole of it, one per scrape.
    pub metrics_time: Sample,
    /// Cold starts the admin API counted after the traffic.
    pub cold_starts: u64,
    /// The host's CPU time over the [`SETTLE`] after the last function
    /// scaled to zero.
    pub settle_cpu: Duration,
    /// The host's CPU time over the [`QUIET`] after that, as a share of one
    /// core.
    pub rest_cpu: f64,
}

/// Section 3's results.
#[derive(Debug, Clone)]
pub struct Density {
    /// The first start, which compiled the component into the empty cache:
    /// spawn to `ready:`.
    pub cache_fill: Option<Duration>,
    /// One per function count, in increasing order.
    pub points: Vec<DensityPoint>,
    /// Why the section stopped early, if it did.
    pub failure: Option<String>,
}

impl Density {
    /// Runs the section; a failure is reported in the section, not fatal.
    pub async fn measure(paths: &Paths, plan: &Plan) -> Self {
        eprintln!("==> density");
        let mut density = Self {
            cache_fill: None,
            points: Vec::new(),
            failure: None,
        };
        if let Err(error) = measure(paths, plan, &mut density).await {
            eprintln!("    failed: {error:#}");
            density.failure = Some(format!("{error:#}"));
        }
        density
    }

    /// The point with `functions` functions.
    pub fn point(&self, functions: usize) -> Option<&DensityPoint> {
        self.points.iter().find(|p| p.functions == functions)
    }

    /// Resident memory per registered function at `functions` over one
    /// function, in KiB: once ready (`after_traffic` false) or after the
    /// traffic.
    pub fn per_function_kib(&self, functions: usize, after_traffic: bool) -> Option<f64> {
        let one = self.point(1)?;
        let many = self.point(functions).filter(|p| p.functions > 1)?;
        let rss = |p: &DensityPoint| {
            if after_traffic {
                p.rss_after_kib
            } else {
                p.rss_ready_kib
            }
        };
        Some((rss(many) as f64 - rss(one) as f64) / (many.functions - 1) as f64)
    }

    /// The section, as markdown.
    pub fn render(&self) -> String {
        let mut out = String::from("## 3. Density\n\n");
        let _ = writeln!(
            out,
            "The Rust `hello.wasm` registered N times (`f0`…`f<N-1>`, routes `/f<i>`, \
             `idle_timeout = \"{DENSITY_IDLE_TIMEOUT}\"`), one component file, so one compiled \
             artifact shared by all. `host` pinned to CPU {SERVER_CPU}, with a warm artifact \
             cache{cache_fill}. Times run from spawning the process to reading its line; medians over \
             the starts shown (the host's own figure is the `elapsed_ms` of its `ready:` \
             line). RSS is `VmRSS`: once ready and listening (median over the starts), then, in the \
             last start, after one request to each of the first {CALLED_AT_MOST} functions (all \
             answered 200 `Hello, world!`), a wait until the admin API's status \
             (`GET /v1/status`, polled) showed no function warm, and {settle} more. \"per function\" is (RSS_N − RSS_1) / \
             (N − 1). \"CPU after the last scale to zero\" is the host's CPU time (all its \
             threads, to the nanosecond from their `schedstat`) over the {settle} that follow (the \
             host then gives the memory of the instances back to the system at once); \"CPU at \
             rest\" is the same time over the {quiet} of quiet after that, as a share of one core. Then the admin listing must show \
             every function scaled to zero with the cold starts expected, and `/metrics` is read \
             {SCRAPES} times on the admin port, each on a new connection: its size, and the \
             median time from sending the request to the end of the body.\n",
            quiet = format_latency(QUIET),
            settle = format_latency(SETTLE),
            cache_fill = match self.cache_fill {
                Some(fill) => format!(
                    " (filled by a first start, which took {} to `ready:`)",
                    format_latency(fill)
                ),
                None => String::new(),
            }
        );
        let mut table = Table::new(&[
            "functions",
            "starts",
            "spawn → `listening on`",
            "spawn → `ready:`",
            "host-logged ready",
            "RSS ready",
            "per function",
            "called",
            "requests to those",
            "cold starts counted",
            "RSS after, scaled to zero",
            "per function",
            "CPU after the last scale to zero",
            "CPU at rest",
            "`/metrics` size",
            "`/metrics` time",
        ]);
        for p in &self.points {
            let per = |after| {
                self.per_function_kib(p.functions, after)
                    .map_or_else(|| "–".to_owned(), format_kib)
            };
            table.row(vec![
                format_count(p.functions as u64),
                p.ready.len().to_string(),
                format_latency_or_dash(p.listening.p50()),
                format_latency_or_dash(p.ready.p50()),
                format_latency_or_dash(p.ready_logged.p50()),
                format_kib(p.rss_ready_kib as f64),
                per(false),
                format_count(p.called as u64),
                format_latency(p.traffic),
                format_count(p.cold_starts),
                format_kib(p.rss_after_kib as f64),
                per(true),
                format_latency(p.settle_cpu),
                format!("{:.2}%", p.rest_cpu * 100.0),
                format_kib(p.metrics_bytes as f64 / 1024.0),
                format_latency_or_dash(p.metrics_time.p50()),
            ]);
        }
        out.push_str(&table.render());
        if let Some(failure) = &self.failure {
            let _ = writeln!(out, "\n**The section stopped early:** {failure}");
        }
        out.push('\n');
        out
    }
}

async fn measure(paths: &Paths, plan: &Plan, density: &mut Density) -> anyhow::Result<()> {
    let data_dir = Paths::fresh_dir(&paths.work, DATA_DIR)?;

    let manifests = plan
        .densities
        .iter()
        .map(|&n| write_manifest(paths, n))
        .collect::<anyhow::Result<Vec<_>>>()?;

    // The first start compiles the component into the empty cache.
    let first = manifests.first().context("no function counts to measure")?;
    let mut server = Server::host(paths, first, &data_dir).await?;
    let (ready, _) = server.wait_ready().await?;
    density.cache_fill = Some(ready.at.duration_since(server.process.spawned()));
    drop(server);

    for (&functions, manifest) in plan.densities.iter().zip(&manifests) {
        eprintln!("    {functions} functions");
        let point = measure_point(paths, plan, functions, manifest, &data_dir)
            .await
            .with_context(|| format!("with {functions} functions"))?;
        density.points.push(point);
    }
    Ok(())
}

/// `density-<n>.toml`: the hello component as `f0`…`f<n-1>`.
pub fn write_manifest(paths: &Paths, functions: usize) -> anyhow::Result<PathBuf> {
    let path = paths.work.join(format!("density-{functions}.toml"));
    Manifest {
        function: (0..functions)
            .map(|i| {
                Function::new(format!("f{i}"), &paths.hello_wasm, format!("/f{i}"))
                    .idle_timeout(DENSITY_IDLE_TIMEOUT)
            })
            .collect(),
    }
    .write(&path)?;
    Ok(path)
}

async fn measure_point(
    paths: &Paths,
    plan: &Plan,
    functions: usize,
    manifest: &Path,
    data_dir: &Path,
) -> anyhow::Result<DensityPoint> {
    let (mut listening, mut ready, mut ready_logged) = (Vec::new(), Vec::new(), Vec::new());
    let mut rss_ready = Vec::new();
    let mut last = None;
    for _ in 0..plan.starts_per_density.max(1) {
        // One host at a time: the previous one goes before the next starts.
        drop(last.take());
        let mut server = Server::host(paths, manifest, data_dir).await?;
        let (ready_line, logged) = server.wait_ready().await?;
        let spawned = server.process.spawned();
        listening.push(server.listening.at.duration_since(spawned));
        ready.push(ready_line.at.duration_since(spawned));
        ready_logged.push(logged);
        rss_ready.push(server.process.rss_kib()?);
        last = Some(server);
    }
    let server = last.expect("at least one start");
    rss_ready.sort_unstable();
    let rss_ready_kib = rss_ready[rss_ready.len() / 2];

    let called = functions.min(CALLED_AT_MOST);
    let started = Instant::now();
    let mut connection = Connection::open(server.addr).await?;
    for i in 0..called {
        let path = format!("/f{i}");
        let answer = connection.get(&path).await?;
        answer
            .expect(HELLO_BODY)
            .with_context(|| format!("GET {path}"))?;
    }
    let traffic = started.elapsed();
    drop(connection);

    // The status, not the listing, is polled: a listing of 100,000
    // functions costs the host a third of a second of CPU, the harness's
    // own work.
    let mut admin = Admin::new(server.admin()?);
    admin.wait_none_warm(DENSITY_POLL).await?;
    let at_zero = server.process.thread_times()?;
    tokio::time::sleep(SETTLE).await;
    let settled = server.process.thread_times()?;
    let settle_cpu = settled.since(&at_zero);
    let rss_after_kib = server.process.rss_kib()?;
    tokio::time::sleep(QUIET).await;
    let rest_cpu =
        server.process.thread_times()?.since(&settled).as_secs_f64() / QUIET.as_secs_f64();
    let listing = admin.functions().await?;
    if let Some(f) = listing.iter().find(|f| !f.is_scaled_to_zero()) {
        bail!("function {} was not scaled to zero: {}", f.name, f.state);
    }
    ensure!(
        listing.len() == functions,
        "the admin API lists {} functions, not {functions}",
        listing.len()
    );
    let expected = |name: &str| {
        let index: usize = name.trim_start_matches('f').parse().unwrap_or(usize::MAX);
        u64::from(index < called)
    };
    if let Some(f) = listing.iter().find(|f| f.cold_starts != expected(&f.name)) {
        bail!(
            "function {} had {} cold starts, not {}",
            f.name,
            f.cold_starts,
            expected(&f.name)
        );
    }
    let admin_addr = server.admin()?;
    let (mut metrics_bytes, mut metrics_time) = (0, Vec::new());
    for _ in 0..SCRAPES {
        let started = Instant::now();
        let answer = crate::client::get(admin_addr, "/metrics").await?;
        metrics_time.push(started.elapsed());
        ensure!(
            answer.status == 200,
            "GET /metrics answered {}",
            answer.status
        );
        metrics_bytes = answer.body.len();
    }
    Ok(DensityPoint {
        functions,
        listening: Sample::new(listening),
        ready: Sample::new(ready),
        ready_logged: Sample::new(ready_logged),
        rss_ready_kib,
        rss_after_kib,
        called,
        traffic,
        cold_starts: listing.iter().map(|f| f.cold_starts).sum(),
        metrics_bytes,
        metrics_time: Sample::new(metrics_time),
        settle_cpu,
        rest_cpu,
    })
}
