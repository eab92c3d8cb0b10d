//! `host package`: an OCI image of a manifest's functions, without a
//! container engine (see [`crate::package`]).

use std::path::PathBuf;

use anyhow::Context as _;
use shoal_runtime::TargetCpu;

use crate::package::{self, Options};

/// Build an OCI image (an image layout folder, optionally an archive) of a
/// manifest's functions: the host, the manifest, the components and their
/// precompiled artifacts.
#[derive(Debug, clap::Args)]
pub struct PackageArgs {
    /// The manifest to package.
    #[arg(default_value = "shoal.toml")]
    manifest: PathBuf,

    /// The OCI image layout folder to write (an earlier layout there is
    /// replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// The image's name in the layout (`oci:DIR:TAG`).
    #[arg(long, default_value = "latest")]
    tag: String,

    /// The image's title (label `org.opencontainers.image.title`).
    #[arg(long, default_value = "shoal-functions")]
    title: String,

    /// Also write the layout as an OCI archive (`oci-archive:FILE`).
    #[arg(long, value_name = "FILE")]
    tar: Option<PathBuf>,

    /// The host binary to put in the image. Defaults to this one. A
    /// dynamically linked binary brings its loader and shared libraries.
    #[arg(long, value_name = "PATH")]
    host_binary: Option<PathBuf>,

    /// The CPU the artifacts are compiled for: `native` (this machine's
    /// features; a node whose CPU differs compiles the functions itself at
    /// start, with a warning) or `portable` (x86-64-v2, which every node
    /// has; the image then sets `SHOAL_CPU=portable` so that its host
    /// compiles for the same baseline and uses them on any node).
    #[arg(long, value_enum, default_value = "native")]
    cpu: Cpu,
}

/// The CPU components are compiled for (`--cpu` of `host run` and `host
/// package`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Cpu {
    /// This machine's CPU, with every feature wasmtime detects on it.
    Native,
    /// x86-64-v2 (SSE4.2, POPCNT, no AVX) on x86-64, the base architecture
    /// elsewhere: what every node has.
    Portable,
}

impl From<Cpu> for TargetCpu {
    fn from(cpu: Cpu) -> Self {
        match cpu {
            Cpu::Native => TargetCpu::Native,
            Cpu::Portable => TargetCpu::Portable,
        }
    }
}

impl PackageArgs {
    /// Builds and writes the image; prints its digest.
    pub fn execute(self) -> anyhow::Result<()> {
        let host_binary = match self.host_binary {
            Some(path) => path,
            None => std::env::current_exe().context("cannot find this host binary")?,
        };
        let options = Options {
            manifest: self.manifest,
            host_binary,
            cpu: self.cpu.into(),
            tag: self.tag,
            title: self.title,
            epoch: source_date_epoch()?,
        };
        let packaged = package::package(&options, &self.out, self.tar.as_deref())?;
        tracing::info!(
            layout = %self.out.display(),
            tag = %options.tag,
            digest = %packaged.digest,
            functions = %packaged.functions.join(","),
            engine_key = %packaged.engine_key,
            "image written"
        );
        println!("{}", packaged.digest);
        Ok(())
    }
}

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org), else 0.
fn source_date_epoch() -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) => text
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={text} is not a number of seconds")),
        Err(_) => Ok(0),
    }
}
