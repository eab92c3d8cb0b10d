//! Compiled (AOT) artifacts on disk, so that a component compiles once.
//!
//! ```text
//! <cache dir>/<component sha256>-<engine key>.cwasm
//!
//!   shoal-artifact 1                      a header naming what it holds:
//!   component <sha256 of the component>   the component it was compiled from,
//!   engine <engine key>                   the engine settings it needs,
//!   artifact <sha256> <length>            and the native code that follows
//!   <blank line>
//!   <the artifact: wasmtime's serialization of the compiled component>
//! ```
//!
//! Artifacts are native code that wasmtime maps and runs without checking
//! it again, so the design rests on two rules:
//!
//! 1. **Nothing maps the shared file.** The cache folder may be shared by
//!    several hosts (a volume shared by pods) and touched by people; a file
//!    there can be truncated, overwritten in place, deleted or swapped at
//!    any moment. A host copies the artifact into a file of its own, created
//!    unlinked so that no other process can reach it, hashing the bytes as
//!    it copies them; only that private copy is ever mapped. A shared file
//!    changing under a running host therefore changes nothing it runs (and
//!    can no longer kill it with SIGBUS or run half-written code).
//! 2. **An artifact is bound to its component and its engine.** The header
//!    names both, and the copy is used only if they are the ones asked for
//!    and the artifact's digest matches. A file copied from another
//!    component, or written for other engine settings, is refused and the
//!    component is compiled again.
//!
//! Writers create the whole file under a temporary name and rename it into
//! place, so a reader sees a complete file or none, and two hosts writing
//! the same artifact at once each leave a valid one.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::source::Digest;

/// The first line of every artifact file.
const MAGIC: &str = "shoal-artifact 1";

/// The longest header line read; longer means the file is not an artifact.
const MAX_HEADER_LINE: usize = 256;

/// A checked artifact in a file that only this process can reach.
pub(crate) struct PrivateArtifact {
    file: File,
}

impl PrivateArtifact {
    /// Writes `bytes` (a serialized component) to a new private file in
    /// `dir`.
    fn write(dir: &Path, bytes: &[u8]) -> io::Result<Self> {
        let mut file = tempfile::tempfile_in(dir)?;
        file.write_all(bytes)?;
        Ok(Self { file })
    }

    /// Maps the artifact as a component of `engine`.
    // SAFETY (for both `unsafe` blocks): wasmtime maps and runs the file as
    // native code. It was created unlinked by this process and written only
    // from bytes whose digest was checked against the header that binds
    // them to this component and engine (or from wasmtime's own
    // serialization of a compile), and no other process can open it, so it
    // is neither damaged nor swapped while mapped.
    #[allow(unsafe_code)]
    pub(crate) fn map(&self, engine: &Engine) -> wasmtime::Result<Component> {
        // The private file has no name; procfs gives its descriptor one.
        let by_descriptor = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
        if by_descriptor.exists() {
            return unsafe { Component::deserialize_file(engine, &by_descriptor) };
        }
        // Without procfs, the bytes are read into memory instead.
        let mut bytes = vec![0; usize::try_from(self.file.metadata()?.len())?];
        self.file.read_exact_at(&mut bytes, 0)?;
        unsafe { Component::deserialize(engine, bytes) }
    }
}

/// What the cache holds for a component.
pub(crate) enum Lookup {
    /// An intact artifact, copied for this process.
    Hit(PrivateArtifact),
    /// No artifact yet.
    Miss,
    /// An artifact that must not be used, and why.
    Unusable(String),
}

/// The artifact cache folder, for one engine.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    /// Opens (creating if needed) the cache folder for `engine`.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut hasher = DigestHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(Self {
            dir: dir.to_owned(),
            engine_key,
        })
    }

    /// Where the artifact of `component` lives.
    pub(crate) fn path(&self, component: &Digest) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", component.to_hex(), self.engine_key))
    }

    /// Looks up the artifact of `component` and, if it is intact and bound
    /// to `component` and this engine, copies it for this process.
    pub(crate) fn lookup(&self, component: &Digest) -> Lookup {
        let file = match File::open(self.path(component)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Unusable(format!("cannot read it: {e}")),
        };
        match self.copy_checked(file, component) {
            Ok(artifact) => Lookup::Hit(artifact),
            Err(Refused(reason)) => Lookup::Unusable(reason),
        }
    }

    fn copy_checked(&self, file: File, component: &Digest) -> Result<PrivateArtifact, Refused> {
        let mut reader = BufReader::new(file);
        let header = Header::read(&mut reader)?;
        if header.component != *component {
            return Err(Refused(format!(
                "it was compiled from another component ({})",
                header.component
            )));
        }
        if header.engine != self.engine_key {
            return Err(Refused(format!(
                "it was compiled for other engine settings ({})",
                header.engine
            )));
        }
        let mut private = tempfile::tempfile_in(&self.dir)
            .map_err(|e| Refused(format!("cannot make a private copy: {e}")))?;
        let mut hashing = HashingWriter {
            inner: &mut private,
            hasher: Sha256::new(),
        };
        let copied = io::copy(&mut (&mut reader).take(header.length), &mut hashing)
            .map_err(|e| Refused(format!("cannot copy it: {e}")))?;
        let digest = Digest::finish(hashing.hasher);
        let trailing = reader.read(&mut [0]).map_err(|e| Refused(e.to_string()))?;
        if copied != header.length || trailing != 0 {
            return Err(Refused(format!(
                "it is {} bytes long where its header says {}",
                if trailing == 0 {
                    copied.to_string()
                } else {
                    "more than".to_owned()
                },
                header.length
            )));
        }
        if digest != header.artifact {
            return Err(Refused("its contents do not match its digest".to_owned()));
        }
        Ok(PrivateArtifact { file: private })
    }

    /// Writes `artifact` (wasmtime's serialization of `component`) to the
    /// cache, and returns this process's private copy of it. The shared
    /// file is best effort: a cache folder that cannot be written costs the
    /// next start a compile, nothing more.
    pub(crate) fn store(&self, component: &Digest, artifact: &[u8]) -> io::Result<PrivateArtifact> {
        let header = Header {
            component: *component,
            engine: self.engine_key.clone(),
            artifact: Digest::of(artifact),
            length: artifact.len() as u64,
        };
        if let Err(error) = self.write_shared(&header, artifact) {
            tracing::warn!(
                artifact = %self.path(component).display(),
                %error,
                "cannot write the compiled artifact to the cache; the next start compiles it again"
            );
        }
        PrivateArtifact::write(&self.dir, artifact)
    }

    fn write_shared(&self, header: &Header, artifact: &[u8]) -> io::Result<()> {
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(header.to_string().as_bytes())?;
        file.write_all(artifact)?;
        file.as_file().sync_all()?;
        file.persist(self.path(&header.component))
            .map_err(|e| e.error)?;
        Ok(())
    }
}

/// Why a cached artifact is refused.
struct Refused(String);

/// What an artifact file says it holds.
struct Header {
    component: Digest,
    engine: String,
    artifact: Digest,
    length: u64,
}

impl Header {
    fn read(reader: &mut impl BufRead) -> Result<Self, Refused> {
        let mut line = || -> Result<String, Refused> {
            let mut line = String::new();
            reader
                .take(MAX_HEADER_LINE as u64)
                .read_line(&mut line)
                .map_err(|e| Refused(format!("cannot read its header: {e}")))?;
            match line.strip_suffix('\n') {
                Some(line) => Ok(line.to_owned()),
                None => Err(Refused("its header is cut short".to_owned())),
            }
        };
        if line()? != MAGIC {
            return Err(Refused("it is not a Shoal artifact".to_owned()));
        }
        let bad = || Refused("its header is malformed".to_owned());
        let component = line()?;
        let component = component
            .strip_prefix("component ")
            .and_then(Digest::from_hex)
            .ok_or_else(bad)?;
        let engine = line()?.strip_prefix("engine ").ok_or_else(bad)?.to_owned();
        let artifact = line()?;
        let (artifact, length) = artifact
            .strip_prefix("artifact ")
            .and_then(|rest| rest.split_once(' '))
            .ok_or_else(bad)?;
        let artifact = Digest::from_hex(artifact).ok_or_else(bad)?;
        let length = length.parse().map_err(|_| bad())?;
        if !line()?.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            component,
            engine,
            artifact,
            length,
        })
    }
}

impl std::fmt::Display for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{MAGIC}\ncomponent {}\nengine {}\nartifact {} {}\n\n",
            self.component.to_hex(),
            self.engine,
            self.artifact.to_hex(),
            self.length
        )
    }
}

/// A writer that hashes what goes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_in(dir: &Path) -> ArtifactCache {
        ArtifactCache {
            dir: dir.to_owned(),
            engine_key: "0123456789abcdef".to_owned(),
        }
    }

    fn contents(artifact: PrivateArtifact) -> Vec<u8> {
        use std::io::Seek as _;
        let mut file = artifact.file;
        file.rewind().unwrap();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn a_stored_artifact_is_found_for_its_component_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_in(dir.path());
        let (hello, echo) = (Digest::of(b"hello"), Digest::of(b"echo"));
        assert!(matches!(cache.lookup(&hello), Lookup::Miss));
        let private = cache.store(&hello, b"native code").unwrap();
        assert_eq!(contents(private), b"native code");
        match cache.lookup(&hello) {
            Lookup::Hit(private) => assert_eq!(contents(private), b"native code"),
            _ => panic!("not found"),
        }

        // The pair of files of one component, copied under another's name.
        std::fs::copy(cache.path(&hello), cache.path(&echo)).unwrap();
        match cache.lookup(&echo) {
            Lookup::Unusable(why) => assert!(why.contains("another component"), "{why}"),
            _ => panic!("another component's artifact was used"),
        }
        // Or written for other engine settings.
        let other = ArtifactCache {
            engine_key: "fedcba9876543210".to_owned(),
            ..cache_in(dir.path())
        };
        std::fs::copy(cache.path(&hello), other.path(&hello)).unwrap();
        match other.lookup(&hello) {
            Lookup::Unusable(why) => assert!(why.contains("engine"), "{why}"),
            _ => panic!("another engine's artifact was used"),
        }
    }

    #[test]
    fn a_damaged_artifact_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_in(dir.path());
        let hello = Digest::of(b"hello");
        cache.store(&hello, b"native code").unwrap();
        let path = cache.path(&hello);
        let good = std::fs::read(&path).unwrap();
        let damaged: [(&str, Vec<u8>); 4] = [
            ("truncated", good[..good.len() - 3].to_vec()),
            ("longer", [good.as_slice(), b"!"].concat()),
            ("flipped", {
                let mut bytes = good.clone();
                *bytes.last_mut().unwrap() ^= 1;
                bytes
            }),
            ("no header", b"native code".to_vec()),
        ];
        for (how, bytes) in damaged {
            std::fs::write(&path, bytes).unwrap();
            assert!(
                matches!(cache.lookup(&hello), Lookup::Unusable(_)),
                "a {how} artifact was used"
            );
        }
    }

    #[test]
    fn the_private_copy_does_not_change_with_the_shared_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_in(dir.path());
        let hello = Digest::of(b"hello");
        cache.store(&hello, b"native code").unwrap();
        let Lookup::Hit(private) = cache.lookup(&hello) else {
            panic!("not found")
        };
        // Overwritten in place, then deleted.
        std::fs::write(cache.path(&hello), b"garbage").unwrap();
        std::fs::remove_file(cache.path(&hello)).unwrap();
        assert_eq!(contents(private), b"native code");
    }
}
