//! Compiling components ahead of time, for a host that runs elsewhere
//! (`host package` puts the artifacts in a container image).
//!
//! The engine is configured exactly as [`Runtime`](crate::Runtime)'s for
//! the same [`TargetCpu`], so that a host with that setting on a machine
//! like this one finds the artifacts under its own engine key and compiles
//! nothing. A host whose engine differs (a CPU with other features, for
//! [`TargetCpu::Native`]) computes another key, and compiles the component
//! itself (see [`crate::cache`]).

use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::artifact::check_serves_http;
use crate::cache::{ArtifactCache, engine_key};
use crate::engine::{TargetCpu, engine_config, linker};
use crate::error::{LoadError, RuntimeError};
use crate::source::ComponentSource;
use crate::store::StoreState;

/// Compiles components into a folder of artifacts, in the cache's format.
pub struct Precompiler {
    engine: Engine,
    linker: Linker<StoreState>,
    out: ArtifactCache,
}

impl Precompiler {
    /// A precompiler for `cpu`, writing to `out_dir` (created if needed).
    pub fn new(out_dir: &Path, cpu: TargetCpu) -> Result<Self, RuntimeError> {
        let config = engine_config(None, cpu).map_err(RuntimeError::Engine)?;
        let engine = Engine::new(&config).map_err(RuntimeError::Engine)?;
        let linker = linker(&engine).map_err(RuntimeError::Engine)?;
        let out =
            ArtifactCache::open(out_dir, None, &engine).map_err(|source| RuntimeError::Cache {
                path: out_dir.to_owned(),
                source,
            })?;
        Ok(Self {
            engine,
            linker,
            out,
        })
    }

    /// The key that names this engine's settings in artifact file names.
    pub fn engine_key(&self) -> String {
        engine_key(&self.engine)
    }

    /// Compiles the component of `source`, checks that it serves HTTP, and
    /// writes its artifact; returns the artifact's path. CPU-heavy.
    pub fn compile(&self, source: &ComponentSource) -> Result<PathBuf, LoadError> {
        let compile_error = |message| LoadError::Compile {
            path: source.path.clone(),
            message,
        };
        let bytes = source.bytes()?;
        let component = Component::from_binary(&self.engine, &bytes)
            .map_err(|e| compile_error(format!("{e:#}")))?;
        check_serves_http(&self.linker, &component)?;
        let serialized = component
            .serialize()
            .map_err(|e| compile_error(format!("cannot serialize it: {e:#}")))?;
        self.out
            .publish(&source.digest, &serialized)
            .map_err(|e| compile_error(format!("cannot write its artifact: {e}")))
    }
}
