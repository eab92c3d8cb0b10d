//! Section 2: cold starts. One host serves the hello of every language
//! (Rust, JavaScript, Python, C, C++, Go), each with an idle timeout of
//! [`COLD_IDLE_TIMEOUT`]. For each function, on one keep-alive connection
//! opened beforehand, the harness repeats: wait (polling the admin API)
//! until the function has scaled to zero; send one request and time it from
//! writing its first byte to reading the answer's first byte (the cold
//! figure); send a second request at once (the warm figure).
//!
//! It runs twice ([`Code`]): with the host's defaults, where a function
//! that scaled to zero keeps its compiled code mapped (`--keep-code`), and
//! with `--keep-code 0`, where every cold start loads the code from the
//! artifact cache.
//!
//! A cold start counts only if it was one, of the pass's kind: at the end,
//! the host's own count of cold starts for the function must equal the
//! number of timed cold requests, and its log lines must say the code was
//! kept (or loaded) for each, else the section says the measurement is
//! invalid.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::admin::Admin;
use crate::client::Connection;
use crate::manifest::{Function, Manifest};
use crate::plan::{CLIENT_CPU, COLD_IDLE_TIMEOUT, COLD_START_POLL, Plan, SERVER_CPU};
use crate::report::{Table, format_latency, format_latency_or_dash};
use crate::servers::{HELLO_BODY, Paths, Server};
use crate::stats::Sample;

/// A function of this section: the hello of each language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// The Rust hello (`hello.wasm`, the SDK).
    Rust,
    /// The JavaScript hello (`hello-js.wasm`, componentize-js).
    JavaScript,
    /// The Python hello (`hello-py.wasm`, componentize-py).
    Python,
    /// The C hello (`hello-c.wasm`, clang and wasi-libc).
    C,
    /// The C++ hello (`hello-cpp.wasm`, clang and libc++).
    Cpp,
    /// The Go hello (`hello-go.wasm`, wasip1 and the preview1 adapter).
    Go,
}

impl Language {
    /// Every one, in the report's order.
    pub const ALL: [Language; 6] = [
        Language::Rust,
        Language::JavaScript,
        Language::Python,
        Language::C,
        Language::Cpp,
        Language::Go,
    ];

    /// The two whose rebuilds sections 4 and 5 time: the smallest
    /// component and one of the largest.
    pub const REBUILT: [Language; 2] = [Language::Rust, Language::JavaScript];

    /// Its short name, as `scripts/build-polyglot` names the component.
    fn tag(&self) -> &'static str {
        match self {
            Language::Rust => "rs",
            Language::JavaScript => "js",
            Language::Python => "py",
            Language::C => "c",
            Language::Cpp => "cpp",
            Language::Go => "go",
        }
    }

    /// The function's name in the manifest.
    pub fn function(&self) -> String {
        format!("hello-{}", self.tag())
    }

    /// Where it is served.
    pub fn route(&self) -> String {
        format!("/{}", self.tag())
    }

    /// What the function answers at its route.
    pub fn body(&self) -> String {
        match self {
            Language::Rust => HELLO_BODY.to_owned(),
            _ => format!("hello from {} /{}", self.tag(), self.tag()),
        }
    }

    /// Its component file.
    pub fn component(&self, paths: &Paths) -> PathBuf {
        match self {
            Language::Rust => paths.hello_wasm.clone(),
            _ => paths.polyglot.join(format!("hello-{}.wasm", self.tag())),
        }
    }

    /// Its name in the report.
    pub fn label(&self) -> &'static str {
        match self {
            Language::Rust => "Rust hello",
            Language::JavaScript => "JS hello",
            Language::Python => "Python hello",
            Language::C => "C hello",
            Language::Cpp => "C++ hello",
            Language::Go => "Go hello",
        }
    }
}

/// Where a cold start finds the function's compiled code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Still mapped since the function scaled to zero (the default
    /// `--keep-code`).
    Kept,
    /// Loaded from the artifact cache (`--keep-code 0`).
    Loaded,
}

impl Code {
    /// Both, in the report's order.
    pub const ALL: [Code; 2] = [Code::Kept, Code::Loaded];

    /// The host's arguments for it.
    fn host_args(&self) -> &'static [&'static str] {
        match self {
            Code::Kept => &[],
            Code::Loaded => &["--keep-code", "0"],
        }
    }

    /// Its name in the report.
    pub fn label(&self) -> &'static str {
        match self {
            Code::Kept => "code kept",
            Code::Loaded => "code loaded",
        }
    }

    fn heading(&self) -> &'static str {
        match self {
            Code::Kept => {
                "Code kept: the host's defaults, where a function that scaled to zero keeps \
                 its compiled code mapped (`--keep-code`, 128 MiB of the most recent)"
            }
            Code::Loaded => {
                "Code loaded: `--keep-code 0`, where each cold start maps the compiled \
                 artifact from the cache and reads its metadata"
            }
        }
    }
}

/// One function's cold starts.
#[derive(Debug, Clone)]
pub struct FunctionColdStarts {
    /// Which function.
    pub language: Language,
    /// Its component file.
    pub component: PathBuf,
    /// The component's size in bytes.
    pub component_bytes: u64,
    /// Request-to-first-byte of each request sent to the function scaled
    /// to zero.
    pub cold: Sample,
    /// Request-to-first-byte of the request that followed each cold one.
    pub warm: Sample,
    /// The `elapsed_ms` of the host's `cold start` log lines.
    pub logged: Sample,
    /// Cold starts the admin API counted at the end.
    pub counted: u64,
    /// Cold starts whose log line says the code was not as the pass wants
    /// (loaded when kept, or kept when loaded).
    pub other_code: usize,
    /// Connections the host closed between two timed requests (the next
    /// one went on a new connection, opened before the wait).
    pub reconnects: usize,
}

impl FunctionColdStarts {
    /// Whether every timed cold request was a cold start of the pass's
    /// kind, and only those (besides the first, untimed one).
    pub fn is_valid(&self) -> bool {
        self.counted == self.cold.len() as u64 + 1 && self.other_code == 0
    }
}

/// One pass of section 2.
#[derive(Debug, Clone)]
pub struct Pass {
    /// Where the cold starts found the code.
    pub code: Code,
    /// Per function; empty if the pass failed.
    pub functions: Vec<FunctionColdStarts>,
    /// Why the pass failed, if it did.
    pub failure: Option<String>,
}

/// Section 2's results.
#[derive(Debug, Clone)]
pub struct ColdStarts {
    /// One pass per [`Code`].
    pub passes: Vec<Pass>,
}

impl ColdStarts {
    /// Runs the section; a failure is reported in the section, not fatal.
    pub async fn measure(paths: &Paths, plan: &Plan) -> Self {
        let mut passes = Vec::new();
        for code in Code::ALL {
            eprintln!("==> cold starts, {}", code.label());
            let pass = match measure(paths, plan, code).await {
                Ok(functions) => Pass {
                    code,
                    functions,
                    failure: None,
                },
                Err(error) => {
                    eprintln!("    failed: {error:#}");
                    Pass {
                        code,
                        functions: Vec::new(),
                        failure: Some(format!("{error:#}")),
                    }
                }
            };
            passes.push(pass);
        }
        Self { passes }
    }

    /// The results of `language`'s function in the pass of `code`.
    pub fn function(&self, code: Code, language: Language) -> Option<&FunctionColdStarts> {
        let pass = self.passes.iter().find(|p| p.code == code)?;
        pass.functions.iter().find(|f| f.language == language)
    }

    /// The section, as markdown.
    pub fn render(&self) -> String {
        let mut out = String::from("## 2. Cold start\n\n");
        let _ = writeln!(
            out,
            "One `host` (CPU {SERVER_CPU}) serves the hello of each language with `idle_timeout = \
             \"{COLD_IDLE_TIMEOUT}\"`. For each, on one keep-alive connection opened beforehand, \
             the client (CPU {CLIENT_CPU}) waits until the admin API shows the function \
             `compiled` (scaled to zero), then times one request from writing its first byte \
             to reading the answer's first byte (\"cold\"), then sends one more at once \
             (\"warm\"). Every answer is checked (200 and the expected body). \"host-logged\" is \
             the `elapsed_ms` of the host's `cold start` log line: the server's share, from \
             the request finding the function cold to the function being warm, before the \
             guest runs. A first, untimed request warms each function once; \"counted\" is \
             the admin API's `cold_starts` at the end, which must equal the timed cold \
             requests plus that one. The section runs twice, in two hosts one after \
             the other: once as the host runs by default, and once with `--keep-code 0`; \
             the host's log line says of each cold start whether it loaded the code \
             (`loaded_code`), and every one must be of its pass's kind.\n"
        );
        for pass in &self.passes {
            out.push_str(&pass.render());
        }
        out
    }
}

impl Pass {
    fn render(&self) -> String {
        let mut out = format!("### {}\n\n", self.code.heading());
        if let Some(failure) = &self.failure {
            let _ = writeln!(out, "**The pass failed:** {failure}\n");
            return out;
        }
        let mut table = Table::new(&[
            "function",
            "component",
            "timed",
            "counted",
            "cold p50",
            "cold p99",
            "cold max",
            "host-logged p50",
            "host-logged p99",
            "warm p50",
            "warm p99",
        ]);
        for f in &self.functions {
            table.row(vec![
                f.language.label().to_owned(),
                format!(
                    "`{}` ({:.1} KiB)",
                    f.component
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy(),
                    f.component_bytes as f64 / 1024.0
                ),
                f.cold.len().to_string(),
                f.counted.to_string(),
                format_latency_or_dash(f.cold.p50()),
                format_latency_or_dash(f.cold.p99()),
                format_latency_or_dash(f.cold.max()),
                format_latency_or_dash(f.logged.p50()),
                format_latency_or_dash(f.logged.p99()),
                format_latency_or_dash(f.warm.p50()),
                format_latency_or_dash(f.warm.p99()),
            ]);
        }
        out.push_str(&table.render());
        out.push('\n');
        for f in &self.functions {
            let label = f.language.label();
            if f.is_valid() {
                let _ = writeln!(
                    out,
                    "- {label}: valid, every one of the {} timed requests was a cold start, {}.",
                    f.cold.len(),
                    self.code.label()
                );
            } else {
                let _ = writeln!(
                    out,
                    "- **{label}: INVALID measurement**: the host counted {} cold starts for {} \
                     timed cold requests and one untimed; {} timed ones were not {}.",
                    f.counted,
                    f.cold.len(),
                    f.other_code,
                    self.code.label()
                );
            }
            if let (Some(cold), Some(warm)) = (f.cold.p50(), f.warm.p50()) {
                let _ = writeln!(
                    out,
                    "  Cold minus warm at the median: {}.",
                    format_latency(cold.saturating_sub(warm))
                );
            }
            if f.reconnects > 0 {
                let _ = writeln!(
                    out,
                    "  The host closed the idle connection {} times; those requests went on a \
                     new connection opened before the wait.",
                    f.reconnects
                );
            }
        }
        out.push('\n');
        out
    }
}

async fn measure(
    paths: &Paths,
    plan: &Plan,
    code: Code,
) -> anyhow::Result<Vec<FunctionColdStarts>> {
    let manifest = paths.work.join("cold-start.toml");
    Manifest {
        function: Language::ALL
            .iter()
            .map(|l| {
                Function::new(l.function(), &l.component(paths), l.route())
                    .idle_timeout(COLD_IDLE_TIMEOUT)
            })
            .collect(),
    }
    .write(&manifest)?;
    let mut server = Server::host_with(paths, &manifest, &paths.data, code.host_args()).await?;
    server.wait_ready().await?;
    let mut admin = Admin::new(server.admin()?);

    let mut results = Vec::new();
    for language in Language::ALL {
        eprintln!(
            "    {} ({} cold starts)",
            language.label(),
            plan.cold_starts
        );
        let (cold, warm, reconnects) = time_cold_starts(&server, &mut admin, language, plan)
            .await
            .with_context(|| format!("timing the cold starts of {}", language.function()))?;
        let component = language.component(paths);
        results.push(FunctionColdStarts {
            language,
            component_bytes: std::fs::metadata(&component)?.len(),
            component,
            cold: Sample::new(cold),
            warm: Sample::new(warm),
            logged: Sample::new(Vec::new()),
            counted: admin.function(&language.function()).await?.cold_starts,
            other_code: 0,
            reconnects,
        });
    }
    // The log lines of the last cold start may still be in the pipe.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for result in &mut results {
        let function = result.language.function();
        result.logged = Sample::new(server.logged_cold_starts(&function));
        let loaded = server.cold_starts_loaded(&function);
        // The timed ones are the last.
        let timed = &loaded[loaded.len().saturating_sub(result.cold.len())..];
        result.other_code = timed
            .iter()
            .filter(|&&loaded| loaded != Some(code == Code::Loaded))
            .count();
    }
    Ok(results)
}

/// Cold and warm request-to-first-byte of `plan.cold_starts` rounds, and
/// how many times the connection had to be opened again.
async fn time_cold_starts(
    server: &Server,
    admin: &mut Admin,
    language: Language,
    plan: &Plan,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, usize)> {
    let (name, route, body) = (language.function(), language.route(), language.body());
    let mut connection = Connection::open(server.addr).await?;
    // The first cold start is not timed: it finds no code kept whatever the
    // pass, and the first request of a process runs through cold caches.
    connection.get(&route).await?.expect(&body)?;
    let (mut cold, mut warm, mut reconnects) = (Vec::new(), Vec::new(), 0);
    for _ in 0..plan.cold_starts {
        admin
            .wait_scaled_to_zero(COLD_START_POLL, |f| f.name == *name)
            .await?;
        if connection.is_closed() {
            connection = Connection::open(server.addr).await?;
            reconnects += 1;
        }
        let answer = connection.get(&route).await?;
        answer.expect(&body)?;
        cold.push(answer.first_byte);
        let answer = connection.get(&route).await?;
        answer.expect(&body)?;
        warm.push(answer.first_byte);
    }
    Ok((cold, warm, reconnects))
}
