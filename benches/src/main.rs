//! `bench`: runs every benchmark section and writes the markdown report.
//! `benches/run` builds what it needs and starts it; see `benches/README.md`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use shoal_benches::cold_start::ColdStarts;
use shoal_benches::density::Density;
use shoal_benches::machine::Machine;
use shoal_benches::plan::{FULL, QUICK};
use shoal_benches::report::Report;
use shoal_benches::servers::Paths;
use shoal_benches::throughput::Throughput;
use shoal_benches::{idle, reload, upload};

/// The data folder of the hosts of sections 1 and 2, under `--work`.
const DATA_DIR: &str = "data";

/// Measure Shoal's host beside native hyper and `wasmtime serve`, and write
/// the report. Relative paths are taken from `--repo`.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Short runs and few samples (about two minutes), to try the harness;
    /// the report says so.
    #[arg(long)]
    quick: bool,

    /// The repository's root folder.
    #[arg(long, value_name = "DIR", default_value = ".")]
    repo: PathBuf,

    /// Where to write the report.
    #[arg(long, value_name = "FILE", default_value = "benches/results.md")]
    out: PathBuf,

    /// Shoal's `host` binary.
    #[arg(long, value_name = "FILE", default_value = "target/release/host")]
    host: PathBuf,

    /// The native hyper hello server.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "target/release/hello-server"
    )]
    hello_server: PathBuf,

    /// The `wasmtime` CLI.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "target/bench-tools/bin/wasmtime"
    )]
    wasmtime: PathBuf,

    /// The Rust hello component.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "target/examples/wasm32-wasip2/release/hello.wasm"
    )]
    hello_wasm: PathBuf,

    /// The folder of the other languages' hello components
    /// (`hello-js.wasm`, `hello-py.wasm`, ...; `scripts/build-polyglot`).
    #[arg(long, value_name = "DIR", default_value = "target/polyglot")]
    polyglot: PathBuf,

    /// Scratch folder for manifests and the hosts' data folders, which are
    /// emptied at the start of each run.
    #[arg(long, value_name = "DIR", default_value = "target/bench-work")]
    work: PathBuf,
}

impl Args {
    fn paths(&self) -> anyhow::Result<Paths> {
        let existing = |path: &Path| -> anyhow::Result<PathBuf> {
            let path = self.repo.join(path);
            path.canonicalize()
                .with_context(|| format!("{} is missing (benches/run builds it)", path.display()))
        };
        let work = self.repo.join(&self.work);
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create {}", work.display()))?;
        let work = work.canonicalize()?;
        Ok(Paths {
            host: existing(&self.host)?,
            hello_server: existing(&self.hello_server)?,
            wasmtime: existing(&self.wasmtime)?,
            hello_wasm: existing(&self.hello_wasm)?,
            polyglot: existing(&self.polyglot)?,
            data: Paths::fresh_dir(&work, DATA_DIR)?,
            work,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let paths = args.paths()?;
    let plan = if args.quick { QUICK } else { FULL };
    let machine = Machine::describe(&args.repo, &paths.wasmtime);
    let started = Instant::now();

    let report = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async {
            let throughput = Throughput::measure(&paths, &plan).await;
            let cold_starts = ColdStarts::measure(&paths, &plan).await;
            let density = Density::measure(&paths, &plan).await;
            let reloads = reload::measure_section(&paths, &plan).await;
            let uploads = upload::measure_section(&paths, &plan).await;
            let at_rest = idle::measure_section(&paths, &plan).await;
            Report {
                plan,
                machine,
                elapsed: started.elapsed(),
                throughput,
                cold_starts,
                density,
                reloads,
                uploads,
                at_rest,
            }
        });

    let markdown = report.render();
    let out = args.repo.join(&args.out);
    std::fs::write(&out, &markdown).with_context(|| format!("cannot write {}", out.display()))?;
    println!("{markdown}");
    eprintln!("==> report written to {}", out.display());
    Ok(())
}
