//! Host manifests written for a benchmark (see the manifest section of the
//! repository's README).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

/// A manifest: its `[[function]]` tables.
#[derive(Debug, Serialize)]
pub struct Manifest {
    /// The functions, in order.
    pub function: Vec<Function>,
}

/// One `[[function]]` table.
#[derive(Debug, Clone, Serialize)]
pub struct Function {
    /// Its name.
    pub name: String,
    /// The component (an absolute path).
    pub component: PathBuf,
    /// Its routes.
    pub routes: Vec<String>,
    /// How long it stays warm without traffic, e.g. `"20ms"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// How many requests one instance may serve in sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_instance_reuse: Option<u64>,
}

impl Function {
    /// Function `name` serving `component` at the exact path `route`.
    pub fn new(name: impl Into<String>, component: &Path, route: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            component: component.to_owned(),
            routes: vec![route.into()],
            idle_timeout: None,
            max_instance_reuse: None,
        }
    }

    /// The same, scaling to zero after `timeout` without traffic.
    pub fn idle_timeout(mut self, timeout: &str) -> Self {
        self.idle_timeout = Some(timeout.to_owned());
        self
    }

    /// The same, each instance serving up to `count` requests.
    pub fn max_instance_reuse(mut self, count: u64) -> Self {
        self.max_instance_reuse = Some(count);
        self
    }
}

impl Manifest {
    /// Writes the manifest to `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string(self).context("cannot write a manifest as TOML")?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}
