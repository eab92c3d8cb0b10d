//! A component compiled for this engine: the "compiled" stage of a
//! function's life, between its declaration and its first (cold) request.
//!
//! Compiling checks everything that can be wrong with a component (it is a
//! component, it validates and compiles, its imports are satisfied, it
//! exports `wasi:http/incoming-handler`), so that a bad component is refused
//! when it is loaded, never when a request arrives. The artifact stays in a
//! private file (see [`crate::cache`]); warming a function maps and links
//! it ([`Artifact::map`]), and functions that share a component share the
//! linked mapping while any of them is warm. When the last of them scales
//! to zero the mapping joins the code kept for a while ([`crate::kept`]),
//! and when no function uses the artifact any more, the mapping and the
//! file go.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::cache::{ArtifactCache, Lookup, Origin, PrivateArtifact};
use crate::error::LoadError;
use crate::kept::KeptCode;
use crate::source::{ComponentSource, Digest};
use crate::store::StoreState;

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Compiled now; the artifact was written to the cache.
    Compiled,
    /// Found in the artifact cache; not compiled.
    Cached,
    /// Found in the folder of precompiled artifacts; not compiled.
    Precompiled,
    /// The cached artifact was damaged, or not this component's; compiled
    /// again.
    Recompiled,
    /// The folder of precompiled artifacts holds this component's artifact
    /// only for another engine (other CPU features or engine settings);
    /// compiled here.
    PrecompiledElsewhere,
}

/// A component mapped and linked: what a warm function's instances are
/// made from.
pub(crate) type Linked = Arc<ProxyPre<StoreState>>;

/// Where linked components go when no warm function holds them.
pub(crate) type Kept = KeptCode<Linked>;

/// A compiled component, ready to be warmed into functions.
pub struct Artifact {
    digest: Digest,
    code: Code,
    mapped: Mutex<Weak<ProxyPre<StoreState>>>,
    /// Where the mapping goes when no warm function holds it.
    kept: Arc<Kept>,
    provenance: Provenance,
    elapsed: Duration,
}

enum Code {
    /// The usual case: a private file, mapped on demand.
    File(PrivateArtifact),
    /// No file could be written: the code stays in memory, linked.
    Memory(Linked),
}

impl Artifact {
    /// Compiles the component of `source`, or finds its artifact in the
    /// cache, and checks that it can serve HTTP here.
    pub(crate) fn compile(
        engine: &Engine,
        linker: &Linker<StoreState>,
        cache: &ArtifactCache,
        kept: &Arc<Kept>,
        source: &ComponentSource,
    ) -> Result<Self, LoadError> {
        let start = Instant::now();
        let compile_error = |message| LoadError::Compile {
            path: source.path.clone(),
            message,
        };

        let provenance = match cache.lookup(&source.digest) {
            Lookup::Miss => Provenance::Compiled,
            Lookup::Foreign(path) => {
                tracing::debug!(artifact = %path.display(), "a precompiled artifact for another engine");
                Provenance::PrecompiledElsewhere
            }
            Lookup::Unusable(path, reason) => discard(&path, &reason),
            Lookup::Hit(private, origin) => match private.map(engine) {
                Ok(component) => {
                    check_serves_http(linker, &component)?;
                    let provenance = match origin {
                        Origin::Cache => Provenance::Cached,
                        Origin::Precompiled => Provenance::Precompiled,
                    };
                    return Ok(Self::new(
                        source,
                        Code::File(private),
                        kept,
                        provenance,
                        start,
                    ));
                }
                // Intact, but not something this engine can run.
                Err(e) => discard(
                    &cache.location(origin, &source.digest),
                    &format!("wasmtime refuses it: {e:#}"),
                ),
            },
        };

        let bytes = source.bytes()?;
        let component =
            Component::from_binary(engine, &bytes).map_err(|e| compile_error(format!("{e:#}")))?;
        let linked = check_serves_http(linker, &component)?;
        let serialized = component
            .serialize()
            .map_err(|e| compile_error(format!("cannot serialize it: {e:#}")))?;
        let code = match cache.store(&source.digest, &serialized) {
            Ok(private) => Code::File(private),
            Err(error) => {
                // It still runs; it only cannot leave memory when idle.
                tracing::warn!(
                    component = %source.path.display(),
                    %error,
                    "cannot write the compiled artifact to a file; keeping it in memory"
                );
                Code::Memory(Arc::new(linked))
            }
        };
        Ok(Self::new(source, code, kept, provenance, start))
    }

    fn new(
        source: &ComponentSource,
        code: Code,
        kept: &Arc<Kept>,
        provenance: Provenance,
        start: Instant,
    ) -> Self {
        Self {
            digest: source.digest,
            code,
            mapped: Mutex::new(Weak::new()),
            kept: kept.clone(),
            provenance,
            elapsed: start.elapsed(),
        }
    }

    /// The digest of the component it was compiled from.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Compiled now, or found in the cache.
    pub fn provenance(&self) -> Provenance {
        self.provenance
    }

    /// Time spent compiling, or finding and checking the cached artifact.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The component, linked, for a function being warmed: mapped from
    /// the artifact and linked, unless a warm function holds it or it is
    /// kept ([`Mapped::loaded`] tells).
    pub(crate) fn map(
        self: &Arc<Self>,
        engine: &Engine,
        linker: &Linker<StoreState>,
    ) -> Result<Mapped, LoadError> {
        let mapped = |linked, loaded| Mapped {
            linked,
            artifact: self.clone(),
            loaded,
        };
        let private = match &self.code {
            Code::Memory(linked) => return Ok(mapped(linked.clone(), false)),
            Code::File(private) => private,
        };
        let mut weak = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(linked) = weak.upgrade() {
            // Warm again: no longer counted among the code kept.
            drop(self.kept.take(&self.digest));
            return Ok(mapped(linked, false));
        }
        let component = private.map(engine).map_err(|e| LoadError::Map {
            message: format!("{e:#}"),
        })?;
        let linked = Arc::new(check_serves_http(linker, &component)?);
        *weak = Arc::downgrade(&linked);
        Ok(mapped(linked, true))
    }
}

impl Drop for Artifact {
    fn drop(&mut self) {
        let weak = self.mapped.get_mut().unwrap_or_else(|e| e.into_inner());
        self.kept.forget(&self.digest, |code| {
            std::ptr::eq(Arc::as_ptr(code), weak.as_ptr())
        });
    }
}

/// An artifact's component, linked, held by a warm function. When the
/// function lets go of it, the code is kept for a while (unless it stays in
/// memory anyway).
pub(crate) struct Mapped {
    linked: Linked,
    artifact: Arc<Artifact>,
    loaded: bool,
}

impl Mapped {
    /// The component, linked: what instances are made from.
    pub(crate) fn linked(&self) -> &ProxyPre<StoreState> {
        &self.linked
    }

    /// Whether warming loaded the code from the artifact's file, rather
    /// than finding it mapped (kept, or held by another warm function).
    pub(crate) fn loaded(&self) -> bool {
        self.loaded
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        let artifact = &self.artifact;
        if let Code::File(_) = artifact.code {
            // Under the lock that warming takes: kept only by the last warm
            // function to let go, and never while one warms it again.
            let _weak = artifact.mapped.lock().unwrap_or_else(|e| e.into_inner());
            if Arc::strong_count(&self.linked) > 1 {
                return;
            }
            let image = self.linked.instance_pre().component().image_range();
            let bytes = (image.end as usize).saturating_sub(image.start as usize);
            artifact
                .kept
                .keep(artifact.digest, self.linked.clone(), bytes as u64);
        }
    }
}

/// Logs why the artifact at `path` is not used.
fn discard(path: &std::path::Path, reason: &str) -> Provenance {
    tracing::warn!(
        artifact = %path.display(),
        %reason,
        "discarding a cached artifact; compiling again"
    );
    Provenance::Recompiled
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
