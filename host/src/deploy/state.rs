//! What has been deployed through the admin API: every uploaded function,
//! its immutable revisions, and how its traffic is split between them.
//!
//! The state is a JSON file per function (`DATA_DIR/deploy/functions/
//! NAME.json`). Each change is computed on a copy ([`DeployState`]'s
//! operations are pure), checked by the registry's change path, then the
//! changed function's file is written to a temporary file, synced, renamed
//! over the old one, and its folder synced, before the change is published
//! or acknowledged: a host killed at any instant restarts with each
//! function as it was last written whole. A change writes its own function
//! only, so it costs the same with one function deployed or 100,000.
//!
//! Hosts before this one wrote the whole state to one file
//! (`DATA_DIR/deploy/state.json`); a host that finds it moves it to files
//! of their own, then removes it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use imbl::OrdMap;
use serde::{Deserialize, Serialize};
use shoal_runtime::Digest;

use crate::manifest::FunctionName;

/// The state file's format version.
const FORMAT: u32 = 1;

/// Revisions kept per function by default: past it, the oldest that carry
/// no traffic are removed.
pub const DEFAULT_KEEP_REVISIONS: usize = 10;

/// A revision's name: its function's name and a five-digit number,
/// `hello-00003`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RevisionName {
    function: FunctionName,
    number: u32,
}

impl RevisionName {
    /// Revision `number` of `function`.
    pub fn new(function: &FunctionName, number: u32) -> Self {
        Self {
            function: function.clone(),
            number,
        }
    }

    /// Its function.
    pub fn function(&self) -> &FunctionName {
        &self.function
    }
}

impl fmt::Display for RevisionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:05}", self.function, self.number)
    }
}

impl TryFrom<String> for RevisionName {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let bad = || format!("invalid revision `{text}`: write it like `hello-00001`");
        let (function, number) = text.rsplit_once('-').ok_or_else(bad)?;
        if number.len() < 5 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        Ok(Self {
            function: FunctionName::try_from(function.to_owned()).map_err(|_| bad())?,
            number: number.parse().map_err(|_| bad())?,
        })
    }
}

impl From<RevisionName> for String {
    fn from(name: RevisionName) -> String {
        name.to_string()
    }
}

/// Everything deployed through the admin API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployState {
    format: u32,
    /// The functions, by name: a persistent map, so that a copy of the
    /// state (each change edits one) shares every function it does not
    /// change.
    pub functions: OrdMap<FunctionName, Deployed>,
}

/// One uploaded function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployed {
    /// The number its next revision gets.
    pub next_revision: u32,
    /// Its revisions, oldest first.
    pub revisions: Vec<Revision>,
    /// Which revisions serve its requests.
    pub traffic: Traffic,
}

impl Deployed {
    /// The components its revisions use, once per revision.
    pub fn components(&self) -> impl Iterator<Item = Digest> + '_ {
        self.revisions.iter().map(|r| r.component)
    }
}

/// One immutable revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revision {
    /// Its name.
    pub name: RevisionName,
    /// The component, by digest.
    #[serde(with = "digest_text")]
    pub component: Digest,
    /// Its definition as deployed: a `[[function]]` table's fields, with
    /// `component = "sha256:..."`.
    pub definition: String,
    /// When it was deployed (RFC 3339).
    pub created: String,
}

/// How a function's requests are shared between its revisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Percent of the requests each revision serves; the shares sum to 100.
    pub split: BTreeMap<RevisionName, u8>,
    /// Requests carrying a header with a value go to a revision, whatever
    /// the split says; the first that matches wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<Pin>,
}

/// A header rule pinning requests to a revision (a canary reached with
/// `x-canary: true`, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// The header's name (any case).
    pub header: String,
    /// The value it must have, exactly.
    pub value: String,
    /// The revision such requests go to.
    pub revision: RevisionName,
}

impl Traffic {
    /// Every request to `revision`.
    pub fn all_to(revision: &RevisionName) -> Self {
        Self {
            split: BTreeMap::from([(revision.clone(), 100)]),
            pins: Vec::new(),
        }
    }

    /// The revisions that serve requests: those with a share, and those
    /// pinned.
    pub fn serving(&self) -> impl Iterator<Item = &RevisionName> {
        let mut serving: Vec<&RevisionName> = self
            .split
            .iter()
            .filter(|(_, share)| **share > 0)
            .map(|(name, _)| name)
            .chain(self.pins.iter().map(|pin| &pin.revision))
            .collect();
        serving.sort();
        serving.dedup();
        serving.into_iter()
    }
}

/// Why a change to the deployed state is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// No uploaded function has this name.
    #[error("there is no uploaded function `{0}`")]
    NoFunction(FunctionName),
    /// The function has no such revision.
    #[error("function `{function}` has no revision `{revision}`")]
    NoRevision {
        /// The function.
        function: FunctionName,
        /// The revision asked for.
        revision: String,
    },
    /// A traffic split that does not add up, or names something wrong.
    #[error("invalid traffic for function `{function}`: {why}")]
    BadTraffic {
        /// The function.
        function: FunctionName,
        /// What is wrong.
        why: String,
    },
    /// A rollback with nothing to roll back to.
    #[error("function `{0}` has no earlier revision to roll back to")]
    NothingToRollBackTo(FunctionName),
}

impl DeployState {
    /// Adds a revision of `function` (deployed now) with `definition`, and
    /// gives it all the traffic. Returns its name.
    pub fn deploy(
        &mut self,
        function: &FunctionName,
        component: Digest,
        definition: String,
        created: String,
    ) -> RevisionName {
        let deployed = self
            .functions
            .entry(function.clone())
            .or_insert_with(|| Deployed {
                next_revision: 1,
                revisions: Vec::new(),
                traffic: Traffic {
                    split: BTreeMap::new(),
                    pins: Vec::new(),
                },
            });
        let name = RevisionName::new(function, deployed.next_revision);
        deployed.next_revision += 1;
        deployed.revisions.push(Revision {
            name: name.clone(),
            component,
            definition,
            created,
        });
        deployed.traffic = Traffic::all_to(&name);
        name
    }

    /// Sets `function`'s traffic, once it is checked: every revision named
    /// exists, the shares sum to 100, each pin is a valid header.
    pub fn set_traffic(
        &mut self,
        function: &FunctionName,
        traffic: Traffic,
    ) -> Result<(), StateError> {
        let deployed = self.function_mut(function)?;
        let bad = |why: String| StateError::BadTraffic {
            function: function.clone(),
            why,
        };
        let named = traffic
            .split
            .keys()
            .chain(traffic.pins.iter().map(|pin| &pin.revision));
        for revision in named {
            if !deployed.revisions.iter().any(|r| r.name == *revision) {
                return Err(StateError::NoRevision {
                    function: function.clone(),
                    revision: revision.to_string(),
                });
            }
        }
        let total: u32 = traffic.split.values().map(|&share| u32::from(share)).sum();
        if total != 100 {
            return Err(bad(format!("the shares add up to {total}, not 100")));
        }
        for pin in &traffic.pins {
            http::HeaderName::try_from(pin.header.as_str())
                .map_err(|_| bad(format!("`{}` is not a header name", pin.header)))?;
            http::HeaderValue::try_from(pin.value.as_str())
                .map_err(|_| bad(format!("`{}` is not a header value", pin.value)))?;
        }
        deployed.traffic = traffic;
        Ok(())
    }

    /// Sends all of `function`'s traffic to `revision`, or, if none is
    /// named, to the revision before the one that has the most now.
    pub fn roll_back(
        &mut self,
        function: &FunctionName,
        revision: Option<&RevisionName>,
    ) -> Result<RevisionName, StateError> {
        let deployed = self.function_mut(function)?;
        let target = match revision {
            Some(revision) => deployed
                .revisions
                .iter()
                .find(|r| r.name == *revision)
                .map(|r| r.name.clone())
                .ok_or_else(|| StateError::NoRevision {
                    function: function.clone(),
                    revision: revision.to_string(),
                })?,
            None => {
                let current = deployed
                    .traffic
                    .split
                    .iter()
                    .max_by_key(|(name, share)| (**share, (*name).clone()))
                    .map(|(name, _)| name.clone());
                deployed
                    .revisions
                    .iter()
                    .rev()
                    .map(|r| &r.name)
                    .find(|name| current.as_ref().is_some_and(|current| *name < current))
                    .cloned()
                    .ok_or_else(|| StateError::NothingToRollBackTo(function.clone()))?
            }
        };
        deployed.traffic = Traffic::all_to(&target);
        Ok(target)
    }

    /// Takes `function` out.
    pub fn delete(&mut self, function: &FunctionName) -> Result<Deployed, StateError> {
        self.functions
            .remove(function)
            .ok_or_else(|| StateError::NoFunction(function.clone()))
    }

    /// Removes, beyond the newest `keep` revisions of `function`, those
    /// that serve no traffic. Returns the removed revisions.
    pub fn prune(&mut self, function: &FunctionName, keep: usize) -> Vec<RevisionName> {
        let mut removed = Vec::new();
        let Some(deployed) = self
            .functions
            .get_mut(function)
            .filter(|deployed| deployed.revisions.len() > keep)
        else {
            return removed;
        };
        let serving: Vec<RevisionName> = deployed.traffic.serving().cloned().collect();
        let older = deployed.revisions.len().saturating_sub(keep);
        let mut index = 0;
        deployed.revisions.retain(|revision| {
            let old = index < older && !serving.contains(&revision.name);
            index += 1;
            if old {
                removed.push(revision.name.clone());
            }
            !old
        });
        removed
    }

    /// The components some revision uses, once per revision.
    pub fn components(&self) -> impl Iterator<Item = Digest> + '_ {
        self.functions.values().flat_map(Deployed::components)
    }

    fn function_mut(&mut self, function: &FunctionName) -> Result<&mut Deployed, StateError> {
        self.functions
            .get_mut(function)
            .ok_or_else(|| StateError::NoFunction(function.clone()))
    }
}

/// A digest written as `sha256:<hex>`.
mod digest_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use shoal_runtime::Digest;

    pub(super) fn serialize<S: Serializer>(digest: &Digest, to: S) -> Result<S::Ok, S::Error> {
        to.collect_str(digest)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(from)?;
        text.strip_prefix("sha256:")
            .and_then(Digest::from_hex)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a digest")))
    }
}

/// The state's files: one per function.
#[derive(Clone)]
pub struct StateFiles {
    /// The folder of the functions' files.
    dir: PathBuf,
    /// The one file that held the whole state, before.
    whole: PathBuf,
}

/// A function's file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionFile<D> {
    format: u32,
    function: D,
}

impl StateFiles {
    /// The state's files in folder `dir` (`DATA_DIR/deploy`).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.join("functions"),
            whole: dir.join("state.json"),
        }
    }

    /// The state written last; empty if none was ever written. If `owner`
    /// (no other host writes the files), a state written whole to one file
    /// by an earlier host is moved to files of their own first, and the
    /// temporary files of a write cut off by a crash are removed; another
    /// host leaves them as they are (they may be the owner's work under
    /// way).
    pub fn load(&self, owner: bool) -> std::io::Result<DeployState> {
        std::fs::create_dir_all(&self.dir)?;
        if let Some(state) = self.load_whole()? {
            if owner {
                self.move_from_whole(&state)?;
            }
            return Ok(state);
        }
        let mut functions = OrdMap::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = function_of(&path)? else {
                if owner {
                    std::fs::remove_file(&path)?;
                }
                continue;
            };
            if let Some(deployed) = read_function(&path)? {
                functions.insert(name, deployed);
            }
        }
        Ok(DeployState {
            format: FORMAT,
            functions,
        })
    }

    /// The state written last, for a host that does not own it, which
    /// serves `served` as the files were when `seen` was made: only the
    /// files added or replaced since are read, and those removed are taken
    /// out, so that a change costs a look at each file's metadata, not a
    /// read of every file. Returns the state and what was seen of it.
    pub fn reload(
        &self,
        served: &DeployState,
        seen: &Seen,
    ) -> std::io::Result<(DeployState, Seen)> {
        std::fs::create_dir_all(&self.dir)?;
        if let Some(state) = self.load_whole()? {
            return Ok((state, Seen::default()));
        }
        let mut functions = served.functions.clone();
        let mut listed = Vec::new();
        // How many of the functions served are still there.
        let mut kept = 0;
        let mut next = Seen::default();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            let Some(name) = function_of(&path)? else {
                continue;
            };
            let stamp = match entry.metadata() {
                Ok(metadata) => Stamp::of(&metadata)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            // A stamp is seen only of a file whose function is served.
            if seen.0.get(&name) == Some(&stamp) {
                kept += 1;
            } else {
                let Some(deployed) = read_function(&path)? else {
                    continue;
                };
                kept += usize::from(functions.insert(name.clone(), deployed).is_some());
            }
            if settled(stamp.modified) {
                next.0.insert(name.clone(), stamp);
            }
            listed.push(name);
        }
        if kept < served.functions.len() {
            let listed: HashSet<FunctionName> = listed.into_iter().collect();
            for name in served.functions.keys() {
                if !listed.contains(name) {
                    functions.remove(name);
                }
            }
        }
        let state = DeployState {
            format: FORMAT,
            functions,
        };
        Ok((state, next))
    }

    /// Writes the files of `changed` functions durably as `state` has them
    /// (removing those of functions it no longer has): each a whole new
    /// file replacing the old one, and the folder synced, before this
    /// returns.
    pub fn save<'a>(
        &self,
        state: &DeployState,
        changed: impl IntoIterator<Item = &'a FunctionName>,
    ) -> std::io::Result<()> {
        for name in changed {
            match state.functions.get(name) {
                Some(deployed) => self.write(name, deployed)?,
                None => match std::fs::remove_file(self.path(name)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                },
            }
        }
        sync_dir(&self.dir)
    }

    /// When a file of the folder was last added, replaced or removed; a
    /// change to the state changes it.
    pub fn version(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.dir).ok()?.modified().ok()
    }

    fn path(&self, name: &FunctionName) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Writes function `name`'s file whole (not its folder).
    fn write(&self, name: &FunctionName, deployed: &Deployed) -> std::io::Result<()> {
        let file = FunctionFile {
            format: FORMAT,
            function: deployed,
        };
        // Serialised to memory and written in one piece: straight into the
        // file, serde writes each token with a call of its own.
        let mut json = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        json.push(b'\n');
        let mut temporary = tempfile::Builder::new()
            .prefix(".")
            .tempfile_in(&self.dir)?;
        temporary.write_all(&json)?;
        temporary.as_file().sync_all()?;
        temporary.persist(self.path(name)).map_err(|e| e.error)?;
        Ok(())
    }

    /// The state an earlier host wrote whole to one file, if there is one.
    fn load_whole(&self) -> std::io::Result<Option<DeployState>> {
        let bytes = match std::fs::read(&self.whole) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let state: DeployState = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(&self.whole, &format!("is not a valid state: {e}")))?;
        check_format(&self.whole, state.format)?;
        Ok(Some(state))
    }

    /// Writes every function of `state` (read from the whole file) to its
    /// own file, then removes the whole file. Killed before the end, the
    /// next start does it again from the whole file.
    fn move_from_whole(&self, state: &DeployState) -> std::io::Result<()> {
        for (name, deployed) in &state.functions {
            self.write(name, deployed)?;
        }
        sync_dir(&self.dir)?;
        std::fs::remove_file(&self.whole)?;
        sync_dir(self.whole.parent().expect("the state file is in a folder"))?;
        tracing::info!(
            functions = state.functions.len(),
            dir = %self.dir.display(),
            "the deployed state, written whole by an earlier host, now has a file per function"
        );
        Ok(())
    }
}

/// The function whose file `path` is, or `None` for the temporary file of
/// a write (a host killed while writing leaves it behind; a function's name
/// never starts with a dot).
fn function_of(path: &Path) -> std::io::Result<Option<FunctionName>> {
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    if file_name.starts_with('.') {
        return Ok(None);
    }
    file_name
        .strip_suffix(".json")
        .and_then(|stem| FunctionName::try_from(stem.to_owned()).ok())
        .map(Some)
        .ok_or_else(|| invalid(path, "is not a deployed function's file"))
}

/// A function's file, or `None` if it is gone (taken out by the owner since
/// its folder was listed, while another host reads).
fn read_function(path: &Path) -> std::io::Result<Option<Deployed>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let file: FunctionFile<Deployed> = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(path, &format!("is not a valid state: {e}")))?;
    check_format(path, file.format)?;
    Ok(Some(file.function))
}

/// What a host that does not own the state saw of the functions' files
/// when it last read them: a file with the same stamp is not read again.
#[derive(Debug, Default)]
pub struct Seen(HashMap<FunctionName, Stamp>);

/// A file's identity and when it was last written. A change replaces the
/// file whole (a new inode, in general), but an inode can be given again
/// once freed: so only a stamp whose time is [`settled`] is kept. A file
/// written after it shows a later time, however coarse the file system's
/// clock, so it is read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    modified: SystemTime,
}

/// How old a file's or folder's time must be to show every write made
/// before it: more than the coarsest clock of a file system the data dir
/// may be on.
const SETTLED: Duration = Duration::from_secs(1);

/// Whether `time`, a file's or folder's modification time, is older than
/// [`SETTLED`]: a write made after it shows a later time. A younger time
/// may also be that of a write right after.
pub fn settled(time: SystemTime) -> bool {
    time.elapsed().is_ok_and(|age| age > SETTLED)
}

impl Stamp {
    fn of(metadata: &std::fs::Metadata) -> std::io::Result<Self> {
        Ok(Self {
            inode: metadata.ino(),
            len: metadata.len(),
            modified: metadata.modified()?,
        })
    }
}

fn invalid(path: &Path, why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{} {why}", path.display()),
    )
}

fn check_format(path: &Path, format: u32) -> std::io::Result<()> {
    if format == FORMAT {
        return Ok(());
    }
    Err(invalid(
        path,
        &format!("has format {format}; this host reads format {FORMAT}"),
    ))
}

/// Syncs a folder, so that a rename into it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> FunctionName {
        FunctionName::try_from(text.to_owned()).unwrap()
    }

    fn deploy(state: &mut DeployState, function: &str, n: u8) -> RevisionName {
        state.deploy(
            &name(function),
            Digest::of(&[n]),
            format!("routes = [\"/{function}\"]"),
            "2026-11-29T00:00:00Z".to_owned(),
        )
    }

    fn revision(text: &str) -> RevisionName {
        RevisionName::try_from(text.to_owned()).unwrap()
    }

    #[test]
    fn revision_names_are_numbered_and_parsed_back() {
        let name = RevisionName::new(&name("my-fn"), 12);
        assert_eq!(name.to_string(), "my-fn-00012");
        assert_eq!(revision("my-fn-00012"), name);
        for bad in ["hello", "hello-1", "hello-0000x", "-00001", "Hello-00001"] {
            assert!(RevisionName::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_deploy_is_a_new_revision_with_all_the_traffic() {
        let mut state = DeployState::default();
        assert_eq!(deploy(&mut state, "a", 1), revision("a-00001"));
        assert_eq!(deploy(&mut state, "a", 2), revision("a-00002"));
        let a = &state.functions[&name("a")];
        assert_eq!(a.revisions.len(), 2);
        assert_eq!(a.traffic, Traffic::all_to(&revision("a-00002")));
    }

    #[test]
    fn traffic_must_name_revisions_and_add_up_to_100() {
        let mut state = DeployState::default();
        deploy(&mut state, "a", 1);
        deploy(&mut state, "a", 2);
        let split = |pairs: &[(&str, u8)]| Traffic {
            split: pairs.iter().map(|(r, s)| (revision(r), *s)).collect(),
            pins: Vec::new(),
        };
        let before = state.clone();
        for (bad, why) in [
            (split(&[("a-00001", 90), ("a-00002", 20)]), "add up to 110"),
            (split(&[("a-00001", 90)]), "add up to 90"),
            (split(&[("a-00009", 100)]), "no revision `a-00009`"),
        ] {
            let error = state.set_traffic(&name("a"), bad).unwrap_err();
            assert!(error.to_string().contains(why), "{error}");
        }
        let mut pinned = split(&[("a-00001", 100)]);
        pinned.pins.push(Pin {
            header: "x canary".to_owned(),
            value: "true".to_owned(),
            revision: revision("a-00002"),
        });
        assert!(state.set_traffic(&name("a"), pinned.clone()).is_err());
        assert_eq!(state, before, "refused changes change nothing");

        pinned.pins[0].header = "x-canary".to_owned();
        state.set_traffic(&name("a"), pinned).unwrap();
        let serving: Vec<_> = state.functions[&name("a")].traffic.serving().collect();
        assert_eq!(serving, [&revision("a-00001"), &revision("a-00002")]);
        assert!(matches!(
            state.set_traffic(&name("zz"), split(&[("a-00001", 100)])),
            Err(StateError::NoFunction(_))
        ));
    }

    #[test]
    fn a_rollback_goes_to_the_named_or_the_previous_revision() {
        let mut state = DeployState::default();
        assert!(state.roll_back(&name("a"), None).is_err());
        deploy(&mut state, "a", 1);
        assert_eq!(
            state.roll_back(&name("a"), None),
            Err(StateError::NothingToRollBackTo(name("a")))
        );
        deploy(&mut state, "a", 2);
        deploy(&mut state, "a", 3);
        assert_eq!(
            state.roll_back(&name("a"), None).unwrap(),
            revision("a-00002")
        );
        assert_eq!(
            state.roll_back(&name("a"), None).unwrap(),
            revision("a-00001")
        );
        let back = state
            .roll_back(&name("a"), Some(&revision("a-00003")))
            .unwrap();
        assert_eq!(back, revision("a-00003"));
        assert_eq!(
            state.functions[&name("a")].traffic,
            Traffic::all_to(&revision("a-00003"))
        );
    }

    #[test]
    fn pruning_keeps_the_newest_and_every_revision_with_traffic() {
        let mut state = DeployState::default();
        for n in 1..=5 {
            deploy(&mut state, "a", n);
        }
        let mut traffic = Traffic::all_to(&revision("a-00001"));
        traffic.split.insert(revision("a-00001"), 50);
        traffic.split.insert(revision("a-00005"), 50);
        state.set_traffic(&name("a"), traffic).unwrap();
        deploy(&mut state, "b", 1);
        for n in 2..=4 {
            deploy(&mut state, "b", n);
        }
        // Another function's revisions are left to its own changes.
        let removed = state.prune(&name("a"), 2);
        assert_eq!(removed, [revision("a-00002"), revision("a-00003")]);
        assert_eq!(state.functions[&name("b")].revisions.len(), 4);
        let left: Vec<String> = state.functions[&name("a")]
            .revisions
            .iter()
            .map(|r| r.name.to_string())
            .collect();
        assert_eq!(left, ["a-00001", "a-00004", "a-00005"]);
        // The numbers go on from where they were.
        assert_eq!(deploy(&mut state, "a", 6), revision("a-00006"));
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn each_function_is_written_to_its_own_file_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let files = StateFiles::new(dir.path());
        let functions = dir.path().join("functions");
        assert_eq!(files.load(true).unwrap().functions.len(), 0);
        let mut state = files.load(true).unwrap();
        deploy(&mut state, "a", 1);
        deploy(&mut state, "b", 2);
        files.save(&state, [&name("a"), &name("b")]).unwrap();
        assert_eq!(files.load(true).unwrap(), state);
        // No temporary file is left behind.
        assert_eq!(files_in(&functions), ["a.json", "b.json"]);

        // A change writes the files it names, and only those.
        let before_b = std::fs::read(functions.join("b.json")).unwrap();
        deploy(&mut state, "a", 3);
        deploy(&mut state, "b", 4);
        files.save(&state, [&name("a")]).unwrap();
        assert_eq!(std::fs::read(functions.join("b.json")).unwrap(), before_b);
        assert_eq!(
            files.load(true).unwrap().functions[&name("a")]
                .revisions
                .len(),
            2
        );
        assert_eq!(
            files.load(true).unwrap().functions[&name("b")]
                .revisions
                .len(),
            1
        );

        // A function taken out takes its file with it.
        state.delete(&name("a")).unwrap();
        files.save(&state, [&name("a")]).unwrap();
        assert_eq!(files_in(&functions), ["b.json"]);
    }

    /// Sets a file's time, as a file untouched for long (or a coarse file
    /// system clock) would show it.
    fn set_time(path: &Path, when: SystemTime) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(when).unwrap();
    }

    /// Writes over a file in place (the same inode) with as many bytes of
    /// something that is not a state, and puts its time back.
    fn damage_unseen(path: &Path) {
        let metadata = std::fs::metadata(path).unwrap();
        std::fs::write(path, vec![b'x'; metadata.len() as usize]).unwrap();
        set_time(path, metadata.modified().unwrap());
    }

    #[test]
    fn a_follower_reads_again_only_the_files_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let files = StateFiles::new(dir.path());
        let functions = dir.path().join("functions");
        let path = |function: &str| functions.join(format!("{function}.json"));
        let mut state = files.load(true).unwrap();
        for (function, n) in [("a", 1), ("b", 2), ("c", 3)] {
            deploy(&mut state, function, n);
            files.save(&state, [&name(function)]).unwrap();
            set_time(&path(function), SystemTime::now() - Duration::from_secs(60));
        }
        let (read, seen) = files
            .reload(&DeployState::default(), &Seen::default())
            .unwrap();
        assert_eq!(read, state);

        // A file whose stamp is as it was when read is not read again.
        damage_unseen(&path("b"));
        // Those added, replaced and removed are.
        deploy(&mut state, "a", 4);
        deploy(&mut state, "d", 5);
        state.delete(&name("c")).unwrap();
        files
            .save(&state, [&name("a"), &name("c"), &name("d")])
            .unwrap();
        let (read, seen) = files.reload(&read, &seen).unwrap();
        assert_eq!(read, state);

        // A file read when its time was less than a second old is read
        // again, even if its stamp looks the same: a coarse clock shows a
        // write right after the one read at the same time.
        damage_unseen(&path("a"));
        let error = files.reload(&read, &seen).unwrap_err().to_string();
        assert!(error.contains("a.json is not a valid state"), "{error}");
    }

    #[test]
    fn what_a_killed_write_left_is_removed_and_a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = StateFiles::new(dir.path());
        let functions = dir.path().join("functions");
        let mut state = files.load(true).unwrap();
        deploy(&mut state, "a", 1);
        files.save(&state, [&name("a")]).unwrap();
        std::fs::write(functions.join(".tmpXYZ"), "{ half writ").unwrap();
        // Another host leaves it: it may be the owner's write under way.
        assert_eq!(files.load(false).unwrap(), state);
        assert_eq!(files_in(&functions), [".tmpXYZ", "a.json"]);
        assert_eq!(files.load(true).unwrap(), state);
        assert_eq!(files_in(&functions), ["a.json"]);

        std::fs::write(functions.join("a.json"), "{ not json").unwrap();
        let error = files.load(true).unwrap_err().to_string();
        assert!(error.contains("a.json is not a valid state"), "{error}");
        std::fs::remove_file(functions.join("a.json")).unwrap();
        std::fs::write(functions.join("Not A Name.json"), "{}").unwrap();
        let error = files.load(true).unwrap_err().to_string();
        assert!(
            error.contains("is not a deployed function's file"),
            "{error}"
        );
    }

    #[test]
    fn a_state_written_whole_by_an_earlier_host_moves_to_a_file_per_function() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = DeployState {
            format: FORMAT,
            ..DeployState::default()
        };
        deploy(&mut state, "a", 1);
        deploy(&mut state, "a", 2);
        deploy(&mut state, "b", 3);
        // As earlier hosts wrote it.
        let whole = dir.path().join("state.json");
        std::fs::write(&whole, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
        // A first move killed half-way left a file behind: the next start
        // does it again from the whole state.
        std::fs::create_dir(dir.path().join("functions")).unwrap();
        std::fs::write(dir.path().join("functions/b.json"), "{ half").unwrap();

        let files = StateFiles::new(dir.path());
        // A host that does not own the state reads it as it is.
        assert_eq!(files.load(false).unwrap(), state);
        assert!(whole.exists());
        assert_eq!(files.load(true).unwrap(), state);
        assert!(!whole.exists());
        assert_eq!(
            files_in(&dir.path().join("functions")),
            ["a.json", "b.json"]
        );
        assert_eq!(files.load(true).unwrap(), state);

        std::fs::write(&whole, "{ not json").unwrap();
        assert!(files.load(true).is_err());
    }
}
