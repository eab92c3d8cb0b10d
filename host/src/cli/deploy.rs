//! `host deploy`: upload a component to a running host and deploy it as a
//! function's next revision, with all its traffic.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;

use super::admin_client::{AdminArgs, AdminClient, Body, block_on, full};

/// How much of a component one chunk of its upload carries.
const CHUNK: usize = 256 << 10;

/// Upload a component and deploy it as a function's next revision.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The component (`.wasm`).
    component: PathBuf,

    /// The function's name.
    #[arg(long, value_name = "NAME")]
    name: String,

    /// A route it serves (`/hello`, `/api/...`); repeat for more. Overrides
    /// the routes of `--file`.
    #[arg(long = "route", value_name = "ROUTE")]
    routes: Vec<String>,

    /// An environment variable for the guest; repeat for more. Added to
    /// those of `--file`.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,

    /// A definition with more fields (limits, allowed hosts...): the fields
    /// of a manifest's `[[function]]` table, without `component`.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,

    #[command(flatten)]
    admin: AdminArgs,
}

impl DeployArgs {
    /// Uploads, deploys, and prints the new revision.
    pub fn execute(self) -> anyhow::Result<()> {
        let mut definition = match &self.file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("{} is not a TOML table", file.display()))?
            }
            None => toml::Table::new(),
        };
        if definition.contains_key("component") {
            bail!("the definition must not name a component: `host deploy` uploads it");
        }
        definition.insert("name".to_owned(), self.name.clone().into());
        if !self.routes.is_empty() {
            let routes = self.routes.iter().cloned().map(toml::Value::from).collect();
            definition.insert("routes".to_owned(), toml::Value::Array(routes));
        }
        if !self.env.is_empty() {
            let env = definition
                .entry("env")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(env) = env.as_table_mut() else {
                bail!("`env` in the definition must be a table");
            };
            for (key, value) in &self.env {
                env.insert(key.clone(), value.clone().into());
            }
        }
        let bytes = std::fs::read(&self.component)
            .with_context(|| format!("cannot read {}", self.component.display()))?;
        let client = AdminClient::new(&self.admin)?;
        block_on(async move {
            let uploaded = upload(&client, Bytes::from(bytes)).await?;
            let digest = uploaded["component"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            definition.insert("component".to_owned(), digest.clone().into());
            let text = toml::to_string(&definition)?;
            let deployed = client
                .send(
                    Method::PUT,
                    &format!("/v1/functions/{}", self.name),
                    Some("application/toml"),
                    full(Bytes::from(text)),
                )
                .await?;
            println!(
                "deployed {} ({digest}) with all the traffic of function {}: {}",
                deployed["revision"].as_str().unwrap_or("?"),
                self.name,
                deployed["change"].as_str().unwrap_or("")
            );
            Ok(())
        })
    }
}

/// Uploads `bytes`, showing the progress on a terminal.
async fn upload(client: &AdminClient, bytes: Bytes) -> anyhow::Result<serde_json::Value> {
    let total = bytes.len() as u64;
    let sent = Arc::new(AtomicU64::new(0));
    let chunks: Vec<Bytes> = (0..bytes.len())
        .step_by(CHUNK)
        .map(|at| bytes.slice(at..(at + CHUNK).min(bytes.len())))
        .collect();
    let counted = sent.clone();
    let stream = futures::stream::iter(chunks.into_iter().map(move |chunk| {
        counted.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(chunk))
    }));
    let body: Body = StreamBody::new(stream).boxed();
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(show_progress(sent, total)));
    let answer = client
        .send(
            Method::POST,
            "/v1/components",
            Some("application/wasm"),
            body,
        )
        .await;
    if let Some(progress) = progress {
        progress.abort();
        eprint!("\r\x1b[K");
    }
    answer
}

/// Prints how much of the upload was sent, then that the host compiles.
async fn show_progress(sent: Arc<AtomicU64>, total: u64) {
    let mb = |bytes: u64| bytes as f64 / 1e6;
    loop {
        let now = sent.load(Ordering::Relaxed);
        if now >= total {
            eprint!(
                "\r\x1b[Kuploaded {:.1} MB; the host is compiling it...",
                mb(total)
            );
        } else {
            eprint!("\r\x1b[Kuploading {:.1} / {:.1} MB", mb(now), mb(total));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .filter(|(key, _)| !key.is_empty())
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}
