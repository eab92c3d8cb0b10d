//! The command line: one file per subcommand.

use clap::{Parser, Subcommand};

use crate::telemetry::logs::LogFormat;

pub mod admin_client;
pub mod delete;
pub mod deploy;
pub mod functions;
pub mod knative;
pub mod new;
pub mod package;
pub mod revisions;
pub mod rollback;
pub mod run;
pub mod traffic;

/// Shoal: many WebAssembly HTTP functions in one process, routed by path,
/// each request in a fresh sandboxed instance.
#[derive(Debug, Parser)]
#[command(name = "host", version, about)]
pub struct Cli {
    /// Log filter: a level (error, warn, info, debug, trace) or
    /// `tracing` directives such as `info,shoal::guest=warn`.
    #[arg(long, global = true, env = "SHOAL_LOG", default_value = "info")]
    pub log_level: String,

    /// Log lines as `text` or `json` (one object per line, with the request
    /// span's fields). Defaults to `json` under Knative (when `K_SERVICE` is
    /// set), else `text`.
    #[arg(long, global = true, env = "SHOAL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a manifest's functions, or one component at every path.
    Run(run::RunArgs),
    /// Upload a component and deploy it as a function's next revision.
    Deploy(deploy::DeployArgs),
    /// List the functions a running host serves.
    Functions(functions::FunctionsArgs),
    /// List a deployed function's revisions and traffic.
    Revisions(revisions::RevisionsArgs),
    /// Split a deployed function's traffic between revisions.
    Traffic(traffic::TrafficArgs),
    /// Send all of a deployed function's traffic back to one revision.
    Rollback(rollback::RollbackArgs),
    /// Take a deployed function out.
    Delete(delete::DeleteArgs),
    /// Build an OCI image of a manifest's functions, without a container
    /// engine.
    Package(package::PackageArgs),
    /// Write the Knative Service (and Istio VirtualService) for a manifest.
    Knative(knative::KnativeArgs),
    /// Write a new function project (Rust, JavaScript, Python, C or Go).
    New(new::NewArgs),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn execute(self) -> anyhow::Result<()> {
        let format = self
            .log_format
            .unwrap_or_else(LogFormat::default_for_environment);
        let log_writer = crate::telemetry::logs::init(&self.log_level, format)?;
        crate::telemetry::panics::install(crate::telemetry::panics::Backtraces::from_environment());
        let result = match self.command {
            Command::Run(args) => args.execute(),
            Command::Deploy(args) => args.execute(),
            Command::Functions(args) => args.execute(),
            Command::Revisions(args) => args.execute(),
            Command::Traffic(args) => args.execute(),
            Command::Rollback(args) => args.execute(),
            Command::Delete(args) => args.execute(),
            Command::Package(args) => args.execute(),
            Command::Knative(args) => args.execute(),
            Command::New(args) => args.execute(),
        };
        crate::telemetry::traces::shutdown();
        drop(log_writer);
        result
    }
}
