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
//!
//! The folder is collected: an artifact that no function of this host
//! uses, and that no host sharing the folder has used or written for
//! [`UNUSED_ARTIFACT_GRACE`] (each use sets the file's modification time),
//! is removed, whatever engine it was compiled for; so are temporary files
//! a killed writer left. A running host never needs the shared file again
//! (it runs its private copy), so removing one costs at most a compile at
//! some host's next start.
//!
//! A second, read-only folder may hold artifacts compiled ahead of time
//! (`host package` puts them in the image). It is consulted when the cache
//! has no artifact, under the same two rules, and never written. Where it
//! holds the component's artifact only for another engine key (compiled on
//! a machine with other CPU features, or with other settings), the lookup
//! says so, and the component is compiled into the cache as usual.

use std::collections::HashSet;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::source::Digest;

/// The first line of every artifact file.
const MAGIC: &str = "shoal-artifact 1";

/// The longest header line read; longer means the file is not an artifact.
const MAX_HEADER_LINE: usize = 256;

/// How long an artifact that no function uses is kept after some host
/// last used or wrote it.
pub const UNUSED_ARTIFACT_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// What a collection of the cache folder removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Files removed.
    pub files: usize,
    /// Their size, in bytes.
    pub bytes: u64,
}

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
    /// An intact artifact, copied for this process, and the folder it was
    /// found in.
    Hit(PrivateArtifact, Origin),
    /// No artifact yet.
    Miss,
    /// An artifact that must not be used, where it is, and why.
    Unusable(PathBuf, String),
    /// None in the cache; the precompiled folder holds this artifact only
    /// for another engine key.
    Foreign(PathBuf),
}

/// Which folder an artifact was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The cache, written by this host or one sharing its folder.
    Cache,
    /// The read-only folder of artifacts compiled ahead of time.
    Precompiled,
}

/// The artifact cache folder, for one engine, and the folder of
/// precompiled artifacts, if any.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    precompiled: Option<PathBuf>,
    engine_key: String,
}

impl ArtifactCache {
    /// Opens (creating if needed) the cache folder for `engine`; artifacts
    /// missing there are also looked for in `precompiled`.
    pub(crate) fn open(
        dir: &Path,
        precompiled: Option<&Path>,
        engine: &Engine,
    ) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            precompiled: precompiled.map(Path::to_owned),
            engine_key: engine_key(engine),
        })
    }

    /// Where the artifact of `component` lives.
    pub(crate) fn path(&self, component: &Digest) -> PathBuf {
        self.dir.join(self.file_name(component))
    }

    /// Where the artifact of `component` in the folder `origin` lives.
    pub(crate) fn location(&self, origin: Origin, component: &Digest) -> PathBuf {
        match (origin, &self.precompiled) {
            (Origin::Precompiled, Some(dir)) => dir.join(self.file_name(component)),
            _ => self.path(component),
        }
    }

    fn file_name(&self, component: &Digest) -> String {
        format!("{}-{}.cwasm", component.to_hex(), self.engine_key)
    }

    /// Looks up the artifact of `component`, in the cache and then in the
    /// precompiled folder, and, if it is intact and bound to `component`
    /// and this engine, copies it for this process.
    pub(crate) fn lookup(&self, component: &Digest) -> Lookup {
        match self.lookup_in(&self.path(component), component, Origin::Cache) {
            Lookup::Miss => {}
            found => return found,
        }
        let Some(precompiled) = &self.precompiled else {
            return Lookup::Miss;
        };
        match self.lookup_in(
            &precompiled.join(self.file_name(component)),
            component,
            Origin::Precompiled,
        ) {
            Lookup::Miss => {
                foreign_artifact(precompiled, component).map_or(Lookup::Miss, Lookup::Foreign)
            }
            found => found,
        }
    }

    fn lookup_in(&self, path: &Path, component: &Digest, origin: Origin) -> Lookup {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Unusable(path.to_owned(), format!("cannot read it: {e}")),
        };
        if origin == Origin::Cache {
            // Used now: kept from collection for a while. Best effort (a
            // file of another user's host cannot be touched).
            let _ = file.set_modified(SystemTime::now());
        }
        match self.copy_checked(file, component) {
            Ok(artifact) => Lookup::Hit(artifact, origin),
            Err(Refused(reason)) => Lookup::Unusable(path.to_owned(), reason),
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
        if let Err(error) = self.publish(component, artifact) {
            tracing::warn!(
                artifact = %self.path(component).display(),
                %error,
                "cannot write the compiled artifact to the cache; the next start compiles it again"
            );
        }
        PrivateArtifact::write(&self.dir, artifact)
    }

    /// Writes `artifact` (wasmtime's serialization of `component`) to the
    /// cache folder, with its header, and returns its path.
    pub(crate) fn publish(&self, component: &Digest, artifact: &[u8]) -> io::Result<PathBuf> {
        let header = Header {
            component: *component,
            engine: self.engine_key.clone(),
            artifact: Digest::of(artifact),
            length: artifact.len() as u64,
        };
        let path = self.path(component);
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(header.to_string().as_bytes())?;
        file.write_all(artifact)?;
        file.as_file().sync_all()?;
        file.persist(&path).map_err(|e| e.error)?;
        Ok(path)
    }
}

impl ArtifactCache {
    /// Removes from the cache folder the artifacts not of a component in
    /// `used` for this engine, and the temporary files, that were last
    /// modified more than `grace` ago. A file that cannot be read or
    /// removed is left; one removed meanwhile by another host is not
    /// counted.
    pub(crate) fn collect(&self, used: &HashSet<Digest>, grace: Duration) -> io::Result<Collected> {
        let mut collected = Collected::default();
        let now = SystemTime::now();
        for entry in std::fs::read_dir(&self.dir)? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = name
                .strip_suffix(".cwasm")
                .and_then(|stem| stem.split_once('-'))
                .is_some_and(|(component, engine)| {
                    engine == self.engine_key
                        && Digest::from_hex(component).is_some_and(|c| used.contains(&c))
                });
            // Artifacts and the writers' temporary files; nothing else.
            if ours || !(name.ends_with(".cwasm") || name.starts_with(".tmp")) {
                continue;
            }
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            let age = metadata
                .modified()
                .ok()
                .and_then(|modified| now.duration_since(modified).ok());
            if !metadata.is_file() || age.is_none_or(|age| age < grace) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    collected.files += 1;
                    collected.bytes += metadata.len();
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(error) => tracing::warn!(
                    file = %entry.path().display(),
                    %error,
                    "cannot remove an unused artifact"
                ),
            }
        }
        Ok(collected)
    }
}

/// The key naming `engine`'s settings in artifact file names: the first 8
/// bytes of the SHA-256 of wasmtime's compatibility hash (the target, the
/// CPU features compiled for, the compiler flags and the tunables).
pub(crate) fn engine_key(engine: &Engine) -> String {
    let mut hasher = DigestHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

/// An artifact of `component` in `dir` for any engine key.
fn foreign_artifact(dir: &Path, component: &Digest) -> Option<PathBuf> {
    let prefix = format!("{}-", component.to_hex());
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(&prefix) && name.ends_with(".cwasm"))
        })
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
            precompiled: None,
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

    /// Sets the modification time of `path` to `ago` before now.
    fn age(path: &Path, ago: Duration) {
        let file = File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - ago).unwrap();
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn unused_artifacts_go_once_no_host_has_used_them_for_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_in(dir.path());
        let other = ArtifactCache {
            engine_key: "fedcba9876543210".to_owned(),
            ..cache_in(dir.path())
        };
        let [used, unused, recent, looked_up] =
            ["used", "unused", "recent", "looked up"].map(|name| Digest::of(name.as_bytes()));
        for component in [&used, &unused, &recent, &looked_up] {
            cache.store(component, b"native code").unwrap();
        }
        other.store(&used, b"other native code").unwrap();
        let day = Duration::from_secs(24 * 60 * 60);
        for old in [cache.path(&used), cache.path(&unused), other.path(&used)] {
            age(&old, 2 * day);
        }
        age(&cache.path(&looked_up), 2 * day);
        assert!(matches!(cache.lookup(&looked_up), Lookup::Hit(..)));
        let stale = dir.path().join(".tmpKILLED");
        std::fs::write(&stale, b"half an artifact").unwrap();
        age(&stale, 2 * day);
        std::fs::write(dir.path().join("notes.txt"), b"not the cache's").unwrap();
        age(&dir.path().join("notes.txt"), 2 * day);

        let collected = cache.collect(&HashSet::from([used]), day).unwrap();
        // The unused artifact, the other engine's one of a used component,
        // and the temporary file; not the used, the recent, the one just
        // looked up (which is used again), nor a file not the cache's.
        assert_eq!(collected.files, 3, "{:?}", names_in(dir.path()));
        let mut kept = vec![
            cache.file_name(&used),
            cache.file_name(&recent),
            cache.file_name(&looked_up),
            "notes.txt".to_owned(),
        ];
        kept.sort();
        assert_eq!(names_in(dir.path()), kept);
        assert_eq!(
            cache.collect(&HashSet::from([used]), day).unwrap(),
            Collected::default()
        );
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
            Lookup::Hit(private, Origin::Cache) => assert_eq!(contents(private), b"native code"),
            _ => panic!("not found"),
        }

        // The pair of files of one component, copied under another's name.
        std::fs::copy(cache.path(&hello), cache.path(&echo)).unwrap();
        match cache.lookup(&echo) {
            Lookup::Unusable(_, why) => assert!(why.contains("another component"), "{why}"),
            _ => panic!("another component's artifact was used"),
        }
        // Or written for other engine settings.
        let other = ArtifactCache {
            engine_key: "fedcba9876543210".to_owned(),
            ..cache_in(dir.path())
        };
        std::fs::copy(cache.path(&hello), other.path(&hello)).unwrap();
        match other.lookup(&hello) {
            Lookup::Unusable(_, why) => assert!(why.contains("engine"), "{why}"),
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
                matches!(cache.lookup(&hello), Lookup::Unusable(..)),
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
        let Lookup::Hit(private, _) = cache.lookup(&hello) else {
            panic!("not found")
        };
        // Overwritten in place, then deleted.
        std::fs::write(cache.path(&hello), b"garbage").unwrap();
        std::fs::remove_file(cache.path(&hello)).unwrap();
        assert_eq!(contents(private), b"native code");
    }

    #[test]
    fn the_precompiled_folder_is_read_when_the_cache_has_nothing() {
        let (data, image) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (hello, echo) = (Digest::of(b"hello"), Digest::of(b"echo"));
        cache_in(image.path())
            .publish(&hello, b"packaged code")
            .unwrap();
        let cache = ArtifactCache {
            precompiled: Some(image.path().to_owned()),
            ..cache_in(data.path())
        };
        match cache.lookup(&hello) {
            Lookup::Hit(private, Origin::Precompiled) => {
                assert_eq!(contents(private), b"packaged code");
            }
            _ => panic!("the precompiled artifact was not found"),
        }
        assert!(matches!(cache.lookup(&echo), Lookup::Miss));
        // Never written: what the host compiles goes to its own cache, which
        // is read first.
        cache.store(&hello, b"native code").unwrap();
        match cache.lookup(&hello) {
            Lookup::Hit(private, Origin::Cache) => assert_eq!(contents(private), b"native code"),
            _ => panic!("the cache was not read first"),
        }
        let packaged: Vec<_> = std::fs::read_dir(image.path()).unwrap().collect();
        assert_eq!(packaged.len(), 1, "the precompiled folder was written");
    }

    #[test]
    fn a_precompiled_artifact_for_another_engine_is_reported() {
        let (data, image) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let hello = Digest::of(b"hello");
        let elsewhere = ArtifactCache {
            engine_key: "fedcba9876543210".to_owned(),
            ..cache_in(image.path())
        };
        let path = elsewhere.publish(&hello, b"code for another CPU").unwrap();
        let cache = ArtifactCache {
            precompiled: Some(image.path().to_owned()),
            ..cache_in(data.path())
        };
        match cache.lookup(&hello) {
            Lookup::Foreign(found) => assert_eq!(found, path),
            _ => panic!("the other engine's artifact was not reported"),
        }
        // Damaged precompiled artifacts are refused like cached ones.
        let own = cache_in(image.path())
            .publish(&hello, b"packaged code")
            .unwrap();
        std::fs::write(&own, b"garbage").unwrap();
        assert!(matches!(cache.lookup(&hello), Lookup::Unusable(..)));
    }
}
