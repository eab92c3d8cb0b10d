//! A component on disk, read safely and named by its content.
//!
//! Everything downstream keys a component by the SHA-256 of its bytes (a
//! [`Digest`]): compile jobs, the artifact cache, and the host's decision
//! whether a function changed. So the same bytes compile once, whatever
//! path or symlink names them, and a changed file is never mistaken for the
//! one it replaced.
//!
//! Reading refuses anything but a regular file: a FIFO or a device named as
//! a component would otherwise block the reader forever. The file is opened
//! without blocking and checked through the open descriptor, so it cannot be
//! swapped for something else between the check and the read.

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::LoadError;

/// The SHA-256 of a component's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The digest of what `hasher` was fed.
    pub(crate) fn finish(hasher: Sha256) -> Self {
        Self(hasher.finalize().into())
    }

    /// A digest computed elsewhere (a SHA-256 of a component's bytes).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.with_hex(str::to_owned)
    }

    /// Calls `f` with the 64 lowercase hex digits, made on the stack:
    /// `hex::encode` builds its `String` a char at a time, which a listing
    /// of many functions felt.
    fn with_hex<T>(&self, f: impl FnOnce(&str) -> T) -> T {
        let mut digits = [0; 64];
        hex::encode_to_slice(self.0, &mut digits).expect("32 bytes make 64 digits");
        f(std::str::from_utf8(&digits).expect("hex digits are ASCII"))
    }

    /// Parses 64 hex digits, as [`Digest::to_hex`] writes them.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

impl fmt::Display for Digest {
    /// `sha256:` and the hex digits, as the admin API shows a component.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.with_hex(|digits| f.write_str(digits))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A component file and the digest of its contents when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSource {
    /// Where it was read from.
    pub path: PathBuf,
    /// What it held then.
    pub digest: Digest,
}

impl ComponentSource {
    /// Reads the component at `path`, checks that it is a component, and
    /// names it by its digest. Blocking: the whole file is read.
    pub fn read(path: &Path) -> Result<Self, LoadError> {
        let bytes = read_component(path)?;
        Ok(Self {
            path: path.to_owned(),
            digest: Digest::of(&bytes),
        })
    }

    /// The component's bytes, read again, and only if they are still the
    /// ones this source was named by.
    pub fn bytes(&self) -> Result<Vec<u8>, LoadError> {
        let bytes = read_component(&self.path)?;
        if Digest::of(&bytes) != self.digest {
            return Err(LoadError::ChangedWhileLoading {
                path: self.path.clone(),
            });
        }
        Ok(bytes)
    }
}

/// The bytes of the regular file at `path`, if they are a component.
fn read_component(path: &Path) -> Result<Vec<u8>, LoadError> {
    let read_error = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    // Non-blocking, so that opening a FIFO returns at once instead of
    // waiting for a writer; the descriptor then says what was opened.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(read_error)?;
    let metadata = file.metadata().map_err(read_error)?;
    if !metadata.is_file() {
        return Err(LoadError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(read_error)?;
    check_is_component(&bytes, path)?;
    Ok(bytes)
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

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.wasm");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            0,
        )
        .unwrap();
        // Without a writer, a blocking open of the FIFO would never return.
        assert!(matches!(
            ComponentSource::read(&fifo),
            Err(LoadError::NotAFile { .. })
        ));
        assert!(matches!(
            ComponentSource::read(dir.path()),
            Err(LoadError::NotAFile { .. }) | Err(LoadError::Read { .. })
        ));
    }

    #[test]
    fn a_source_refuses_bytes_that_changed_since_it_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wasm");
        std::fs::write(&path, b"\0asm\x0d\0\x01\0one").unwrap();
        let source = ComponentSource::read(&path).unwrap();
        assert_eq!(source.bytes().unwrap(), b"\0asm\x0d\0\x01\0one");
        std::fs::write(&path, b"\0asm\x0d\0\x01\0two").unwrap();
        assert!(matches!(
            source.bytes(),
            Err(LoadError::ChangedWhileLoading { .. })
        ));
        let digest = source.digest;
        assert_eq!(Digest::from_hex(&digest.to_hex()), Some(digest));
        assert!(digest.to_string().starts_with("sha256:"));
    }
}
