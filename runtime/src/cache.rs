//! Compiled (AOT) artifacts on disk, so a component is compiled once.
//!
//! An artifact is named by the SHA-256 of the component's bytes and of the
//! engine's compatibility hash (wasmtime version, target, and every setting
//! that changes generated code), so a changed component or a changed engine
//! never finds a stale artifact:
//!
//! ```text
//! <cache dir>/<component sha256>-<engine key>.cwasm         the artifact
//! <cache dir>/<component sha256>-<engine key>.cwasm.sha256  its own digest
//! ```
//!
//! Artifacts are native code that wasmtime maps and runs without validating
//! it again, so a damaged or altered file must never be loaded: the digest
//! beside it is checked before the artifact is mapped, and on any mismatch
//! the component is compiled again and the artifact rewritten. Both files are
//! written to temporary names and renamed into place, so a crash never leaves
//! a half-written artifact under the final name.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a loaded component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Compiled now; the artifact was written to the cache.
    Compiled,
    /// Mapped from a cached artifact without compiling.
    Cached,
    /// The cached artifact was damaged or stale; compiled again.
    Recompiled,
}

/// A loaded component and how it was obtained.
pub(crate) struct Loaded {
    pub(crate) component: Component,
    pub(crate) provenance: Provenance,
    pub(crate) elapsed: Duration,
}

/// The artifact cache directory of one engine.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    /// Opens (creating if needed) the cache directory for `engine`.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut hasher = DigestHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(Self {
            dir: dir.to_owned(),
            engine_key,
        })
    }

    /// Loads the component in `bytes` from its cached artifact, or compiles
    /// it and caches the artifact. `Err` carries wasmtime's compile error.
    pub(crate) fn load(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Loaded> {
        let start = Instant::now();
        let artifact = self.dir.join(format!(
            "{}-{}.cwasm",
            hex::encode(Sha256::digest(bytes)),
            self.engine_key
        ));
        let digest_file = artifact.with_extension("cwasm.sha256");

        let provenance = match self.load_verified(engine, &artifact, &digest_file) {
            Ok(Some(component)) => {
                return Ok(Loaded {
                    component,
                    provenance: Provenance::Cached,
                    elapsed: start.elapsed(),
                });
            }
            Ok(None) => Provenance::Compiled,
            Err(reason) => {
                tracing::warn!(
                    artifact = %artifact.display(),
                    %reason,
                    "discarding a cached artifact; compiling again"
                );
                Provenance::Recompiled
            }
        };

        let component = Component::from_binary(engine, bytes)?;
        if let Err(error) = self.store(&component, &artifact, &digest_file) {
            // The function still runs; only the next start pays for compiling.
            tracing::warn!(
                artifact = %artifact.display(),
                %error,
                "cannot write the compiled artifact to the cache"
            );
        }
        Ok(Loaded {
            component,
            provenance,
            elapsed: start.elapsed(),
        })
    }

    /// The cached artifact if it is present and intact; `Ok(None)` if there
    /// is none; `Err` with the reason if one exists but must not be used.
    fn load_verified(
        &self,
        engine: &Engine,
        artifact: &Path,
        digest_file: &Path,
    ) -> Result<Option<Component>, String> {
        let bytes = match fs::read(artifact) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        let expected =
            fs::read_to_string(digest_file).map_err(|e| format!("cannot read its digest: {e}"))?;
        if expected.trim() != hex::encode(Sha256::digest(&bytes)) {
            return Err("its contents do not match its digest".to_owned());
        }
        drop(bytes);
        // SAFETY: wasmtime maps and runs the file as native code. The file
        // was written by `store` below from wasmtime's own serialization
        // and its digest was checked just above, so it is not damaged or
        // swapped for another file.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize_file(engine, artifact) };
        component
            .map(Some)
            .map_err(|e| format!("wasmtime refuses it: {e:#}"))
    }

    fn store(&self, component: &Component, artifact: &Path, digest_file: &Path) -> io::Result<()> {
        let bytes = component.serialize().map_err(io::Error::other)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        // The artifact goes in last: a reader that finds it finds its digest.
        self.write_atomically(digest_file, digest.as_bytes())?;
        self.write_atomically(artifact, &bytes)
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Feeds `Hash` output into SHA-256, which, unlike `DefaultHasher`, is stable
/// across Rust releases.
struct DigestHasher(Sha256);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        unreachable!("only the SHA-256 digest is read")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
