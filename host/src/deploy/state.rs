//! What has been deployed through the admin API: every uploaded function,
//! its immutable revisions, and how its traffic is split between them.
//!
//! The state is one JSON file (`DATA_DIR/deploy/state.json`). Each change
//! is computed on a copy ([`DeployState`]'s operations are pure), checked by
//! the registry's change path, then written to a temporary file, synced,
//! renamed over the old one, and its folder synced, before the change is
//! published or acknowledged: a host killed at any instant restarts into the
//! last state written whole.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

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

    /// Removes, beyond the newest `keep` revisions of each function, those
    /// that serve no traffic. Returns the removed revisions.
    pub fn prune(&mut self, keep: usize) -> Vec<RevisionName> {
        let mut removed = Vec::new();
        // Only the functions with revisions to spare are touched (a copy of
        // the state shares the others).
        let over: Vec<FunctionName> = self
            .functions
            .iter()
            .filter(|(_, deployed)| deployed.revisions.len() > keep)
            .map(|(name, _)| name.clone())
            .collect();
        for name in over {
            let deployed = self.functions.get_mut(&name).expect("listed just now");
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
        }
        removed
    }

    /// The components some revision uses.
    pub fn components(&self) -> impl Iterator<Item = Digest> + '_ {
        self.functions
            .values()
            .flat_map(|f| f.revisions.iter().map(|r| r.component))
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

/// The state's file.
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file in folder `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("state.json"),
        }
    }

    /// The state written last; empty if none was ever written.
    pub fn load(&self) -> std::io::Result<DeployState> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let state: DeployState = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is not a valid state: {e}", self.path.display()),
                    )
                })?;
                if state.format != FORMAT {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} has format {}; this host reads format {FORMAT}",
                            self.path.display(),
                            state.format
                        ),
                    ));
                }
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DeployState {
                format: FORMAT,
                ..DeployState::default()
            }),
            Err(e) => Err(e),
        }
    }

    /// Writes `state` durably: a whole new file replaces the old one, and
    /// both the file and its folder are synced before this returns.
    pub fn save(&self, state: &DeployState) -> std::io::Result<()> {
        /// The state as written: this host's format, the functions as
        /// they are (not copied).
        #[derive(Serialize)]
        struct Saved<'a> {
            format: u32,
            functions: &'a OrdMap<FunctionName, Deployed>,
        }
        let state = Saved {
            format: FORMAT,
            functions: &state.functions,
        };
        let dir = self.path.parent().expect("the state file is in a folder");
        // Written in one piece: straight into the file, serde writes each
        // token with a call of its own (a state of 1,000 functions took
        // 160 ms to write that way).
        let mut json = serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?;
        json.push(b'\n');
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        file.write_all(&json)?;
        file.as_file().sync_all()?;
        file.persist(&self.path).map_err(|e| e.error)?;
        sync_dir(dir)
    }
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
        let removed = state.prune(2);
        assert_eq!(removed, [revision("a-00002"), revision("a-00003")]);
        let left: Vec<String> = state.functions[&name("a")]
            .revisions
            .iter()
            .map(|r| r.name.to_string())
            .collect();
        assert_eq!(left, ["a-00001", "a-00004", "a-00005"]);
        // The numbers go on from where they were.
        assert_eq!(deploy(&mut state, "a", 6), revision("a-00006"));
    }

    #[test]
    fn the_state_file_is_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        assert_eq!(file.load().unwrap().functions.len(), 0);
        let mut state = file.load().unwrap();
        deploy(&mut state, "a", 1);
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), state);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(dir.path().join("state.json"), "{ not json").unwrap();
        assert!(file.load().is_err());
    }
}
