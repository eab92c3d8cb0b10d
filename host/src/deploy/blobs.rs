//! Uploaded components, stored by the SHA-256 of their bytes:
//! `DATA_DIR/deploy/blobs/<hex>.wasm`.
//!
//! An upload streams into a temporary file in the same folder while it is
//! hashed and counted; past the size limit it is refused and the file
//! removed. A complete upload is synced and renamed to its digest's name,
//! and the folder synced, so that a blob under its final name is always
//! whole. Identical bytes are stored once. Temporary files left by a host
//! that was killed mid-upload are removed when the store opens.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};
use shoal_runtime::Digest;

use super::state::sync_dir;

/// The prefix of an upload's temporary file.
const PARTIAL_PREFIX: &str = ".upload-";

/// The largest upload, by default.
pub const DEFAULT_MAX_UPLOAD: u64 = 100 << 20;

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// It was larger than the limit (bytes).
    #[error("the upload is larger than {0} bytes")]
    TooLarge(u64),
    /// The client's stream failed (it went away, say).
    #[error("the upload broke off: {0}")]
    Stream(String),
    /// The store could not write it.
    #[error("cannot store the upload: {0}")]
    Io(#[from] std::io::Error),
}

/// A stored upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Whether these bytes were stored before.
    pub existed: bool,
}

/// The folder of uploaded components.
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Removes what uploads cut off by a crash left behind. Only for the
    /// owner of the store: for another host, it may be the owner's upload
    /// under way.
    pub fn remove_partial_uploads(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(PARTIAL_PREFIX)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Where the blob of `digest` is (or would be).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.wasm", digest.to_hex()))
    }

    /// The digest a blob's path names, if it is one of this store's.
    pub fn digest_of(&self, path: &Path) -> Option<Digest> {
        if path.parent() != Some(self.dir.as_path()) {
            return None;
        }
        path.file_name()?
            .to_str()?
            .strip_suffix(".wasm")
            .and_then(Digest::from_hex)
    }

    /// Whether the blob of `digest` is stored.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Stores the bytes of `body`, at most `limit` of them.
    pub async fn put<S, E>(&self, mut body: S, limit: u64) -> Result<Stored, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut partial = tempfile::Builder::new()
            .prefix(PARTIAL_PREFIX)
            .tempfile_in(&self.dir)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| UploadError::Stream(e.to_string()))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(UploadError::TooLarge(limit));
            }
            hasher.update(&chunk);
            // Small writes to a local file: done inline.
            partial.write_all(&chunk)?;
        }
        let digest = Digest::from_bytes(hasher.finalize().into());
        let path = self.path(&digest);
        if path.is_file() {
            // Uploaded again: it counts as new for the grace before an
            // unused blob is collected.
            let _ = std::fs::File::options()
                .append(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            return Ok(Stored {
                digest,
                size,
                existed: true,
            });
        }
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            partial.as_file().sync_all()?;
            partial.persist(&path).map_err(|e| e.error)?;
            sync_dir(&dir)
        })
        .await
        .expect("storing a blob does not panic")?;
        Ok(Stored {
            digest,
            size,
            existed: false,
        })
    }

    /// Removes the blob of `digest`.
    pub fn remove(&self, digest: &Digest) {
        let _ = std::fs::remove_file(self.path(digest));
    }

    /// Removes every blob not in `keep` stored longer than `grace` ago;
    /// returns how many.
    pub fn collect(
        &self,
        keep: &HashSet<Digest>,
        grace: std::time::Duration,
    ) -> std::io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            let old_enough = entry
                .metadata()?
                .modified()?
                .elapsed()
                .is_ok_and(|age| age >= grace);
            if let Some(digest) = self.digest_of(&path)
                && old_enough
                && !keep.contains(&digest)
            {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn uploads_are_stored_once_by_digest_and_limited_in_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let stored = store.put(chunks(&[b"\0asm", b"more"]), 100).await.unwrap();
        assert_eq!(stored.digest, Digest::of(b"\0asmmore"));
        assert_eq!((stored.size, stored.existed), (8, false));
        assert_eq!(
            std::fs::read(store.path(&stored.digest)).unwrap(),
            b"\0asmmore"
        );
        let again = store.put(chunks(&[b"\0asmmore"]), 100).await.unwrap();
        assert!(again.existed);

        let too_large = store.put(chunks(&[b"12345", b"67890"]), 8).await;
        assert!(matches!(too_large, Err(UploadError::TooLarge(8))));
        let broken = futures::stream::iter(vec![Ok(Bytes::from_static(b"x")), Err("gone")]);
        assert!(matches!(
            store.put(broken, 100).await,
            Err(UploadError::Stream(_))
        ));
        // Nothing but the one blob is left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        // An unused blob is kept through its grace, then collected.
        let keep = HashSet::new();
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(store.collect(&keep, hour).unwrap(), 0);
        assert_eq!(
            store
                .collect(&HashSet::from([stored.digest]), std::time::Duration::ZERO)
                .unwrap(),
            0
        );
        assert_eq!(store.collect(&keep, std::time::Duration::ZERO).unwrap(), 1);
        assert!(!store.contains(&stored.digest));
    }

    #[test]
    fn what_a_crash_left_behind_is_removed_by_the_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".upload-abc"), b"half an upload").unwrap();
        // Not as the store opens: it may be another host's upload, under
        // way.
        let store = BlobStore::open(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        store.remove_partial_uploads().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
