//! `host`: serves many WebAssembly HTTP functions from one process.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shoal_host::cli::Cli;

fn main() -> ExitCode {
    match Cli::parse().execute() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
