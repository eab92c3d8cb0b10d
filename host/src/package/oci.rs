//! The OCI image around the layer: its configuration, its manifest, and
//! the image layout that holds them (`oci-layout`, `index.json`,
//! `blobs/sha256/...`).
//!
//! JSON documents are built with `oci-spec`'s types, then written through
//! `serde_json::Value`, whose maps keep keys sorted: the labels and
//! annotations (hash maps in `oci-spec`) come out in the same order every
//! time, so the digests are reproducible.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, PlatformBuilder,
    RootFsBuilder, Sha256Digest,
};
use sha2::{Digest as _, Sha256};

use super::layer::Written;

/// What the image's configuration says, beyond its layer.
pub(super) struct ImageSettings {
    pub(super) entrypoint: Vec<String>,
    pub(super) env: Vec<String>,
    pub(super) user: String,
    pub(super) working_dir: String,
    pub(super) exposed_port: String,
    pub(super) labels: HashMap<String, String>,
    /// RFC 3339.
    pub(super) created: String,
    /// The image's name in `index.json` (`org.opencontainers.image.ref.name`).
    pub(super) tag: String,
}

/// Writes the configuration, the manifest, `index.json` and `oci-layout`
/// into `layout` (whose `blobs/sha256` holds the layer already); returns
/// the manifest's digest.
pub(super) fn write_layout(
    layout: &Path,
    layer: &Written,
    settings: ImageSettings,
) -> anyhow::Result<String> {
    let config = ConfigBuilder::default()
        .entrypoint(settings.entrypoint)
        .env(settings.env)
        .user(settings.user)
        .working_dir(settings.working_dir)
        .exposed_ports(vec![settings.exposed_port])
        .labels(settings.labels.clone())
        .build()?;
    let history = HistoryBuilder::default()
        .created(settings.created.clone())
        .created_by("host package")
        .build()?;
    let image = ImageConfigurationBuilder::default()
        .created(settings.created)
        .architecture(architecture())
        .os(Os::Linux)
        .config(config)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![format!("sha256:{}", layer.diff_id)])
                .build()?,
        )
        .history(vec![history])
        .build()?;
    let config = write_blob(layout, MediaType::ImageConfig, &image)?;

    let layer = descriptor(MediaType::ImageLayerGzip, &layer.digest, layer.size, None)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(vec![layer])
        .annotations(settings.labels)
        .build()?;
    let mut manifest = write_blob(layout, MediaType::ImageManifest, &manifest)?;
    manifest.set_platform(Some(
        PlatformBuilder::default()
            .architecture(architecture())
            .os(Os::Linux)
            .build()?,
    ));
    manifest.set_annotations(Some(HashMap::from([(
        "org.opencontainers.image.ref.name".to_owned(),
        settings.tag,
    )])));
    let digest = manifest.digest().to_string();

    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest])
        .build()?;
    std::fs::write(layout.join("index.json"), sorted_json(&index)?)?;
    let marker = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;
    std::fs::write(layout.join("oci-layout"), sorted_json(&marker)?)?;
    Ok(digest)
}

/// The OCI name of this machine's architecture.
fn architecture() -> Arch {
    match std::env::consts::ARCH {
        "x86_64" => Arch::Amd64,
        "aarch64" => Arch::ARM64,
        other => Arch::Other(other.to_owned()),
    }
}

/// Writes `document` as a blob; returns its descriptor.
fn write_blob(
    layout: &Path,
    media_type: MediaType,
    document: &impl serde::Serialize,
) -> anyhow::Result<Descriptor> {
    let bytes = sorted_json(document)?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let path = layout.join("blobs/sha256").join(&digest);
    std::fs::write(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    descriptor(media_type, &digest, bytes.len() as u64, None)
}

fn descriptor(
    media_type: MediaType,
    hex_digest: &str,
    size: u64,
    annotations: Option<HashMap<String, String>>,
) -> anyhow::Result<Descriptor> {
    let digest: Sha256Digest = hex_digest.parse()?;
    let mut descriptor = DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(size)
        .build()?;
    descriptor.set_annotations(annotations);
    Ok(descriptor)
}

/// `document` as JSON with every object's keys in order.
fn sorted_json(document: &impl serde::Serialize) -> anyhow::Result<Vec<u8>> {
    let value = serde_json::to_value(document)?;
    Ok(serde_json::to_vec(&value)?)
}
