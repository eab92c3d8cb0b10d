//! Building functions from their sources, for `host run --build`.
//!
//! A function's `build` in the manifest names a shell command, the folder
//! it runs in, and the source files (globs) whose change calls for a new
//! build. `host run --build` runs every function's command before serving
//! and stops, with the command's output, if one fails. With `--watch` too,
//! a change to a function's sources runs its command again; the component
//! it writes is a watched file, so the reload that follows changes that
//! function only (the others' components are the same bytes, and stay
//! warm). A build that fails while serving is logged with its output, and
//! the function keeps serving as it was.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::{EventKind, RecursiveMode, Watcher as _};

use crate::manifest::{FunctionDecl, FunctionName};
use crate::watch::Changes;

/// The most lines of a failed build's output that are shown.
const OUTPUT_LINES: usize = 60;

/// How a function is built, as its manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// A shell command (`sh -c`).
    pub command: String,
    /// The folder it runs in, resolved against the manifest's.
    pub workdir: PathBuf,
    /// Globs, relative to `workdir`, of the sources whose change calls for
    /// a new build.
    pub watch: Vec<String>,
}

impl BuildSpec {
    /// The set matching `watch`; the globs were checked when the manifest
    /// was parsed.
    fn globs(&self) -> GlobSet {
        let mut set = GlobSetBuilder::new();
        for glob in &self.watch {
            if let Ok(glob) = Glob::new(glob) {
                set.add(glob);
            }
        }
        set.build().unwrap_or_else(|_| GlobSet::empty())
    }
}

/// Checks one `watch` glob.
pub fn check_glob(glob: &str) -> Result<(), String> {
    Glob::new(glob)
        .map(drop)
        .map_err(|e| format!("invalid glob `{glob}`: {}", e.kind()))
}

/// A build that failed: its function, command, how it ended and the end of
/// its output.
#[derive(Debug)]
pub struct BuildError {
    function: FunctionName,
    command: String,
    ended: Result<ExitStatus, std::io::Error>,
    output: String,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let function = &self.function;
        let command = &self.command;
        match &self.ended {
            Ok(status) => write!(
                f,
                "building function `{function}` failed ({status}): {command}"
            )?,
            Err(error) => write!(
                f,
                "building function `{function}` failed: cannot run `{command}`: {error}"
            )?,
        }
        if !self.output.is_empty() {
            write!(f, "\n{}", self.output)?;
        }
        Ok(())
    }
}

impl std::error::Error for BuildError {}

/// Runs `function`'s build; how long it took.
pub async fn build(function: &FunctionName, spec: &BuildSpec) -> Result<Duration, BuildError> {
    let started = Instant::now();
    let fail = |ended, output: &[u8]| BuildError {
        function: function.clone(),
        command: spec.command.clone(),
        ended,
        output: last_lines(&String::from_utf8_lossy(output)),
    };
    // In a process group of its own, so that a build stopped half-way
    // (the host stopped while building) takes its children with it.
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&spec.command)
        .current_dir(&spec.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| fail(Err(error), b""))?;
    let mut group = Group(child.id());
    let output = child
        .wait_with_output()
        .await
        .map_err(|error| fail(Err(error), b""))?;
    group.0 = None;
    if !output.status.success() {
        let mut all = output.stdout;
        all.extend_from_slice(&output.stderr);
        return Err(fail(Ok(output.status), &all));
    }
    Ok(started.elapsed())
}

/// A build's process group, stopped when dropped unless it finished.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        let group = self
            .0
            .and_then(|pid| rustix::process::Pid::from_raw(pid as i32));
        if let Some(group) = group {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
        }
    }
}

/// Builds every function of `functions` that has a build, in order; stops
/// at the first that fails.
pub async fn build_all(functions: &[Arc<FunctionDecl>]) -> Result<(), BuildError> {
    for function in functions {
        let Some(spec) = &function.build else {
            continue;
        };
        tracing::info!(function = %function.name, command = %spec.command, "building");
        let took = build(&function.name, spec).await?;
        tracing::info!(function = %function.name, elapsed_ms = took.as_secs_f64() * 1e3, "built");
    }
    Ok(())
}

/// The last [`OUTPUT_LINES`] lines of `output`.
fn last_lines(output: &str) -> String {
    let lines: Vec<&str> = output.trim_end().lines().collect();
    let skipped = lines.len().saturating_sub(OUTPUT_LINES);
    let mut text = String::new();
    if skipped > 0 {
        text.push_str(&format!("... ({skipped} lines before)\n"));
    }
    text.push_str(&lines[skipped..].join("\n"));
    text
}

/// The sources of the functions with a build and watch globs; which
/// functions changed since asked last.
pub struct SourceWatcher {
    watcher: notify::RecommendedWatcher,
    state: Arc<Mutex<Sources>>,
    changes: Arc<Changes>,
}

#[derive(Default)]
struct Sources {
    /// Each function's folder, globs and component (never a source).
    functions: HashMap<FunctionName, (PathBuf, GlobSet, PathBuf)>,
    /// The folders watched.
    folders: BTreeSet<PathBuf>,
    /// Functions whose sources changed, not yet built.
    changed: BTreeSet<FunctionName>,
}

impl SourceWatcher {
    /// A watcher of no sources yet.
    pub fn new() -> notify::Result<Self> {
        let state: Arc<Mutex<Sources>> = Arc::default();
        let changes = Arc::new(Changes::default());
        let watcher = notify::recommended_watcher({
            let (state, changes) = (state.clone(), changes.clone());
            move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if matches!(event.kind, EventKind::Access(_)) {
                    return;
                }
                let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                let mut hit = Vec::new();
                for (name, (workdir, globs, component)) in &state.functions {
                    let concerns = event.paths.iter().any(|path| {
                        path != component
                            && path
                                .strip_prefix(workdir)
                                .is_ok_and(|relative| globs.is_match(relative))
                    });
                    if concerns {
                        hit.push(name.clone());
                    }
                }
                if !hit.is_empty() {
                    state.changed.extend(hit);
                    changes.notify();
                }
            }
        })?;
        Ok(Self {
            watcher,
            state,
            changes,
        })
    }

    /// What the watcher raises when a source changes.
    pub fn changes(&self) -> Arc<Changes> {
        self.changes.clone()
    }

    /// Watches the sources of `functions` from now on.
    pub fn watch(&mut self, functions: &[Arc<FunctionDecl>]) {
        let mut wanted = HashMap::new();
        for function in functions {
            let Some(spec) = function.build.as_ref().filter(|s| !s.watch.is_empty()) else {
                continue;
            };
            let workdir = spec
                .workdir
                .canonicalize()
                .unwrap_or_else(|_| spec.workdir.clone());
            let component = function
                .component
                .canonicalize()
                .unwrap_or_else(|_| function.component.clone());
            wanted.insert(function.name.clone(), (workdir, spec.globs(), component));
        }
        let folders: BTreeSet<PathBuf> = wanted.values().map(|(dir, ..)| dir.clone()).collect();
        // The watcher's thread takes the lock: never (un)watch holding it.
        let before = std::mem::take(&mut self.lock().folders);
        for gone in before.difference(&folders) {
            let _ = self.watcher.unwatch(gone);
        }
        let mut watched = BTreeSet::new();
        for folder in &folders {
            if before.contains(folder) {
                watched.insert(folder.clone());
                continue;
            }
            match self.watcher.watch(folder, RecursiveMode::Recursive) {
                Ok(()) => {
                    watched.insert(folder.clone());
                }
                Err(error) => tracing::warn!(
                    folder = %folder.display(), %error,
                    "cannot watch a function's sources; it is not rebuilt on change"
                ),
            }
        }
        let mut state = self.lock();
        state.folders = watched;
        state.functions = wanted;
    }

    /// The functions whose sources changed since the last call.
    pub fn take_changed(&self) -> BTreeSet<FunctionName> {
        std::mem::take(&mut self.lock().changed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sources> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Rebuilds, one after the other, the functions of `functions` named in
/// `changed`; a failure is logged and leaves the function as it was.
pub async fn rebuild(functions: &[Arc<FunctionDecl>], changed: &BTreeSet<FunctionName>) {
    for function in functions.iter().filter(|f| changed.contains(&f.name)) {
        let Some(spec) = &function.build else {
            continue;
        };
        tracing::info!(function = %function.name, command = %spec.command, "sources changed: rebuilding");
        match build(&function.name, spec).await {
            Ok(took) => tracing::info!(
                function = %function.name, elapsed_ms = took.as_secs_f64() * 1e3,
                "rebuilt; the new component is applied when it is written"
            ),
            Err(error) => tracing::error!(
                %error, "rebuild failed; the function keeps serving as it was"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_output_keeps_its_end() {
        let output: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        let shown = last_lines(&output);
        assert!(
            shown.starts_with("... (40 lines before)\nline 41\n"),
            "{shown}"
        );
        assert!(shown.ends_with("line 100"));
        assert_eq!(last_lines("one\ntwo\n"), "one\ntwo");
    }

    #[tokio::test]
    async fn a_failing_build_reports_its_status_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let name = FunctionName::try_from("f".to_owned()).unwrap();
        let spec = |command: &str| BuildSpec {
            command: command.to_owned(),
            workdir: dir.path().to_owned(),
            watch: Vec::new(),
        };
        build(&name, &spec("echo ok > built")).await.unwrap();
        assert!(dir.path().join("built").exists(), "runs in its folder");
        let error = build(&name, &spec("echo compiling; echo 'error: no' >&2; exit 3"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("building function `f` failed (exit status: 3): echo compiling;"),
            "{error}"
        );
        assert!(error.ends_with("compiling\nerror: no"), "{error}");
    }
}
