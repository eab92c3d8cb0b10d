//! The host's admin API as the harness reads it: `GET /v1/functions` and
//! `GET /v1/status`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::client::Connection;
use crate::plan::SCALE_TO_ZERO_TIMEOUT;

/// The admin listing's path.
const FUNCTIONS_PATH: &str = "/v1/functions";

/// The admin status's path.
const STATUS_PATH: &str = "/v1/status";

/// The host's status (the fields the harness uses).
#[derive(Debug, Clone, Deserialize)]
struct Status {
    /// How many functions are warm.
    warm: u64,
}

/// The state of a function that is compiled and holds no instance: scaled
/// to zero.
pub const SCALED_TO_ZERO: &str = "compiled";

/// One function as the admin API shows it (the fields the harness uses).
#[derive(Debug, Clone, Deserialize)]
pub struct FunctionStatus {
    /// Its name.
    pub name: String,
    /// `registered`, `compiling`, `compiled`, `warm` or `failed`.
    pub state: String,
    /// Cold starts since the host started.
    pub cold_starts: u64,
    /// Requests being served.
    pub in_flight: u64,
    /// Its component's digest (`sha256:...`).
    #[serde(default)]
    pub component: Option<String>,
}

impl FunctionStatus {
    /// Whether it is scaled to zero with nothing in flight.
    pub fn is_scaled_to_zero(&self) -> bool {
        self.state == SCALED_TO_ZERO && self.in_flight == 0
    }
}

/// A keep-alive client of one host's admin API.
pub struct Admin {
    addr: SocketAddr,
    connection: Option<Connection>,
}

impl Admin {
    /// The admin API at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            connection: None,
        }
    }

    /// Every function, now.
    pub async fn functions(&mut self) -> anyhow::Result<Vec<FunctionStatus>> {
        self.get(FUNCTIONS_PATH).await
    }

    /// Waits until no function is warm, asking the host's status (a few
    /// bytes, where a listing of 100,000 functions is 57 MB) every `poll`,
    /// for at most [`SCALE_TO_ZERO_TIMEOUT`].
    pub async fn wait_none_warm(&mut self, poll: Duration) -> anyhow::Result<()> {
        until_none_warm(poll, async || {
            let status: Status = self.get(STATUS_PATH).await?;
            Ok(((), status.warm as usize))
        })
        .await
    }

    async fn get<T: serde::de::DeserializeOwned>(&mut self, path: &str) -> anyhow::Result<T> {
        let connection = match &mut self.connection {
            Some(connection) if !connection.is_closed() => connection,
            slot => slot.insert(Connection::open(self.addr).await?),
        };
        let answer = connection.get(path).await?;
        if !answer.status.is_success() {
            bail!("GET {path} answered {}", answer.status);
        }
        serde_json::from_slice(&answer.body)
            .with_context(|| format!("GET {path} answered unexpected JSON"))
    }

    /// Function `name`, now.
    pub async fn function(&mut self, name: &str) -> anyhow::Result<FunctionStatus> {
        self.functions()
            .await?
            .into_iter()
            .find(|f| f.name == name)
            .with_context(|| format!("the admin API lists no function `{name}`"))
    }

    /// Waits until every function for which `include` holds is scaled to
    /// zero; asks every `poll`, for at most [`SCALE_TO_ZERO_TIMEOUT`].
    /// Returns the last listing.
    pub async fn wait_scaled_to_zero(
        &mut self,
        poll: Duration,
        include: impl Fn(&FunctionStatus) -> bool,
    ) -> anyhow::Result<Vec<FunctionStatus>> {
        until_none_warm(poll, async || {
            let functions = self.functions().await?;
            let warm = functions
                .iter()
                .filter(|f| include(f) && !f.is_scaled_to_zero())
                .count();
            Ok((functions, warm))
        })
        .await
    }
}

/// Asks `look` every `poll` until it finds no function warm, for at most
/// [`SCALE_TO_ZERO_TIMEOUT`]; `look` returns what it read and how many
/// functions are still warm. Returns the last reading.
async fn until_none_warm<T>(
    poll: Duration,
    mut look: impl AsyncFnMut() -> anyhow::Result<(T, usize)>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + SCALE_TO_ZERO_TIMEOUT;
    loop {
        let (read, warm) = look().await?;
        if warm == 0 {
            return Ok(read);
        }
        if Instant::now() > deadline {
            bail!("{warm} functions had not scaled to zero after {SCALE_TO_ZERO_TIMEOUT:?}");
        }
        tokio::time::sleep(poll).await;
    }
}
