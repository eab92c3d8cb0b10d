//! A tree of files written as a tar archive the same way every time: the
//! image's one layer (gzipped), and the OCI archive of the layout.
//!
//! Entries are written in path order, parents first, with a fixed owner
//! (root), fixed modes and one fixed modification time, and the gzip header
//! carries no time or name: the same files give the same bytes, hence the
//! same digests. The archive is hashed twice as it is written: compressed
//! (the blob's digest) and uncompressed (the layer's `diff_id`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

/// What a path of the root file system holds.
enum Node {
    Dir { mode: u32 },
    File { source: Contents, mode: u32 },
}

/// Where a file's bytes come from.
enum Contents {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// A root file system to archive, by path (relative to `/`).
#[derive(Default)]
pub(super) struct Tree {
    nodes: BTreeMap<PathBuf, Node>,
}

impl Tree {
    /// Adds a folder; its parents are added with mode 0755.
    pub(super) fn dir(&mut self, path: impl AsRef<Path>, mode: u32) {
        let path = relative(path.as_ref());
        self.parents(&path);
        self.nodes.insert(path, Node::Dir { mode });
    }

    /// Adds the file at `source` (symbolic links followed) as `path`.
    pub(super) fn copy(&mut self, path: impl AsRef<Path>, source: &Path, mode: u32) {
        self.file(path.as_ref(), Contents::Path(source.to_owned()), mode);
    }

    /// Adds `bytes` as the file `path`.
    pub(super) fn bytes(&mut self, path: impl AsRef<Path>, bytes: Vec<u8>, mode: u32) {
        self.file(path.as_ref(), Contents::Bytes(bytes), mode);
    }

    fn file(&mut self, path: &Path, source: Contents, mode: u32) {
        let path = relative(path);
        self.parents(&path);
        self.nodes.insert(path, Node::File { source, mode });
    }

    fn parents(&mut self, path: &Path) {
        for parent in path.ancestors().skip(1) {
            if !parent.as_os_str().is_empty() {
                self.nodes
                    .entry(parent.to_owned())
                    .or_insert(Node::Dir { mode: 0o755 });
            }
        }
    }

    /// Writes the tree as a gzipped tar archive to `out`, every entry
    /// modified at `mtime` (seconds since the epoch): an image layer.
    pub(super) fn write_layer(&self, out: File, mtime: u64) -> io::Result<Written> {
        let gzip = GzEncoder::new(Hashing::new(out), Compression::default());
        let mut tar = tar::Builder::new(Hashing::new(gzip));
        self.append_to(&mut tar, mtime)?;
        let uncompressed = tar.into_inner()?;
        let diff_id = hex::encode(uncompressed.hasher.finalize());
        let compressed = uncompressed.inner.finish()?;
        let written = Written {
            digest: hex::encode(compressed.hasher.finalize()),
            size: compressed.size,
            diff_id,
        };
        compressed.inner.sync_all()?;
        Ok(written)
    }

    /// Writes the tree as a plain tar archive to `out`, every entry
    /// modified at `mtime`.
    pub(super) fn write_archive(&self, out: File, mtime: u64) -> io::Result<()> {
        let mut tar = tar::Builder::new(out);
        self.append_to(&mut tar, mtime)?;
        tar.into_inner()?.sync_all()
    }

    fn append_to<W: Write>(&self, tar: &mut tar::Builder<W>, mtime: u64) -> io::Result<()> {
        for (path, node) in &self.nodes {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(mtime);
            header.set_uid(0);
            header.set_gid(0);
            match node {
                Node::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    tar.append_data(&mut header, path, io::empty())?;
                }
                Node::File { source, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    match source {
                        Contents::Bytes(bytes) => {
                            header.set_size(bytes.len() as u64);
                            tar.append_data(&mut header, path, bytes.as_slice())?;
                        }
                        Contents::Path(source) => {
                            let file = File::open(source).map_err(|e| {
                                io::Error::new(e.kind(), format!("{}: {e}", source.display()))
                            })?;
                            header.set_size(file.metadata()?.len());
                            tar.append_data(&mut header, path, file)?;
                        }
                    }
                }
            }
        }
        tar.finish()
    }
}

/// A path relative to the root: `/shoal/bin/host` becomes `shoal/bin/host`.
fn relative(path: &Path) -> PathBuf {
    path.strip_prefix("/").unwrap_or(path).to_owned()
}

/// The written archive, by digest.
pub(super) struct Written {
    /// Hex SHA-256 of the gzipped archive.
    pub(super) digest: String,
    /// Bytes of the gzipped archive.
    pub(super) size: u64,
    /// Hex SHA-256 of the archive before compression.
    pub(super) diff_id: String,
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
