//! `host`: serves many WebAssembly HTTP functions from one process.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use shoal_host::cli::Cli;

/// jemalloc, whose background thread gives freed memory back to the system
/// (glibc's allocator keeps it in its arenas, so a burst of large request
/// heads would raise the host's resident memory for good).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    match Cli::parse().execute() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
