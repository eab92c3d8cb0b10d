//! Noticing that a file changed: the manifest and the components it names,
//! for `host run --watch`.
//!
//! Editors and build tools rarely write a file in place: they write a new
//! one and rename it over the old, or (cargo) link a new file under the old
//! name. A watch on the file itself would follow the old inode and miss
//! all of that, so the folders holding the files are watched instead, and
//! their events kept only when they name a watched file. A file reached
//! through a symbolic link is watched under both names.
//!
//! Changes come in bursts (a build writes, links and touches several
//! files); [`Changes::settled`] waits for a burst to go quiet, so that one
//! burst makes one reload.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::Notify;

/// How long a burst of changes must be quiet before it counts as done.
pub const QUIET: Duration = Duration::from_millis(100);

/// The longest a burst is waited on: a file written without pause still
/// reloads this often.
const MAX_BURST: Duration = Duration::from_secs(2);

/// The files of interest, by folder.
type Watched = HashMap<PathBuf, HashSet<OsString>>;

/// Watches a set of files; see the module's doc.
pub struct FileWatcher {
    watcher: notify::RecommendedWatcher,
    watched: Arc<Mutex<Watched>>,
    changes: Arc<Changes>,
}

/// The signal a [`FileWatcher`] raises when a watched file changes.
#[derive(Default)]
pub struct Changes(Notify);

impl Changes {
    /// Raises the signal: something changed.
    pub fn notify(&self) {
        self.0.notify_one();
    }

    /// Waits for a change, then for the burst it starts to go quiet.
    pub async fn settled(&self) {
        self.0.notified().await;
        let burst = tokio::time::sleep(MAX_BURST);
        let mut burst = std::pin::pin!(burst);
        loop {
            tokio::select! {
                () = &mut burst => return,
                quiet = tokio::time::timeout(QUIET, self.0.notified()) => {
                    if quiet.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

impl FileWatcher {
    /// A watcher of nothing yet.
    pub fn new() -> notify::Result<Self> {
        let watched: Arc<Mutex<Watched>> = Arc::default();
        let changes = Arc::new(Changes::default());
        let watcher = notify::recommended_watcher({
            let (watched, changes) = (watched.clone(), changes.clone());
            move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if matches!(event.kind, EventKind::Access(_)) {
                    return;
                }
                let watched = watched.lock().unwrap_or_else(|e| e.into_inner());
                let concerns_us = event.paths.iter().any(|path| {
                    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                        return false;
                    };
                    watched.get(dir).is_some_and(|names| names.contains(name))
                });
                if concerns_us {
                    changes.0.notify_one();
                }
            }
        })?;
        Ok(Self {
            watcher,
            watched,
            changes,
        })
    }

    /// What the watcher raises when a watched file changes.
    pub fn changes(&self) -> Arc<Changes> {
        self.changes.clone()
    }

    /// Watches exactly `files` from now on. A folder that cannot be watched
    /// (it does not exist yet, say) is skipped and logged.
    pub fn watch<'a>(&mut self, files: impl IntoIterator<Item = &'a Path>) {
        let mut wanted = Watched::new();
        for file in files {
            for name in names(file) {
                if let (Some(dir), Some(file_name)) = (name.parent(), name.file_name()) {
                    wanted
                        .entry(dir.to_owned())
                        .or_default()
                        .insert(file_name.to_owned());
                }
            }
        }
        // The watcher's own thread takes the lock to filter events, and
        // `watch` waits for that thread: never call it with the lock held.
        let before: HashSet<PathBuf> = self.lock().keys().cloned().collect();
        for dir in before.iter().filter(|dir| !wanted.contains_key(*dir)) {
            let _ = self.watcher.unwatch(dir);
        }
        wanted.retain(|dir, _| {
            before.contains(dir)
                || self
                    .watcher
                    .watch(dir, RecursiveMode::NonRecursive)
                    .inspect_err(|error| {
                        tracing::warn!(folder = %dir.display(), %error, "cannot watch a folder for changes");
                    })
                    .is_ok()
        });
        *self.lock() = wanted;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The names under which a change to `file` shows: its absolute path, and
/// the path of the file a symbolic link leads to.
fn names(file: &Path) -> Vec<PathBuf> {
    let mut names = Vec::with_capacity(2);
    if let Ok(absolute) = std::path::absolute(file) {
        names.push(absolute);
    }
    if let Ok(real) = std::fs::canonicalize(file)
        && !names.contains(&real)
    {
        names.push(real);
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `changes` is raised within a second.
    async fn raised(changes: &Changes) -> bool {
        tokio::time::timeout(Duration::from_secs(1), changes.0.notified())
            .await
            .is_ok()
    }

    /// Lets the events of the last writes arrive, and forgets them.
    async fn drained(changes: &Changes) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = tokio::time::timeout(Duration::from_millis(10), changes.0.notified()).await;
    }

    #[tokio::test]
    async fn a_file_replaced_by_rename_or_link_is_noticed_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let watched = dir.path().join("f.wasm");
        std::fs::write(&watched, "one").unwrap();
        let mut watcher = FileWatcher::new().unwrap();
        watcher.watch([watched.as_path()]);
        let changes = watcher.changes();

        // A neighbour changing is not a change.
        std::fs::write(dir.path().join("other.wasm"), "x").unwrap();
        assert!(!raised(&changes).await);

        // Written in place, renamed over, linked over.
        std::fs::write(&watched, "two").unwrap();
        assert!(raised(&changes).await);
        let next = dir.path().join("next");
        std::fs::write(&next, "three").unwrap();
        std::fs::rename(&next, &watched).unwrap();
        assert!(raised(&changes).await);
        std::fs::write(&next, "four").unwrap();
        std::fs::remove_file(&watched).unwrap();
        std::fs::hard_link(&next, &watched).unwrap();
        assert!(raised(&changes).await);

        // Through a symbolic link, the file it leads to is watched too.
        let real_dir = tempfile::tempdir().unwrap();
        let real = real_dir.path().join("real.wasm");
        std::fs::write(&real, "a").unwrap();
        let link = dir.path().join("link.wasm");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        watcher.watch([link.as_path()]);
        drained(&changes).await;
        std::fs::write(&real, "b").unwrap();
        assert!(raised(&changes).await);

        // Unwatched: the old file changes without a signal.
        drained(&changes).await;
        std::fs::write(&watched, "five").unwrap();
        assert!(!raised(&changes).await);
    }
}
