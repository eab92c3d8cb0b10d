//! Section 1: warm throughput and latency. Each server answers the same
//! hello, pinned to the server CPU, loaded by `wrk` on keep-alive
//! connections from the other CPU at each of [`CONCURRENCIES`], after a
//! warm-up. Native hyper is the yardstick the others are divided by.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::client;
use crate::manifest::{Function, Manifest};
use crate::plan::{CLIENT_CPU, CONCURRENCIES, Plan, REUSE_COUNT, SERVER_CPU, WRK_THREADS};
use crate::proc_stats::{CpuTimes, WakeUps};
use crate::report::{Table, format_count, format_latency};
use crate::servers::{HELLO_BODY, Paths, Server};
use crate::wrk::{self, WrkResult};

/// The path every server is loaded at (all of them answer at any path; the
/// host routes it to the function).
const HELLO_PATH: &str = "/hello";

/// The connections of the warm-up run.
const WARMUP_CONNECTIONS: usize = 16;

/// How the host says it does not know a manifest field.
const UNKNOWN_FIELD: &str = "unknown field `max_instance_reuse`";

/// The host's quiet log filter: warnings, and the start-up lines the
/// harness waits for.
pub const QUIET_LOGGING: &str = "warn,shoal_host::cli=info";

/// A server configuration under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// The native hyper hello server.
    Native,
    /// Shoal's `host`; `reuse` sets `max_instance_reuse`.
    Host {
        /// Requests one instance may serve; `None` is the default (1).
        reuse: Option<u64>,
        /// Logging: the default (`info`, with a span and an access-log line
        /// per request) or quiet (`warn`), like the peers, which log nothing
        /// per request.
        quiet: bool,
    },
    /// `wasmtime serve -S cli`.
    Wasmtime {
        /// `--max-instance-reuse-count`; `None` is the default (1 for a
        /// WASIp2 component).
        reuse: Option<u64>,
    },
}

/// Every configuration, in the report's order.
pub const SUBJECTS: [Subject; 6] = [
    Subject::Native,
    Subject::Host {
        reuse: None,
        quiet: false,
    },
    Subject::Host {
        reuse: None,
        quiet: true,
    },
    Subject::Host {
        reuse: Some(REUSE_COUNT),
        quiet: true,
    },
    Subject::Wasmtime { reuse: None },
    Subject::Wasmtime {
        reuse: Some(REUSE_COUNT),
    },
];

impl Subject {
    /// Its name in the report.
    pub fn label(&self) -> String {
        match self {
            Subject::Native => "native hyper (current-thread)".to_owned(),
            Subject::Host { reuse, quiet } => {
                let instances = match reuse {
                    None => "fresh instance per request".to_owned(),
                    Some(n) => format!("reuse (`max_instance_reuse = {n}`)"),
                };
                let logging = if *quiet {
                    format!("`--log-level {QUIET_LOGGING}`")
                } else {
                    "default logging (an access line per request)".to_owned()
                };
                format!("host, {instances}, {logging}")
            }
            Subject::Wasmtime { reuse: None } => {
                "wasmtime serve, fresh instance per request".to_owned()
            }
            Subject::Wasmtime { reuse: Some(n) } => {
                format!("wasmtime serve, reuse (`--max-instance-reuse-count {n}`)")
            }
        }
    }

    async fn start(&self, paths: &Paths) -> anyhow::Result<Server> {
        match *self {
            Subject::Native => Server::native(paths).await,
            Subject::Host { reuse, quiet } => {
                let mut function = Function::new("hello", &paths.hello_wasm, HELLO_PATH);
                function.max_instance_reuse = reuse;
                let file = match reuse {
                    None => "throughput-fresh.toml",
                    Some(_) => "throughput-reuse.toml",
                };
                let args: &[&str] = if quiet {
                    &["--log-level", QUIET_LOGGING]
                } else {
                    &[]
                };
                let manifest = paths.work.join(file);
                Manifest {
                    function: vec![function],
                }
                .write(&manifest)?;
                let mut server = Server::host_with(paths, &manifest, &paths.data, args).await?;
                server.wait_ready().await?;
                Ok(server)
            }
            Subject::Wasmtime { reuse } => Server::wasmtime(paths, &paths.hello_wasm, reuse).await,
        }
    }
}

/// One `wrk` run.
#[derive(Debug, Clone)]
pub struct Point {
    /// Open connections.
    pub connections: usize,
    /// What `wrk` measured.
    pub wrk: WrkResult,
    /// The server's CPU time per completed request.
    pub server_cpu_per_request: Option<Duration>,
    /// The server's CPU time over the run's wall time, from 0 to 1.
    pub server_cpu_share: f64,
    /// How busy the server CPU was, from 0 to 1, whoever used it.
    pub server_cpu_busy: Option<f64>,
    /// How often `wrk`'s CPU was woken from another per completed request.
    pub client_wake_ups_per_request: Option<f64>,
}

/// Why a configuration has fewer figures than the others.
#[derive(Debug, Clone)]
pub enum Problem {
    /// The server does not support it yet.
    NotAvailable(String),
    /// Something failed; the figures before it stand.
    Failed(String),
}

/// One configuration's results.
#[derive(Debug, Clone)]
pub struct Row {
    /// The configuration.
    pub subject: Subject,
    /// Its runs, in [`CONCURRENCIES`] order.
    pub points: Vec<Point>,
    /// What went wrong, if anything did.
    pub problem: Option<Problem>,
}

impl Row {
    /// Requests per second at `connections`, if measured.
    pub fn rate(&self, connections: usize) -> Option<f64> {
        self.points
            .iter()
            .find(|p| p.connections == connections)
            .map(|p| p.wrk.requests_per_sec)
    }
}

/// Section 1's results.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// The plan it ran under.
    pub plan: Plan,
    /// One row per configuration.
    pub rows: Vec<Row>,
}

impl Throughput {
    /// Measures every configuration of [`SUBJECTS`] in turn.
    pub async fn measure(paths: &Paths, plan: &Plan) -> Self {
        let mut rows = Vec::new();
        for subject in SUBJECTS {
            eprintln!("==> throughput: {}", subject.label());
            let row = measure_subject(subject, paths, plan).await;
            if let Some(Problem::Failed(why) | Problem::NotAvailable(why)) = &row.problem {
                eprintln!("    {why}");
            }
            rows.push(row);
        }
        Self { plan: *plan, rows }
    }

    /// The row of `subject`.
    pub fn row(&self, subject: Subject) -> Option<&Row> {
        self.rows.iter().find(|row| row.subject == subject)
    }

    /// `subject`'s requests per second at `connections` over native
    /// hyper's.
    pub fn ratio_to_native(&self, subject: Subject, connections: usize) -> Option<f64> {
        let native = self.row(Subject::Native)?.rate(connections)?;
        Some(self.row(subject)?.rate(connections)? / native)
    }

    /// The section, as markdown.
    pub fn render(&self) -> String {
        let mut out = String::from("## 1. Warm throughput and latency\n\n");
        let _ = writeln!(
            out,
            "`wrk -t{WRK_THREADS} -cN -d{}s --latency` on keep-alive connections, after {} s of \
             warm-up load; the same hello (`Hello, world!`) from every server: the Rust \
             `hello.wasm` for `host` and `wasmtime serve`, a hyper server on one \
             current-thread tokio runtime for native. \"× native\" divides by native \
             hyper's requests/s at the same concurrency, in this run. \"server CPU / \
             request\" is the server's user + system CPU time (all its threads) over the \
             requests `wrk` completed, and \"server CPU\" the same time over the run's wall \
             time; \"CPU {SERVER_CPU} busy\" is how busy the server's CPU was, whoever used it \
             (busy minus the server's share is roughly what other processes took). \
             \"wrk woken / request\" counts the interrupts that woke `wrk`'s CPU \
             {CLIENT_CPU} from another (`/proc/interrupts`, `CAL` and `RES`) per request: \
             a server slower than `wrk` leaves it idle, and on a virtual machine each \
             answer that must wake it costs the server more (`benches/README.md`, \
             \"Why one run of the host gives twice another\").\n",
            self.plan.duration.as_secs(),
            self.plan.warmup.as_secs()
        );
        let mut table = Table::new(&[
            "server",
            "connections",
            "requests/s",
            "× native",
            "p50",
            "p99",
            "server CPU / request",
            "server CPU",
            &format!("CPU {SERVER_CPU} busy"),
            "wrk woken / request",
            "errors",
        ]);
        for row in &self.rows {
            if row.points.is_empty() {
                let why = match &row.problem {
                    Some(Problem::NotAvailable(_)) => "not available yet (see below)",
                    _ => "failed (see below)",
                };
                table.row(vec![row.subject.label(), "–".to_owned(), why.to_owned()]);
            }
            for point in &row.points {
                let ratio = self
                    .ratio_to_native(row.subject, point.connections)
                    .map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"));
                table.row(vec![
                    row.subject.label(),
                    point.connections.to_string(),
                    format_count(point.wrk.requests_per_sec.round() as u64),
                    ratio,
                    format_latency(point.wrk.p50),
                    format_latency(point.wrk.p99),
                    point
                        .server_cpu_per_request
                        .map_or_else(|| "–".to_owned(), format_latency),
                    format_share(point.server_cpu_share),
                    point
                        .server_cpu_busy
                        .map_or_else(|| "–".to_owned(), format_share),
                    point
                        .client_wake_ups_per_request
                        .map_or_else(|| "–".to_owned(), |w| format!("{w:.3}")),
                    error_cell(&point.wrk),
                ]);
            }
        }
        out.push_str(&table.render());
        for row in &self.rows {
            let (what, detail) = match &row.problem {
                Some(Problem::NotAvailable(detail)) => ("not available yet", detail),
                Some(Problem::Failed(detail)) => ("failed", detail),
                None => continue,
            };
            let _ = write!(
                out,
                "\n**{}: {what}.**\n\n```text\n{}\n```\n",
                row.subject.label(),
                detail.trim_end()
            );
        }
        out.push('\n');
        out
    }
}

/// A share of one CPU: `87%`.
fn format_share(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

fn error_cell(wrk: &WrkResult) -> String {
    match (wrk.socket_errors, wrk.non_2xx) {
        (0, 0) => "0".to_owned(),
        (sockets, statuses) => format!("{sockets} socket, {statuses} non-2xx"),
    }
}

async fn measure_subject(subject: Subject, paths: &Paths, plan: &Plan) -> Row {
    let mut row = Row {
        subject,
        points: Vec::new(),
        problem: None,
    };
    let mut server = match subject.start(paths).await {
        Ok(server) => server,
        Err(error) => {
            let error = format!("{error:#}");
            row.problem = Some(match error.lines().find(|l| l.contains(UNKNOWN_FIELD)) {
                Some(line) => Problem::NotAvailable(line.trim().to_owned()),
                None => Problem::Failed(format!("it did not start: {error}")),
            });
            return row;
        }
    };
    if let Err(error) = load(&mut server, plan, &mut row.points).await {
        row.problem = Some(Problem::Failed(format!("{error:#}")));
    }
    row
}

/// Checks the answer, warms the server up, then runs `wrk` at every
/// concurrency, checking after each run that the server still answers.
async fn load(server: &mut Server, plan: &Plan, points: &mut Vec<Point>) -> anyhow::Result<()> {
    let url = format!("http://{}{HELLO_PATH}", server.addr);
    check(server).await?;
    wrk::run(&url, WARMUP_CONNECTIONS, plan.warmup).await?;
    for connections in CONCURRENCIES {
        let (cpu_before, server_before) = (CpuTimes::now()?, server.process.cpu_time()?);
        let wake_ups_before = WakeUps::now().ok();
        let started = Instant::now();
        let wrk = wrk::run(&url, connections, plan.duration).await?;
        let elapsed = started.elapsed();
        let (cpu_after, server_after) = (CpuTimes::now()?, server.process.cpu_time()?);
        let wake_ups = WakeUps::now()
            .ok()
            .zip(wake_ups_before)
            .and_then(|(after, before)| after.of_cpu_since(&before, CLIENT_CPU));
        let server_cpu = server_after.saturating_sub(server_before);
        points.push(Point {
            connections,
            server_cpu_per_request: (wrk.requests > 0).then(|| server_cpu / wrk.requests as u32),
            server_cpu_share: server_cpu.as_secs_f64() / elapsed.as_secs_f64(),
            server_cpu_busy: cpu_after.busy_since(&cpu_before, SERVER_CPU),
            client_wake_ups_per_request: wake_ups
                .filter(|_| wrk.requests > 0)
                .map(|w| w as f64 / wrk.requests as f64),
            wrk,
        });
        check(server)
            .await
            .map_err(|e| e.context(format!("after {connections} connections")))?;
    }
    Ok(())
}

/// Fails unless the server is running and answers 200 `Hello, world!`.
async fn check(server: &mut Server) -> anyhow::Result<()> {
    if let Some(status) = server.process.exited()? {
        bail!(
            "the server exited with {status}; its last output:\n{}",
            server.process.tail()
        );
    }
    client::get(server.addr, HELLO_PATH)
        .await?
        .expect(HELLO_BODY)
}
