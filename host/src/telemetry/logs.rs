//! Logs: one `tracing` pipeline, human-readable on stderr. What a person
//! reads at the terminal (the `listening on` line) goes to stdout instead.

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber with the given filter.
pub fn init(filter: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(filter).with_context(|| format!("invalid log filter `{filter}`"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}
