//! The command line: one file per subcommand.

use clap::{Parser, Subcommand};

use crate::telemetry::logs::LogFormat;

pub mod run;

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
        };
        crate::telemetry::traces::shutdown();
        drop(log_writer);
        result
    }
}
