//! What the commands that change a running host share: where its admin API
//! is, the token, and one HTTP client that turns a refusal into an error
//! carrying the server's reason.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The admin API's address when neither `--admin` nor `SHOAL_ADMIN` says.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9464";

/// A request body.
pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Where the admin API is, and how to be let in.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// The running host's admin API (`host run --admin-listen`).
    #[arg(long, env = "SHOAL_ADMIN", value_name = "URL", default_value = DEFAULT_ADMIN_URL)]
    admin: Uri,

    /// The admin token (`host run --admin-token-file`).
    #[arg(
        long,
        env = "SHOAL_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

/// A client of one host's admin API.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Body>,
}

impl AdminClient {
    /// A client of the admin API `args` name.
    pub fn new(args: &AdminArgs) -> anyhow::Result<Self> {
        if args.admin.scheme_str() != Some("http") {
            bail!(
                "--admin {}: the admin API speaks plain HTTP (http://HOST:PORT)",
                args.admin
            );
        }
        Ok(Self {
            base: args.admin.to_string().trim_end_matches('/').to_owned(),
            token: args.token.clone(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// `GET path`, answered with JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.send(Method::GET, path, None, empty()).await
    }

    /// `method path` with a JSON body.
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let bytes = Bytes::from(serde_json::to_vec(body)?);
        self.send(method, path, Some("application/json"), full(bytes))
            .await
    }

    /// `method path` with `body` of `content_type`, answered with JSON; a
    /// refusal is an error carrying the server's reason.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Body,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder().method(method.clone()).uri(&url);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(body).context("cannot build the request")?;
        let response = self
            .client
            .request(request)
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("the admin API's answer broke off")?
            .to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(
            |_| serde_json::json!({ "error": String::from_utf8_lossy(&body).trim() }),
        );
        if !status.is_success() {
            let reason = value["error"].as_str().unwrap_or("no reason given");
            bail!("{method} {path}: {}: {reason}", describe(status));
        }
        Ok(value)
    }
}

fn describe(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    )
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// A body of `bytes`.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Runs `future` on a small runtime of its own.
pub fn block_on<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}
