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
//!
//! Then the cost of a change in a host that serves many functions already:
//! one host per case, the hello registered many times in its manifest (as
//! in section 3) or deployed many times through the admin API, and deploys
//! and traffic changes of one more function, each timed from the call to
//! its answer.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, StatusCode};

use crate::client::{Connection, call};
use crate::cold_start::Language;
use crate::density;
use crate::manifest::{Function, Manifest};
use crate::plan::{CLIENT_CPU, Plan, RELOAD_TIMEOUT, SERVER_CPU};
use crate::reload::variant;
use crate::report::{Table, format_count, format_latency_or_dash};
use crate::section::Section;
use crate::servers::{HELLO_BODY, Paths, Server};
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

/// Deploys timed at each function count.
const DEPLOYS: usize = 20;

/// Traffic changes timed at each function count.
const SPLITS: usize = 10;

/// The function the deploys at scale make.
const DEPLOYED: &str = "deployed";

/// Functions deployed through the admin API, untimed, before the timed
/// changes of the last case.
const DEPLOYED_BEFORE: usize = 10_000;

/// Changes to one function of a host that serves many.
#[derive(Debug, Clone)]
pub struct ChangesAtScale {
    /// Functions in the host's manifest.
    pub manifest: usize,
    /// Functions deployed through the admin API before the timed changes.
    pub deployed_before: usize,
    /// Each deploy, from the call to its answer.
    pub deployed: Sample,
    /// Each traffic change, from the call to its answer.
    pub split: Sample,
}

/// Section 5's results.
#[derive(Debug, Clone)]
pub struct Uploads {
    /// A new build of each hello, uploaded and deployed.
    pub builds: Section<FunctionUploads>,
    /// Deploys and traffic changes at each function count.
    pub at_scale: Section<ChangesAtScale>,
}

/// Runs the section.
pub async fn measure_section(paths: &Paths, plan: &Plan) -> Uploads {
    Uploads {
        builds: Section::run("uploads", measure(paths, plan)).await,
        at_scale: Section::run("deploys at scale", measure_at_scale(paths, plan)).await,
    }
}

impl Uploads {
    /// The section, as markdown.
    pub fn render(&self) -> String {
        let mut out = self.builds.render();
        out.push_str(&self.at_scale.render());
        out
    }
}

impl Section<FunctionUploads> {
    /// The uploads' part, as markdown.
    fn render(&self) -> String {
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

impl Section<ChangesAtScale> {
    /// The changes at scale, as markdown.
    fn render(&self) -> String {
        let mut out = String::from("### Changes in a host that serves many functions\n\n");
        let _ = writeln!(
            out,
            "One `host run --admin-token-file ...` (CPU {SERVER_CPU}) per row, its manifest \
             registering the Rust hello that many times (`f0`…, as in section 3). The harness \
             (CPU {CLIENT_CPU}) uploads the hello once; in the last row it first deploys it as \
             {DEPLOYED_BEFORE} functions through the admin API (`d0`…, untimed). Then it \
             deploys {DEPLOYS} revisions of one more function `{DEPLOYED}` (`PUT \
             /v1/functions/{DEPLOYED}`: the same component, one environment variable changed \
             each time, so nothing compiles, and nothing warms since nothing called it), then \
             changes its traffic split between its last two revisions {SPLITS} times. Each is \
             timed from the call to its answer (the state written and synced, the table \
             swapped). Then `/{DEPLOYED}`, the manifest's last function and the last one \
             deployed before are asked once each (checked: 200 and the hello's body).\n"
        );
        if let Some(failure) = self.failure_line() {
            let _ = writeln!(out, "{failure}");
            return out;
        }
        let mut table = Table::new(&[
            "functions in the manifest",
            "deployed before",
            "deploys",
            "deploy p50",
            "deploy max",
            "traffic changes",
            "traffic change p50",
            "traffic change max",
        ]);
        for point in &self.functions {
            table.row(vec![
                format_count(point.manifest as u64),
                format_count(point.deployed_before as u64),
                point.deployed.len().to_string(),
                format_latency_or_dash(point.deployed.p50()),
                format_latency_or_dash(point.deployed.max()),
                point.split.len().to_string(),
                format_latency_or_dash(point.split.p50()),
                format_latency_or_dash(point.split.max()),
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

/// Deploys and traffic changes in a host of one function, of the largest
/// count of section 3 in its manifest, and of [`DEPLOYED_BEFORE`] deployed
/// through the admin API.
async fn measure_at_scale(paths: &Paths, plan: &Plan) -> anyhow::Result<Vec<ChangesAtScale>> {
    let largest = plan.densities.iter().copied().max().unwrap_or(1);
    let mut points = Vec::new();
    for (manifest, deployed_before) in [(1, 0), (largest, 0), (1, DEPLOYED_BEFORE)] {
        eprintln!("    {manifest} in the manifest, {deployed_before} deployed");
        let point = changes_at(paths, manifest, deployed_before)
            .await
            .with_context(|| {
                format!("with {manifest} functions in the manifest, {deployed_before} deployed")
            })?;
        points.push(point);
    }
    Ok(points)
}

async fn changes_at(
    paths: &Paths,
    functions: usize,
    deployed_before: usize,
) -> anyhow::Result<ChangesAtScale> {
    let dir = Paths::fresh_dir(&paths.work, "deploy-scale")?;
    let token = dir.join("admin-token");
    std::fs::write(&token, TOKEN)?;
    let token = token.to_string_lossy().into_owned();
    let manifest = density::write_manifest(paths, functions)?;
    let data = Paths::fresh_dir(&paths.work, "deploy-scale-data")?;
    let mut server =
        Server::host_with(paths, &manifest, &data, &["--admin-token-file", &token]).await?;
    server.wait_ready().await?;
    let admin = server.admin()?;
    let send = async |method: Method, path: &str, body: Bytes, expected: StatusCode| {
        let (status, answer) = call(admin, method, path, TOKEN, body, RELOAD_TIMEOUT).await?;
        if status != expected {
            bail!(
                "{path} was answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        anyhow::Ok(serde_json::from_slice::<serde_json::Value>(&answer)?)
    };

    let hello = std::fs::read(&paths.hello_wasm)?;
    // A fresh data dir: the upload is new, 201.
    let uploaded = send(
        Method::POST,
        "/v1/components",
        hello.into(),
        StatusCode::CREATED,
    )
    .await?;
    let digest = uploaded["component"].as_str().context("no digest")?;

    for i in 0..deployed_before {
        let definition = format!("component = {digest:?}\nroutes = [\"/d{i}\"]\n");
        let path = format!("/v1/functions/d{i}");
        send(Method::PUT, &path, definition.into(), StatusCode::CREATED).await?;
    }
    let function = format!("/v1/functions/{DEPLOYED}");
    let (mut deployed, mut revisions) = (Vec::new(), Vec::new());
    for round in 0..DEPLOYS {
        let definition = format!(
            "component = {digest:?}\nroutes = [\"/{DEPLOYED}\"]\nenv = {{ ROUND = \"{round}\" }}\n"
        );
        let start = Instant::now();
        let answer = send(
            Method::PUT,
            &function,
            definition.into(),
            StatusCode::CREATED,
        )
        .await?;
        deployed.push(start.elapsed());
        let revision = answer["revision"].as_str().context("no revision")?;
        revisions.push(revision.to_owned());
    }
    let [.., older, newer] = &revisions[..] else {
        bail!("fewer than two revisions deployed");
    };
    let traffic = format!("{function}/traffic");
    let mut split = Vec::new();
    for round in 0..SPLITS {
        // Each differs from the one before: a change, not a no-op.
        let percent = 40 + 10 * (round % 2);
        let body = format!(
            r#"{{"split": {{"{older}": {percent}, "{newer}": {}}}}}"#,
            100 - percent
        );
        let start = Instant::now();
        send(Method::PUT, &traffic, body.into(), StatusCode::OK).await?;
        split.push(start.elapsed());
    }
    let mut connection = Connection::open(server.addr).await?;
    let mut asked = vec![format!("/{DEPLOYED}"), format!("/f{}", functions - 1)];
    if deployed_before > 0 {
        asked.push(format!("/d{}", deployed_before - 1));
    }
    for path in asked {
        let answer = connection.get(&path).await?;
        answer
            .expect(HELLO_BODY)
            .with_context(|| format!("GET {path}"))?;
    }
    Ok(ChangesAtScale {
        manifest: functions,
        deployed_before,
        deployed: Sample::new(deployed),
        split: Sample::new(split),
    })
}
