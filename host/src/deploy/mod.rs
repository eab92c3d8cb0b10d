//! Functions uploaded to a running host: components stored by digest
//! ([`blobs`]), and immutable revisions with the traffic between them
//! ([`state`]), kept in `DATA_DIR/deploy`.
//!
//! Every operation (deploy, traffic, rollback, delete) edits a copy of the
//! deployed state inside the registry's one change path
//! ([`Registry::change`]): the new table is built, checked and compiled,
//! then the state is written durably, and only then is the table swapped in
//! and the caller answered. A refused operation changes neither. The state
//! folder is locked by one host at a time; a second host sharing the data
//! dir serves what the owner deploys, reading its changes as they are
//! written, and refuses changes of its own until the owner is gone and it
//! takes the lock.

pub mod blobs;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::Stream;
use http::StatusCode;
use imbl::OrdMap;
use imbl::ordmap::DiffItem;
use shoal_runtime::{ComponentSource, Digest, LoadError};

use self::blobs::{BlobStore, Stored, UploadError};
use self::state::{DeployState, Deployed, RevisionName, Seen, StateError, StateFiles, Traffic};
use crate::manifest::{FunctionName, ManifestError, parse_definition};
use crate::registry::function::{Share, Source};
use crate::registry::{Applied, ChangeError, Desired, DesiredRevision, Publish, Registry, Sources};

/// How often a host that does not own the deployed state looks for the
/// owner's changes, and for the owner being gone.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// How long an uploaded component that no revision uses is kept (the time
/// between an upload and the deploy that uses it).
const UNUSED_UPLOAD_GRACE: Duration = Duration::from_secs(3600);

/// Why an operation was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The upload could not be stored (too large, cut off).
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// The uploaded bytes are not a component this host can serve.
    #[error("the component is refused: {0}")]
    Component(Arc<LoadError>),
    /// The definition is invalid.
    #[error("{0}")]
    Definition(#[from] ManifestError),
    /// The deployed state does not allow it (no such function, revision...).
    #[error(transparent)]
    State(#[from] StateError),
    /// The function is the manifest's.
    #[error(
        "function `{0}` is declared in the manifest; change it there, not through the admin API"
    )]
    ManifestFunction(FunctionName),
    /// The change was refused (a route conflict, a component that does not
    /// compile...).
    #[error(transparent)]
    Change(#[from] ChangeError),
    /// Another host owns this data dir's deployed state.
    #[error(
        "another host owns the deployed state in {0}; this one serves its changes and makes none \
         until that host is gone"
    )]
    NotOwner(PathBuf),
}

impl DeployError {
    /// The status an admin API call that failed so is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Upload(UploadError::TooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Upload(UploadError::Io(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Upload(UploadError::Stream(_))
            | Self::Component(_)
            | Self::Definition(_)
            | Self::State(StateError::BadTraffic { .. }) => StatusCode::BAD_REQUEST,
            Self::State(StateError::NoFunction(_) | StateError::NoRevision { .. }) => {
                StatusCode::NOT_FOUND
            }
            Self::State(StateError::NothingToRollBackTo(_))
            | Self::ManifestFunction(_)
            | Self::NotOwner(_)
            | Self::Change(ChangeError::NameTaken(_) | ChangeError::Table(_)) => {
                StatusCode::CONFLICT
            }
            Self::Change(ChangeError::Function(_)) => StatusCode::BAD_REQUEST,
            Self::Change(ChangeError::Commit(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What an upload stored.
#[derive(Debug, Clone, Copy)]
pub struct Uploaded {
    /// The component's digest and size, and whether it was there before.
    pub stored: Stored,
}

/// What a deploy, traffic change, rollback or deletion did.
#[derive(Debug)]
pub struct Done {
    /// The registry's change.
    pub applied: Applied,
    /// The function's revision that the operation is about, if any.
    pub revision: Option<RevisionName>,
}

/// The functions deployed through the admin API.
pub struct Deployments {
    registry: Arc<Registry>,
    dir: PathBuf,
    blobs: BlobStore,
    files: StateFiles,
    /// The state last committed.
    committed: Mutex<Committed>,
    keep_revisions: usize,
    max_upload: u64,
    /// The lock on the state folder; `None` while another host holds it.
    owner: Mutex<Option<std::fs::File>>,
    /// When the state folder was last changed, as read just before the
    /// state was loaded.
    loaded_version: Option<SystemTime>,
}

impl Deployments {
    /// Opens the deployed state in `data_dir/deploy` (creating it), taking
    /// its lock if no other host holds it.
    pub fn open(
        data_dir: &Path,
        registry: Arc<Registry>,
        keep_revisions: usize,
        max_upload: u64,
    ) -> std::io::Result<Self> {
        let dir = data_dir.join("deploy");
        std::fs::create_dir_all(&dir)?;
        let owner = lock(&dir.join("lock"))?;
        if owner.is_none() {
            tracing::warn!(
                dir = %dir.display(),
                "another host owns the deployed state here; serving its changes, refusing changes of this host's own"
            );
        }
        // What a crash left (a cut-off upload, a state file half written)
        // is cleaned up by the owner only: for another host, it may be the
        // owner's work under way.
        let blobs = BlobStore::open(&dir.join("blobs"))?;
        if owner.is_some() {
            blobs.remove_partial_uploads()?;
        }
        let files = StateFiles::new(&dir);
        let loaded_version = files.version();
        let state = files.load(owner.is_some())?;
        Ok(Self {
            registry,
            blobs,
            files,
            committed: Mutex::new(Committed::new(state)),
            keep_revisions: keep_revisions.max(1),
            max_upload,
            owner: Mutex::new(owner),
            loaded_version,
            dir,
        })
    }

    /// The largest upload, in bytes.
    pub fn max_upload(&self) -> u64 {
        self.max_upload
    }

    /// The state committed last.
    pub fn state(&self) -> DeployState {
        self.lock_committed().state.clone()
    }

    /// The deployed functions, as the registry serves them.
    pub fn desired(&self) -> Result<OrdMap<FunctionName, Desired>, DeployError> {
        let state = self.state();
        let mut functions = OrdMap::new();
        for (name, deployed) in &state.functions {
            let desired = desired(name, deployed, &self.blobs, None)?;
            functions.insert(name.clone(), desired);
        }
        Ok(functions)
    }

    /// Stores an uploaded component and checks that it compiles and serves
    /// HTTP here; a refused one is not kept.
    pub async fn upload<S, E>(&self, body: S) -> Result<Uploaded, DeployError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.check_owner()?;
        let stored = self.blobs.put(body, self.max_upload).await?;
        let path = self.blobs.path(&stored.digest);
        let source = tokio::task::spawn_blocking(move || ComponentSource::read(&path))
            .await
            .expect("reading a component does not panic");
        let checked = match source {
            Ok(source) => self.registry.compile(source).await,
            Err(error) => Err(Arc::new(error)),
        };
        if let Err(error) = checked {
            if !stored.existed && !self.uses(&stored.digest) {
                self.blobs.remove(&stored.digest);
            }
            return Err(DeployError::Component(error));
        }
        Ok(Uploaded { stored })
    }

    /// Deploys `definition` (a `[[function]]` table's fields naming an
    /// uploaded component) as the next revision of function `name`, with
    /// all its traffic.
    pub async fn deploy(
        &self,
        name: &FunctionName,
        definition: String,
    ) -> Result<Done, DeployError> {
        self.check_owner()?;
        let decl = parse_definition(&definition, name, |text| resolve(&self.blobs, text))?;
        let component = self
            .blobs
            .digest_of(&decl.component)
            .expect("a resolved component is a blob");
        let created = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        self.edit(name, move |state| {
            Ok(Some(state.deploy(name, component, definition, created)))
        })
        .await
    }

    /// Sets function `name`'s traffic.
    pub async fn set_traffic(
        &self,
        name: &FunctionName,
        traffic: Traffic,
    ) -> Result<Done, DeployError> {
        self.check_owner()?;
        self.edit(name, move |state| {
            state.set_traffic(name, traffic)?;
            Ok(None)
        })
        .await
    }

    /// Sends all of function `name`'s traffic to `revision`, or to the one
    /// before the current.
    pub async fn roll_back(
        &self,
        name: &FunctionName,
        revision: Option<RevisionName>,
    ) -> Result<Done, DeployError> {
        self.check_owner()?;
        self.edit(name, move |state| {
            state.roll_back(name, revision.as_ref()).map(Some)
        })
        .await
    }

    /// Takes function `name` out.
    pub async fn delete(&self, name: &FunctionName) -> Result<Done, DeployError> {
        self.check_owner()?;
        self.edit(name, move |state| {
            state.delete(name)?;
            Ok(None)
        })
        .await
    }

    /// Applies `operation` (which changes function `name` only) to a copy
    /// of the state, through the registry's change path, writing the
    /// function's state before the change is published. The state in
    /// memory is replaced there too, inside the serialised path, so that
    /// the next change starts from this one.
    async fn edit(
        &self,
        name: &FunctionName,
        operation: impl FnOnce(&mut DeployState) -> Result<Option<RevisionName>, StateError>,
    ) -> Result<Done, DeployError> {
        let mut released = Vec::new();
        let (applied, (_, revision, pruned)) = self
            .registry
            .change(
                Publish::WhenCompiled,
                |sources| {
                    // The table serving is the one `sources` made.
                    let table = self.registry.table();
                    if table
                        .get(name)
                        .is_some_and(|f| f.source() == Source::Manifest)
                    {
                        return Err(DeployError::ManifestFunction(name.clone()));
                    }
                    let mut state = self.state();
                    let revision = operation(&mut state)?;
                    let pruned = state.prune(name, self.keep_revisions);
                    self.serve_as(sources, name, &state)?;
                    Ok((state, revision, pruned))
                },
                |(state, ..)| {
                    self.files.save(state, [name]).map_err(|e| {
                        DeployError::Change(ChangeError::Commit(format!(
                            "cannot write the deployed state: {e}"
                        )))
                    })?;
                    released = self
                        .lock_committed()
                        .replace(std::slice::from_ref(name), state);
                    Ok(())
                },
            )
            .await?;
        if !pruned.is_empty() {
            let pruned: Vec<String> = pruned.iter().map(ToString::to_string).collect();
            tracing::info!(revisions = ?pruned, "old revisions without traffic removed");
        }
        // Components no revision uses any more go at once. (A deploy that
        // uploaded the same bytes a moment before finds them gone and is
        // refused, 400; uploading again fixes it.)
        for released in &released {
            self.blobs.remove(released);
        }
        Ok(Done { applied, revision })
    }

    /// Removes uploaded components that no revision uses and that were
    /// uploaded long enough ago (an upload waits that long for its deploy).
    /// Only the owner does: another host's state may be older than the
    /// owner's, which may use them.
    pub fn collect_blobs(&self) {
        if !self.owns() {
            return;
        }
        let keep: HashSet<Digest> = self.lock_committed().users.keys().copied().collect();
        match self.blobs.collect(&keep, UNUSED_UPLOAD_GRACE) {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "unused uploaded components removed"),
            Err(error) => tracing::warn!(%error, "cannot remove unused uploaded components"),
        }
    }

    fn uses(&self, digest: &Digest) -> bool {
        self.lock_committed().users.contains_key(digest)
    }

    /// Makes `sources` serve function `name` as `state` has it, or not at
    /// all if `state` has no such function.
    fn serve_as(
        &self,
        sources: &mut Sources,
        name: &FunctionName,
        state: &DeployState,
    ) -> Result<(), DeployError> {
        match state.functions.get(name) {
            Some(deployed) => {
                let before = sources.deployed.get(name);
                let desired = desired(name, deployed, &self.blobs, before)?;
                sources.deployed.insert(name.clone(), desired);
            }
            None => {
                sources.deployed.remove(name);
            }
        }
        Ok(())
    }

    /// Whether this host owns the deployed state (and may change it).
    pub fn owns(&self) -> bool {
        self.owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn check_owner(&self) -> Result<(), DeployError> {
        if self.owns() {
            Ok(())
        } else {
            Err(DeployError::NotOwner(self.dir.clone()))
        }
    }

    /// While another host owns the deployed state, serves its changes once
    /// they are written (looking every [`FOLLOW_INTERVAL`]), and takes the
    /// state over once that host is gone. Returns when this host owns it.
    pub async fn follow(&self) {
        // The folder's version whose state is served; one not yet settled
        // is read again (its time may not show a change made right after).
        let settled = |version: Option<SystemTime>| version.filter(|v| state::settled(*v));
        let mut served = settled(self.loaded_version);
        let mut seen = Seen::default();
        let mut last_error = None;
        while !self.owns() {
            tokio::time::sleep(FOLLOW_INTERVAL).await;
            match lock(&self.dir.join("lock")) {
                Ok(Some(file)) => {
                    *self.owner.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
                    tracing::info!(
                        dir = %self.dir.display(),
                        "the host that owned the deployed state is gone; this one owns it now"
                    );
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "cannot look at the deployed state's lock"),
            }
            let owner = self.owns();
            let version = self.files.version();
            if !owner && version.is_some() && version == served {
                continue;
            }
            match self.catch_up(owner, &mut seen).await {
                Ok(changed) => {
                    served = settled(version);
                    last_error = None;
                    if changed > 0 {
                        tracing::info!(
                            changed,
                            "the owner's changes to the deployed state are served"
                        );
                    }
                }
                // Said once, not every interval.
                Err(error) => {
                    let error = error.to_string();
                    if last_error.as_ref() != Some(&error) {
                        tracing::warn!(%error, "cannot serve the deployed state as its owner wrote it; trying again");
                    }
                    last_error = Some(error);
                }
            }
        }
        // What the owner left under way is now left behind.
        if let Err(error) = self.blobs.remove_partial_uploads() {
            tracing::warn!(%error, "cannot clean up the uploads");
        }
        self.collect_blobs();
    }

    /// Serves the deployed state as the files have it. If `owner`, reads
    /// them all and cleans up what a cut-off write left; if not, reads only
    /// those changed since `seen`, and updates it once they are served.
    /// Returns how many functions changed.
    async fn catch_up(&self, owner: bool, seen: &mut Seen) -> Result<usize, DeployError> {
        let files = self.files.clone();
        let served = self.state();
        let previous = std::mem::take(seen);
        let (read, previous) = tokio::task::spawn_blocking(move || {
            let read = if owner {
                files.load(true).map(|state| (state, Seen::default()))
            } else {
                files.reload(&served, &previous)
            };
            (read, previous)
        })
        .await
        .expect("reading the state does not panic");
        // What was seen of the state served, until what was read is served.
        *seen = previous;
        let (loaded, next) = read.map_err(|e| {
            DeployError::Change(ChangeError::Commit(format!(
                "cannot read the deployed state: {e}"
            )))
        })?;
        let (_, changed) = self
            .registry
            .change(
                Publish::WhenCompiled,
                |sources| {
                    let current = self.state();
                    let changed: Vec<FunctionName> = current
                        .functions
                        .diff(&loaded.functions)
                        .map(|item| match item {
                            DiffItem::Add(name, _)
                            | DiffItem::Update { new: (name, _), .. }
                            | DiffItem::Remove(name, _) => name.clone(),
                        })
                        .collect();
                    for name in &changed {
                        self.serve_as(sources, name, &loaded)?;
                    }
                    Ok::<_, DeployError>(changed)
                },
                |changed| {
                    // This host collects no components: what it releases
                    // is the owner's to remove.
                    self.lock_committed().replace(changed, &loaded);
                    Ok(())
                },
            )
            .await?;
        *seen = next;
        Ok(changed.len())
    }

    fn lock_committed(&self) -> std::sync::MutexGuard<'_, Committed> {
        self.committed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The state last committed, and how many revisions use each component.
struct Committed {
    state: DeployState,
    /// Revisions per component, for the components some revision uses.
    users: HashMap<Digest, usize>,
}

impl Committed {
    fn new(state: DeployState) -> Self {
        let mut users = HashMap::new();
        for component in state.components() {
            *users.entry(component).or_default() += 1;
        }
        Self { state, users }
    }

    /// Takes `next`, which differs from the state committed in functions
    /// `changed` only. Returns the components no revision uses any more.
    fn replace(&mut self, changed: &[FunctionName], next: &DeployState) -> Vec<Digest> {
        let components = |state: &DeployState| -> Vec<Digest> {
            changed
                .iter()
                .filter_map(|name| state.functions.get(name))
                .flat_map(Deployed::components)
                .collect()
        };
        // Counted up before down, so that a component the function keeps
        // never reaches zero.
        for component in components(next) {
            *self.users.entry(component).or_default() += 1;
        }
        let mut released = Vec::new();
        for component in components(&self.state) {
            let users = self
                .users
                .get_mut(&component)
                .expect("a component in use is counted");
            *users -= 1;
            if *users == 0 {
                self.users.remove(&component);
                released.push(component);
            }
        }
        self.state = next.clone();
        released
    }
}

/// Function `name` as the registry serves it: with the revisions its
/// traffic names. A revision already in `before` (the function as served
/// so far) keeps its declaration, since a revision never changes: the
/// registry then keeps it as it is, without reading its component again.
fn desired(
    name: &FunctionName,
    deployed: &Deployed,
    blobs: &BlobStore,
    before: Option<&Desired>,
) -> Result<Desired, DeployError> {
    let mut revisions = Vec::new();
    for serving in deployed.traffic.serving() {
        let record = deployed
            .revisions
            .iter()
            .find(|r| r.name == *serving)
            .ok_or_else(|| StateError::NoRevision {
                function: name.clone(),
                revision: serving.to_string(),
            })?;
        let declared = before
            .into_iter()
            .flat_map(|before| &before.revisions)
            .find(|wanted| wanted.revision.as_ref() == Some(&record.name));
        let decl = match declared {
            Some(wanted) => wanted.decl.clone(),
            None => Arc::new(parse_definition(&record.definition, name, |text| {
                resolve(blobs, text)
            })?),
        };
        let pins = deployed
            .traffic
            .pins
            .iter()
            .filter(|pin| pin.revision == *serving)
            .filter_map(|pin| {
                Some((
                    http::HeaderName::try_from(pin.header.as_str()).ok()?,
                    http::HeaderValue::try_from(pin.value.as_str()).ok()?,
                ))
            })
            .collect();
        revisions.push(DesiredRevision {
            revision: Some(record.name.clone()),
            decl,
            share: Share {
                percent: deployed.traffic.split.get(serving).copied().unwrap_or(0),
                pins,
            },
        });
    }
    Ok(Desired {
        name: name.clone(),
        source: Source::Deployed,
        revisions,
    })
}

/// The blob a definition's `component = "sha256:..."` names.
fn resolve(blobs: &BlobStore, text: &str) -> Result<PathBuf, String> {
    let digest = text
        .strip_prefix("sha256:")
        .and_then(Digest::from_hex)
        .ok_or_else(|| {
            format!("`{text}` is not a component digest (`sha256:` and 64 hex digits)")
        })?;
    if !blobs.contains(&digest) {
        return Err(format!(
            "no component {digest} was uploaded (POST /v1/components first)"
        ));
    }
    Ok(blobs.path(&digest))
}

/// Takes the lock file at `path` for this process: `None` if another
/// process holds it.
fn lock(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    use rustix::fs::{FlockOperation, flock};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(error) => Err(error.into()),
    }
}
