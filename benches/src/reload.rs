//! Section 4: reloads. One `host run --watch` serves the Rust and the
//! JavaScript hello, each from a component file of its own. For each, the
//! harness repeatedly renames a new build of the component over that file
//! (the same program with one more custom section, so new bytes that
//! compile from scratch, as a rebuilt function would) and times, from the
//! rename:
//!
//! - until the admin API shows the function with the new component digest
//!   (the host noticed the change, waited for the burst to go quiet,
//!   compiled, warmed and swapped it in), and
//! - until the first answer of the new version: the request sent as soon as
//!   the digest shows, checked to be a 200 with the function's body.
//!
//! The host's own `component compiled ... elapsed_ms` figures are reported
//! beside them.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::admin::Admin;
use crate::client::Connection;
use crate::cold_start::Language;
use crate::manifest::{Function, Manifest};
use crate::plan::{CLIENT_CPU, Plan, RELOAD_POLL, RELOAD_TIMEOUT, SERVER_CPU};
use crate::report::{Table, format_latency_or_dash};
use crate::section::Section;
use crate::servers::{Paths, Server, log_millis};
use crate::stats::Sample;

/// The custom section that makes each build's bytes new.
const VARIANT_SECTION: &[u8] = b"shoal-bench-build";

/// The host's quiet period before it reloads (`shoal_host::watch::QUIET`).
const WATCH_QUIET: &str = "100 ms";

/// One function's reloads.
#[derive(Debug, Clone)]
pub struct FunctionReloads {
    /// Which function.
    pub language: Language,
    /// Its component's size in bytes.
    pub component_bytes: u64,
    /// Rename to the new digest in the admin API.
    pub applied: Sample,
    /// Rename to the first answer of the new version.
    pub answered: Sample,
    /// The host's logged compile times of the new builds.
    pub compiled: Sample,
}

/// Section 4's results.
pub type Reloads = Section<FunctionReloads>;

/// Runs the section.
pub async fn measure_section(paths: &Paths, plan: &Plan) -> Reloads {
    Section::run("reloads", measure(paths, plan)).await
}

impl Reloads {
    /// The section, as markdown.
    pub fn render(&self) -> String {
        let mut out = String::from("## 4. Reload\n\n");
        let _ = writeln!(
            out,
            "One `host run --watch` (CPU {SERVER_CPU}) serves both functions, each from a \
             component file of its own. The harness (CPU {CLIENT_CPU}) renames a new build \
             over that file (the same program with one more custom section: new bytes, \
             compiled from scratch) and times from the rename until the admin API shows the \
             new component digest (\"applied\"), and until the answer to the request sent \
             right then (\"first answer\", checked: 200 and the expected body). Both include \
             the host's {WATCH_QUIET} wait for a burst of file changes to go quiet. \
             \"compile\" is the host's own log figure for compiling each new build.\n"
        );
        if let Some(failure) = self.failure_line() {
            let _ = writeln!(out, "{failure}");
            return out;
        }
        let mut table = Table::new(&[
            "function",
            "component",
            "reloads",
            "applied p50",
            "applied max",
            "first answer p50",
            "first answer max",
            "compile p50",
        ]);
        for f in &self.functions {
            table.row(vec![
                f.language.label().to_owned(),
                format!("{:.1} KiB", f.component_bytes as f64 / 1024.0),
                f.answered.len().to_string(),
                format_latency_or_dash(f.applied.p50()),
                format_latency_or_dash(f.applied.max()),
                format_latency_or_dash(f.answered.p50()),
                format_latency_or_dash(f.answered.max()),
                format_latency_or_dash(f.compiled.p50()),
            ]);
        }
        out.push_str(&table.render());
        out.push('\n');
        out
    }
}

async fn measure(paths: &Paths, plan: &Plan) -> anyhow::Result<Vec<FunctionReloads>> {
    let dir = Paths::fresh_dir(&paths.work, "reload")?;
    let watched = |language: Language| dir.join(format!("{}.wasm", language.function()));
    for language in Language::REBUILT {
        std::fs::copy(language.component(paths), watched(language))
            .with_context(|| format!("cannot copy {}", language.label()))?;
    }
    let manifest = dir.join("reload.toml");
    Manifest {
        function: Language::REBUILT
            .iter()
            .map(|&l| Function::new(l.function(), &watched(l), l.route()))
            .collect(),
    }
    .write(&manifest)?;
    let data = Paths::fresh_dir(&paths.work, "reload-data")?;
    let mut server = Server::host_with(paths, &manifest, &data, &["--watch"]).await?;
    server.wait_ready().await?;
    let mut admin = Admin::new(server.admin()?);

    let mut results = Vec::new();
    for language in Language::REBUILT {
        let rounds = match language {
            Language::Rust => plan.reloads_rust,
            _ => plan.reloads_js,
        };
        eprintln!("    {} ({rounds} reloads)", language.label());
        let original = std::fs::read(language.component(paths))?;
        let mut connection = Connection::open(server.addr).await?;
        let (mut applied, mut answered) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let build = variant(&original, round);
            let digest = format!("sha256:{:x}", Sha256::digest(&build));
            let next = dir.join("next.wasm");
            std::fs::write(&next, &build)?;
            let start = Instant::now();
            std::fs::rename(&next, watched(language))?;
            wait_for_component(&mut admin, &language.function(), &digest).await?;
            applied.push(start.elapsed());
            if connection.is_closed() {
                connection = Connection::open(server.addr).await?;
            }
            let answer = connection.get(&language.route()).await?;
            answered.push(start.elapsed());
            answer.expect(&language.body())?;
        }
        results.push(FunctionReloads {
            language,
            component_bytes: original.len() as u64,
            applied: Sample::new(applied),
            answered: Sample::new(answered),
            compiled: Sample::new(Vec::new()),
        });
    }
    // The compile times, from the host's log, by component file.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for result in &mut results {
        let file = watched(result.language).display().to_string();
        let compiled: Vec<Duration> = server
            .process
            .lines_matching(|text| text.contains("component compiled") && text.contains(&file))
            .iter()
            .filter_map(|line| log_millis(&line.text, "elapsed_ms"))
            .collect();
        // The first is the start-up compile, not a reload.
        result.compiled = Sample::new(compiled.into_iter().skip(1).collect());
    }
    Ok(results)
}

/// Waits until the admin API shows function `name` with component
/// `digest`.
async fn wait_for_component(admin: &mut Admin, name: &str, digest: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        if admin.function(name).await?.component.as_deref() == Some(digest) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} did not reload within {RELOAD_TIMEOUT:?}");
        }
        tokio::time::sleep(RELOAD_POLL).await;
    }
}

/// `component` with a custom section holding `round` appended: the same
/// program, other bytes.
pub fn variant(component: &[u8], round: usize) -> Vec<u8> {
    let payload = round.to_le_bytes();
    let size = 1 + VARIANT_SECTION.len() + payload.len();
    let mut bytes = component.to_vec();
    // Section id 0 (custom), then sizes small enough for one LEB128 byte.
    bytes.extend([0, size as u8, VARIANT_SECTION.len() as u8]);
    bytes.extend(VARIANT_SECTION);
    bytes.extend(payload);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variant_is_the_component_and_one_custom_section() {
        let component = b"\0asm\x0d\0\x01\0";
        let bytes = variant(component, 3);
        assert_eq!(&bytes[..8], component);
        assert_eq!(bytes[8], 0, "custom section");
        assert_eq!(usize::from(bytes[9]), bytes.len() - 10);
        assert_eq!(usize::from(bytes[10]), VARIANT_SECTION.len());
        assert_ne!(variant(component, 3), variant(component, 4));
    }
}
