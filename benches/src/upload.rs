//! Section 5: uploads. One `host run` with its write API on; for each of
//! the Rust and the JavaScript hello, the harness uploads a new build (the
//! same program with one more custom section: new bytes, compiled from
//! scratch), deploys it as the next revision of a function, and asks the
//! function once. It times, from the start of the upload:
//!
//! - "stored and checked": the upload answered (stored, compiled, checked);
//! - "deployed": the deploy answered (the revision built, warmed, written
//!   durably, swapped in);
//! - "first answer": the answer to the request sent then, checked.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, StatusCode};

use crate::client::{Connection, call};
use crate::cold_start::Language;
use crate::manifest::{Function, Manifest};
use crate::plan::{CLIENT_CPU, Plan, RELOAD_TIMEOUT, SERVER_CPU};
use crate::reload::variant;
use crate::report::{Table, format_latency_or_dash};
use crate::section::Section;
use crate::servers::{Paths, Server};
use crate::stats::Sample;

/// The admin token the section's host is started with.
const TOKEN: &str = "bench-admin-token-0123456789";

/// One function's uploads.
#[derive(Debug, Clone)]
pub struct FunctionUploads {
    /// Which function.
    pub language: Language,
    /// Its component's size in bytes.
    pub component_bytes: u64,
    /// Start of the upload to its answer.
    pub stored: Sample,
    /// Start of the upload to the deploy's answer.
    pub deployed: Sample,
    /// Start of the upload to the first answer of the new revision.
    pub answered: Sample,
}

/// Section 5's results.
pub type Uploads = Section<FunctionUploads>;

/// Runs the section.
pub async fn measure_section(paths: &Paths, plan: &Plan) -> Uploads {
    Section::run("uploads", measure(paths, plan)).await
}

impl Uploads {
    /// The section, as markdown.
    pub fn render(&self) -> String {
        let mut out = String::from("## 5. Upload\n\n");
        let _ = writeln!(
            out,
            "One `host run --admin-token-file ...` (CPU {SERVER_CPU}). For each function the \
             harness (CPU {CLIENT_CPU}) uploads a new build (`POST /v1/components`: the same \
             program with one more custom section, so new bytes compiled from scratch), deploys \
             it as the function's next revision (`PUT /v1/functions/NAME`), then asks the \
             function once on a new connection. Times run from the start of the upload: until \
             the upload is answered (stored, compiled and checked), until the deploy is \
             answered (the revision warmed, the state written durably, the table swapped), and \
             until the first answer of the new revision (checked: 200 and the expected body).\n"
        );
        if let Some(failure) = self.failure_line() {
            let _ = writeln!(out, "{failure}");
            return out;
        }
        let mut table = Table::new(&[
            "function",
            "component",
            "uploads",
            "stored and checked p50",
            "deployed p50",
            "first answer p50",
            "first answer max",
        ]);
        for f in &self.functions {
            table.row(vec![
                f.language.label().to_owned(),
                format!("{:.1} KiB", f.component_bytes as f64 / 1024.0),
                f.answered.len().to_string(),
                format_latency_or_dash(f.stored.p50()),
                format_latency_or_dash(f.deployed.p50()),
                format_latency_or_dash(f.answered.p50()),
                format_latency_or_dash(f.answered.max()),
            ]);
        }
        out.push_str(&table.render());
        out.push('\n');
        out
    }
}

async fn measure(paths: &Paths, plan: &Plan) -> anyhow::Result<Vec<FunctionUploads>> {
    let dir = Paths::fresh_dir(&paths.work, "upload")?;
    let token = dir.join("admin-token");
    std::fs::write(&token, TOKEN)?;
    let manifest = dir.join("upload.toml");
    Manifest {
        function: vec![Function::new("hello", &paths.hello_wasm, "/hello")],
    }
    .write(&manifest)?;
    let data = Paths::fresh_dir(&paths.work, "upload-data")?;
    let token = token.to_string_lossy().into_owned();
    let mut server =
        Server::host_with(paths, &manifest, &data, &["--admin-token-file", &token]).await?;
    server.wait_ready().await?;
    let admin = server.admin()?;

    let mut results = Vec::new();
    for language in Language::REBUILT {
        let rounds = match language {
            Language::Rust => plan.reloads_rust,
            _ => plan.reloads_js,
        };
        eprintln!("    {} ({rounds} uploads)", language.label());
        let original = std::fs::read(language.component(paths))?;
        let name = &language.function();
        let (mut stored, mut deployed, mut answered) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let build = Bytes::from(variant(&original, 1000 + round));
            let start = Instant::now();
            let (status, body) = call(
                admin,
                Method::POST,
                "/v1/components",
                TOKEN,
                build,
                RELOAD_TIMEOUT,
            )
            .await?;
            if status != StatusCode::CREATED {
                bail!(
                    "the upload was answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            stored.push(start.elapsed());
            let uploaded: serde_json::Value = serde_json::from_slice(&body)?;
            let digest = uploaded["component"].as_str().context("no digest")?;
            let definition = format!(
                "component = {digest:?}\nroutes = [{:?}]\n",
                &language.route()
            );
            let path = format!("/v1/functions/{name}");
            let (status, body) = call(
                admin,
                Method::PUT,
                &path,
                TOKEN,
                definition.into(),
                RELOAD_TIMEOUT,
            )
            .await?;
            if status != StatusCode::CREATED {
                bail!(
                    "the deploy was answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            deployed.push(start.elapsed());
            let answer = Connection::open(server.addr)
                .await?
                .get(&language.route())
                .await?;
            answered.push(start.elapsed());
            answer.expect(&language.body())?;
        }
        results.push(FunctionUploads {
            language,
            component_bytes: original.len() as u64,
            stored: Sample::new(stored),
            deployed: Sample::new(deployed),
            answered: Sample::new(answered),
        });
    }
    // Give the last answer's log lines time to land.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(results)
}
