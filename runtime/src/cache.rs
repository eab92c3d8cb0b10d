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
//! beside it is checked when the artifact is first found, and on any
//! mismatch the component is compiled again and the artifact rewritten.
//! Later loads (a cold start after scale to zero) map the same file without
//! hashing it again, unless its size or modification time changed since it
//! was checked. Both files are written to temporary names and renamed into
//! place, so a crash never leaves a half-written artifact under the final
//! name.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// An artifact file whose digest has been checked, and what it looked like
/// then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedFile {
    pub(crate) path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
}

impl VerifiedFile {
    fn stat(path: &Path) -> io::Result<Self> {
        let meta = fs::metadata(path)?;
        Ok(Self {
            path: path.to_owned(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    /// Whether the file is still the one that was checked.
    pub(crate) fn unchanged(&self) -> bool {
        Self::stat(&self.path).is_ok_and(|now| now == *self)
    }
}

/// What the cache holds for a component.
pub(crate) enum Lookup {
    /// An intact artifact.
    Hit(VerifiedFile),
    /// No artifact yet.
    Miss,
    /// An artifact that must not be used, and why.
    Unusable(String),
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

    /// Where the artifact of the component in `bytes` lives.
    pub(crate) fn artifact_path(&self, bytes: &[u8]) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.cwasm",
            hex::encode(Sha256::digest(bytes)),
            self.engine_key
        ))
    }

    /// Looks up (and checks) the artifact at `artifact`.
    pub(crate) fn lookup(&self, artifact: &Path) -> Lookup {
        let before = match VerifiedFile::stat(artifact) {
            Ok(stat) => stat,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Unusable(format!("cannot read it: {e}")),
        };
        let bytes = match fs::read(artifact) {
            Ok(bytes) => bytes,
            Err(e) => return Lookup::Unusable(format!("cannot read it: {e}")),
        };
        let expected = match fs::read_to_string(digest_path(artifact)) {
            Ok(digest) => digest,
            Err(e) => return Lookup::Unusable(format!("cannot read its digest: {e}")),
        };
        if expected.trim() != hex::encode(Sha256::digest(&bytes)) {
            return Lookup::Unusable("its contents do not match its digest".to_owned());
        }
        // Written while it was read: check it again next time.
        if !before.unchanged() {
            return Lookup::Unusable("it changed while it was checked".to_owned());
        }
        Lookup::Hit(before)
    }

    /// Serializes `component` to `artifact` with its digest.
    pub(crate) fn store(&self, component: &Component, artifact: &Path) -> io::Result<VerifiedFile> {
        let bytes = component.serialize().map_err(io::Error::other)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        // The artifact goes in last: a reader that finds it finds its digest.
        self.write_atomically(&digest_path(artifact), digest.as_bytes())?;
        self.write_atomically(artifact, &bytes)?;
        VerifiedFile::stat(artifact)
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Maps a checked artifact file as a component.
pub(crate) fn map(engine: &Engine, file: &VerifiedFile) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime maps and runs the file as native code. The file was
    // written by `ArtifactCache::store` from wasmtime's own serialization,
    // its digest was checked, and the caller made sure it has not changed
    // since, so it is not damaged or swapped for another file.
    #[allow(unsafe_code)]
    unsafe {
        Component::deserialize_file(engine, &file.path)
    }
}

fn digest_path(artifact: &Path) -> PathBuf {
    artifact.with_extension("cwasm.sha256")
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
