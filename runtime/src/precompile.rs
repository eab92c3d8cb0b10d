//! Compiling components ahead of time, for a host that runs elsewhere
//! (`host package` puts the artifacts in a container image).
//!
//! The engine is configured exactly as [`Runtime`](crate::Runtime)'s, so
//! that a host on a machine like this one finds the artifacts under its own
//! engine key and compiles nothing. A host whose CPU has other features
//! computes another key, and compiles the component itself (see
//! [`crate::cache`]). [`TargetCpu::Portable`] compiles for a baseline every
//! CPU of the architecture has: such artifacts run anywhere, but carry the
//! baseline's key.

use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::artifact::check_serves_http;
use crate::cache::{ArtifactCache, engine_key};
use crate::engine::{engine_config, linker};
use crate::error::{LoadError, RuntimeError};
use crate::source::ComponentSource;
use crate::store::StoreState;

/// The CPU that precompiled artifacts are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetCpu {
    /// This machine's CPU, with every feature wasmtime detects on it: what
    /// `host run` compiles for here.
    Native,
    /// A baseline every CPU of this architecture has: x86-64-v2 (SSE4.2,
    /// POPCNT) on x86-64, the base architecture elsewhere.
    Portable,
}

/// Features of x86-64-v2 that Cranelift uses, beyond the base x86-64
/// (SSE2).
const X86_64_V2: [&str; 5] = [
    "has_sse3",
    "has_ssse3",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
];

/// Compiles components into a folder of artifacts, in the cache's format.
pub struct Precompiler {
    engine: Engine,
    linker: Linker<StoreState>,
    out: ArtifactCache,
}

impl Precompiler {
    /// A precompiler for `cpu`, writing to `out_dir` (created if needed).
    pub fn new(out_dir: &Path, cpu: TargetCpu) -> Result<Self, RuntimeError> {
        let mut config = engine_config(None);
        if cpu == TargetCpu::Portable {
            // Naming the target turns off the detection of this CPU's
            // features.
            let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
            config.target(&triple).map_err(RuntimeError::Engine)?;
            if cfg!(target_arch = "x86_64") {
                for flag in X86_64_V2 {
                    // SAFETY: this engine only compiles. A host that loads
                    // its artifacts checks that its CPU has every feature
                    // they were compiled with, and refuses them otherwise.
                    #[allow(unsafe_code)]
                    unsafe {
                        config.cranelift_flag_enable(flag);
                    }
                }
            }
        }
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
