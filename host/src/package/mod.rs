//! `host package`: an OCI image of a manifest's functions, built without a
//! container engine.
//!
//! The image has one layer, whose root file system is:
//!
//! ```text
//! /shoal/bin/host                  the host binary (+ its dynamic loader and
//!                                  shared libraries, at their own paths, if
//!                                  it is dynamically linked)
//! /shoal/shoal.toml                the manifest, components rewritten to
//! /shoal/functions/<name>.wasm     one component per function
//! /shoal/artifacts/<sha256>-<engine key>.cwasm
//!                                  the components compiled ahead of time, in
//!                                  the artifact cache's format
//! /tmp                             empty, mode 1777: the host's data dir
//! ```
//!
//! and its configuration runs `/shoal/bin/host run /shoal/shoal.toml` as
//! user 65532 with `PORT=8080`, `SHOAL_PRECOMPILED=/shoal/artifacts` and
//! `SHOAL_DATA_DIR=/tmp/shoal` (and `SHOAL_CPU=portable` for artifacts
//! compiled for the portable CPU). Everything is written in a fixed order with
//! one fixed time (`SOURCE_DATE_EPOCH`, else 0), so packaging the same
//! inputs twice gives the same digests.
//!
//! Nothing is written until every component has been read and compiled:
//! the layout is built in a hidden folder beside `--out` and renamed into
//! place at the end.

mod binary;
mod layer;
mod oci;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use shoal_runtime::{ComponentSource, Precompiler, TargetCpu};

use crate::manifest::Manifest;
use layer::Tree;
use oci::ImageSettings;

/// The host binary in the image.
pub const HOST_PATH: &str = "/shoal/bin/host";
/// The manifest in the image.
pub const MANIFEST_PATH: &str = "/shoal/shoal.toml";
/// The folder of components, relative to the manifest.
pub const FUNCTIONS_DIR: &str = "functions";
/// The folder of precompiled artifacts in the image.
pub const ARTIFACTS_PATH: &str = "/shoal/artifacts";
/// The host's data dir in the image: under `/tmp`, the only place a
/// read-only root leaves writable (a `tmpfs`, or the container's own layer).
pub const DATA_DIR: &str = "/tmp/shoal";
/// The user and group the image runs as (distroless's `nonroot`).
pub const USER: &str = "65532:65532";
/// The port the image listens on, unless `PORT` says otherwise.
pub const PORT: u16 = crate::cli::run::DEFAULT_PORT;
/// The label listing the image's functions, comma-separated.
pub const FUNCTIONS_LABEL: &str = "dev.shoal.functions";

/// What to package, and how.
pub struct Options {
    /// The manifest.
    pub manifest: PathBuf,
    /// The host binary to put in the image.
    pub host_binary: PathBuf,
    /// The CPU the artifacts are compiled for.
    pub cpu: TargetCpu,
    /// The image's name in the layout.
    pub tag: String,
    /// The image's title label.
    pub title: String,
    /// Every file's modification time, and the image's creation time.
    pub epoch: u64,
}

/// A written image.
pub struct Packaged {
    /// The digest of its manifest (`sha256:...`).
    pub digest: String,
    /// Its functions, in the manifest's order.
    pub functions: Vec<String>,
    /// The engine key its artifacts were compiled for.
    pub engine_key: String,
}

/// Builds the image and writes it as an OCI layout to `out` (replacing an
/// earlier layout there), and as an OCI archive to `archive` if given.
pub fn package(options: &Options, out: &Path, archive: Option<&Path>) -> anyhow::Result<Packaged> {
    check_replaceable(out)?;
    if options
        .manifest
        .extension()
        .is_some_and(|ext| ext == "wasm")
    {
        bail!(
            "{} is a component: `host package` takes a manifest (`shoal.toml`) naming \
             the functions, their components and their routes",
            options.manifest.display()
        );
    }
    // The host binary is checked first: compiling takes a while.
    let version = host_version(&options.host_binary)?;
    let libraries = binary::needed_files(&options.host_binary)?;
    let manifest = Manifest::load(&options.manifest)?;
    let text = std::fs::read_to_string(&options.manifest)
        .with_context(|| format!("cannot read {}", options.manifest.display()))?;
    let rewritten = rewrite_manifest(&text)?;
    Manifest::parse(&rewritten, Path::new(MANIFEST_PATH))
        .context("the rewritten manifest is invalid")?;

    let mut tree = Tree::default();
    tree.bytes(MANIFEST_PATH, rewritten.into_bytes(), 0o644);

    // Every component is read and compiled before anything is written.
    let artifacts = tempfile::tempdir().context("cannot create a temporary folder")?;
    let precompiler = Precompiler::new(artifacts.path(), options.cpu)?;
    let mut compiled = BTreeSet::new();
    let mut functions = Vec::new();
    for decl in &manifest.functions {
        let name = decl.name.as_str();
        let refused = || format!("function `{name}` cannot be packaged");
        let source = ComponentSource::read(&decl.component).with_context(refused)?;
        let bytes = source.bytes().with_context(refused)?;
        if compiled.insert(source.digest) {
            precompiler.compile(&source).with_context(refused)?;
        }
        tree.bytes(component_path(name), bytes, 0o644);
        functions.push(name.to_owned());
    }
    tree.dir(ARTIFACTS_PATH, 0o755);
    for entry in std::fs::read_dir(artifacts.path())? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "cwasm") {
            let name = path.file_name().expect("a file in a folder has a name");
            tree.copy(Path::new(ARTIFACTS_PATH).join(name), &path, 0o644);
        }
    }

    tree.copy(HOST_PATH, &options.host_binary, 0o755);
    for needed in libraries {
        tree.copy(&needed.path, &needed.path, 0o755);
    }
    tree.dir("/tmp", 0o1777);

    let parent = out
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".shoal-package-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a folder in {}", parent.display()))?;
    let blobs = staging.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let layer_file = blobs.join("layer.tmp");
    let layer = tree
        .write_layer(std::fs::File::create(&layer_file)?, options.epoch)
        .context("cannot write the image's layer")?;
    std::fs::rename(&layer_file, blobs.join(&layer.digest))?;

    let created = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(options.epoch),
    )
    .to_string();
    let labels = HashMap::from([
        (
            "org.opencontainers.image.title".to_owned(),
            options.title.clone(),
        ),
        (
            "org.opencontainers.image.version".to_owned(),
            version.clone(),
        ),
        (
            "org.opencontainers.image.created".to_owned(),
            created.clone(),
        ),
        (
            "org.opencontainers.image.description".to_owned(),
            format!(
                "Shoal host {version} serving {} function(s): {}",
                functions.len(),
                functions.join(", ")
            ),
        ),
        (FUNCTIONS_LABEL.to_owned(), functions.join(",")),
    ]);
    let settings = ImageSettings {
        entrypoint: [HOST_PATH, "run", MANIFEST_PATH]
            .map(str::to_owned)
            .to_vec(),
        env: image_env(options.cpu),
        user: USER.to_owned(),
        working_dir: "/".to_owned(),
        exposed_port: format!("{PORT}/tcp"),
        labels,
        created,
        tag: options.tag.clone(),
    };
    let digest = oci::write_layout(staging.path(), &layer, settings)?;

    if let Some(archive) = archive {
        write_archive(staging.path(), archive, options.epoch)?;
    }
    replace_layout(staging, out)?;
    Ok(Packaged {
        digest,
        functions,
        engine_key: precompiler.engine_key(),
    })
}

/// The image's environment. A portable image's host compiles for the
/// portable CPU too, so that it uses the artifacts on any node.
fn image_env(cpu: TargetCpu) -> Vec<String> {
    let mut env = vec![
        format!("PORT={PORT}"),
        format!("SHOAL_PRECOMPILED={ARTIFACTS_PATH}"),
        format!("SHOAL_DATA_DIR={DATA_DIR}"),
    ];
    if cpu == TargetCpu::Portable {
        env.push("SHOAL_CPU=portable".to_owned());
    }
    env
}

/// Where function `name`'s component goes in the image.
fn component_path(name: &str) -> PathBuf {
    Path::new(MANIFEST_PATH)
        .with_file_name(FUNCTIONS_DIR)
        .join(format!("{name}.wasm"))
}

/// The manifest with every function's `component` rewritten to
/// `functions/<name>.wasm`, relative to the manifest.
fn rewrite_manifest(text: &str) -> anyhow::Result<String> {
    let mut table: toml::Table = toml::from_str(text)?;
    let functions = table
        .get_mut("function")
        .and_then(toml::Value::as_array_mut)
        .context("the manifest has no `[[function]]` tables")?;
    for function in functions {
        let function = function
            .as_table_mut()
            .context("a `function` entry is not a table")?;
        let name = function
            .get("name")
            .and_then(toml::Value::as_str)
            .context("a function has no name")?
            .to_owned();
        function.insert(
            "component".to_owned(),
            toml::Value::String(format!("{FUNCTIONS_DIR}/{name}.wasm")),
        );
    }
    Ok(toml::to_string(&table)?)
}

/// The version `binary --version` prints (`host 0.1.0`).
fn host_version(binary: &Path) -> anyhow::Result<String> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.trim().strip_prefix("host ") {
        Some(version) if output.status.success() => Ok(version.to_owned()),
        _ => bail!(
            "{} is not a Shoal host: `--version` printed {:?}",
            binary.display(),
            text.lines().next().unwrap_or_default()
        ),
    }
}

/// Writes the layout in `layout` as a tar archive at `archive` (what
/// `skopeo copy oci-archive:FILE` reads).
fn write_archive(layout: &Path, archive: &Path, epoch: u64) -> anyhow::Result<()> {
    let mut tree = Tree::default();
    for name in ["oci-layout", "index.json"] {
        tree.copy(name, &layout.join(name), 0o644);
    }
    tree.dir("blobs/sha256", 0o755);
    for entry in std::fs::read_dir(layout.join("blobs/sha256"))? {
        let path = entry?.path();
        let name = path.file_name().expect("a file in a folder has a name");
        tree.copy(Path::new("blobs/sha256").join(name), &path, 0o644);
    }
    let parent = archive
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = tempfile::NamedTempFile::new_in(parent)
        .with_context(|| format!("cannot create a file in {}", parent.display()))?;
    tree.write_archive(file.reopen()?, epoch)
        .with_context(|| format!("cannot write {}", archive.display()))?;
    file.persist(archive)
        .with_context(|| format!("cannot write {}", archive.display()))?;
    Ok(())
}

/// Refuses an `out` that is neither missing, nor an empty folder, nor an
/// OCI layout.
fn check_replaceable(out: &Path) -> anyhow::Result<()> {
    let empty = || out.read_dir().is_ok_and(|mut dir| dir.next().is_none());
    if out.exists() && !empty() && !out.join("oci-layout").exists() {
        bail!(
            "{} exists and is not an OCI layout: refusing to replace it",
            out.display()
        );
    }
    Ok(())
}

/// Moves the finished layout in `staging` to `out`, replacing what is
/// there if it is an earlier layout or an empty folder.
fn replace_layout(staging: tempfile::TempDir, out: &Path) -> anyhow::Result<()> {
    check_replaceable(out)?;
    if out.exists() {
        std::fs::remove_dir_all(out)
            .with_context(|| format!("cannot replace {}", out.display()))?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}
