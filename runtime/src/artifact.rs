//! A component compiled for this engine: the "compiled" stage of a
//! function's life, between its declaration and its first (cold) request.
//!
//! Compiling checks everything that can be wrong with a component (it is a
//! component, it validates and compiles, its imports are satisfied, it
//! exports `wasi:http/incoming-handler`), so that a bad component is refused
//! when it is loaded, never when a request arrives. The artifact stays on
//! disk; warming a function maps it ([`Artifact::component`]), and functions
//! that share a component share the mapping while any of them is warm. When
//! the last of them scales to zero, the mapping goes with it.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::cache::{self, ArtifactCache, Lookup, VerifiedFile};
use crate::error::LoadError;
use crate::store::StoreState;

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Compiled now; the artifact was written to the cache.
    Compiled,
    /// Found in the artifact cache; not compiled.
    Cached,
    /// The cached artifact was damaged or stale; compiled again.
    Recompiled,
}

/// A compiled component, ready to be warmed into functions.
pub struct Artifact {
    source: Source,
    mapped: Mutex<Weak<Component>>,
    provenance: Provenance,
    elapsed: Duration,
}

enum Source {
    /// The usual case: a checked artifact file, mapped on demand.
    File(VerifiedFile),
    /// The cache could not be written: the code stays in memory.
    Memory(Arc<Component>),
}

impl Artifact {
    /// Compiles the component at `path`, or finds its artifact in the cache,
    /// and checks that it can serve HTTP here.
    pub(crate) fn compile(
        engine: &Engine,
        linker: &Linker<StoreState>,
        cache: &ArtifactCache,
        path: &Path,
    ) -> Result<Self, LoadError> {
        let start = Instant::now();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        check_is_component(&bytes, path)?;
        let artifact_path = cache.artifact_path(&bytes);

        // Why a cached artifact could not be used, if there was one.
        let discarded = match cache.lookup(&artifact_path) {
            Lookup::Miss => None,
            Lookup::Unusable(reason) => Some(reason),
            Lookup::Hit(file) => match cache::map(engine, &file) {
                Ok(component) => {
                    check_serves_http(linker, &component)?;
                    return Ok(Self::new(Source::File(file), Provenance::Cached, start));
                }
                // Intact, but not something this engine can run.
                Err(e) => Some(format!("wasmtime refuses it: {e:#}")),
            },
        };
        let provenance = match discarded {
            None => Provenance::Compiled,
            Some(reason) => {
                tracing::warn!(
                    artifact = %artifact_path.display(),
                    %reason,
                    "discarding a cached artifact; compiling again"
                );
                Provenance::Recompiled
            }
        };

        let component = Component::from_binary(engine, &bytes).map_err(|e| LoadError::Compile {
            path: path.to_owned(),
            message: format!("{e:#}"),
        })?;
        check_serves_http(linker, &component)?;
        let source = match cache.store(&component, &artifact_path) {
            Ok(file) => Source::File(file),
            Err(error) => {
                // It still runs; it only cannot leave memory when idle, and
                // the next start compiles it again.
                tracing::warn!(
                    artifact = %artifact_path.display(),
                    %error,
                    "cannot write the compiled artifact to the cache; keeping it in memory"
                );
                Source::Memory(Arc::new(component))
            }
        };
        Ok(Self::new(source, provenance, start))
    }

    fn new(source: Source, provenance: Provenance, start: Instant) -> Self {
        Self {
            source,
            mapped: Mutex::new(Weak::new()),
            provenance,
            elapsed: start.elapsed(),
        }
    }

    /// Compiled now, or found in the cache.
    pub fn provenance(&self) -> Provenance {
        self.provenance
    }

    /// Time spent compiling, or finding and checking the cached artifact.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The component, mapped from the artifact if no warm function holds
    /// the mapping already.
    pub(crate) fn component(&self, engine: &Engine) -> Result<Arc<Component>, LoadError> {
        let file = match &self.source {
            Source::Memory(component) => return Ok(component.clone()),
            Source::File(file) => file,
        };
        let mut mapped = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(component) = mapped.upgrade() {
            return Ok(component);
        }
        if !file.unchanged() {
            return Err(LoadError::ArtifactChanged {
                path: file.path.clone(),
            });
        }
        let component = cache::map(engine, file).map_err(|e| LoadError::Compile {
            path: file.path.clone(),
            message: format!("its artifact cannot be mapped: {e:#}"),
        })?;
        let component = Arc::new(component);
        *mapped = Arc::downgrade(&component);
        Ok(component)
    }
}

/// Resolves the component's imports against the linker and finds its
/// `wasi:http/incoming-handler` export.
pub(crate) fn check_serves_http(
    linker: &Linker<StoreState>,
    component: &Component,
) -> Result<ProxyPre<StoreState>, LoadError> {
    let instance_pre = linker
        .instantiate_pre(component)
        .map_err(|e| LoadError::Link {
            message: format!("{e:#}"),
        })?;
    ProxyPre::new(instance_pre).map_err(|e| LoadError::NotHttpHandler {
        message: format!("{e:#}"),
    })
}

/// The cheap checks, before any compiling: the file can be read and is a
/// component (not a core module, not something else).
pub fn precheck(path: &Path) -> Result<(), LoadError> {
    use std::io::Read;
    let read_error = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let mut header = Vec::with_capacity(8);
    std::fs::File::open(path)
        .and_then(|file| file.take(8).read_to_end(&mut header))
        .map_err(read_error)?;
    check_is_component(&header, path)
}

/// Refuses what is not a component with a precise reason, before wasmtime
/// gives a generic parse error.
fn check_is_component(bytes: &[u8], path: &Path) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];
    let path = path.to_owned();
    if !bytes.starts_with(MAGIC) || bytes.len() < 8 {
        return Err(LoadError::NotWasm { path });
    }
    if bytes[4..8] == CORE_MODULE_VERSION {
        return Err(LoadError::CoreModule { path });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_components_are_refused_with_the_reason() {
        let path = Path::new("f.wasm");
        assert!(matches!(
            check_is_component(b"hello world", path),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            check_is_component(b"\0asm", path),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            check_is_component(b"\0asm\x01\0\0\0", path),
            Err(LoadError::CoreModule { .. })
        ));
        assert!(check_is_component(b"\0asm\x0d\0\x01\0", path).is_ok());
    }
}
