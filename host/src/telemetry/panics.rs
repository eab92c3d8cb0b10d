//! Panics, logged like every other error.
//!
//! Rust's default panic hook prints to stderr and, when `RUST_BACKTRACE` is
//! set, resolves a backtrace: it parses the binary's debug information,
//! which for this binary (about 190 MB with line tables) adds about 200 MiB
//! of resident memory the first time, for good. A host that runs with
//! `RUST_BACKTRACE=1` (as many environments set it) would pay that on its
//! first panic in any task, however harmless.
//!
//! The host's hook instead logs the panic as an `ERROR` event (target
//! `shoal::panic`) with its message, location and thread, inside the
//! request span it happened in. A symbolized backtrace is added only when
//! `RUST_BACKTRACE=full` asks for one explicitly.

use std::backtrace::Backtrace;
use std::panic::PanicHookInfo;

/// The target of panic events.
pub const PANIC_TARGET: &str = "shoal::panic";

/// Whether panics come with a symbolized backtrace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backtraces {
    /// Message, location and thread only.
    Off,
    /// And the backtrace, symbolized (costly the first time).
    Symbolized,
}

impl Backtraces {
    /// `Symbolized` only under `RUST_BACKTRACE=full`.
    pub fn from_environment() -> Self {
        match std::env::var("RUST_BACKTRACE").as_deref() {
            Ok("full") => Self::Symbolized,
            _ => Self::Off,
        }
    }
}

/// Replaces the default panic hook with one that logs.
pub fn install(backtraces: Backtraces) {
    std::panic::set_hook(Box::new(move |info| log(info, backtraces)));
}

fn log(info: &PanicHookInfo<'_>, backtraces: Backtraces) {
    let panic = info
        .payload()
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)");
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_default();
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    match backtraces {
        Backtraces::Off => tracing::error!(
            target: PANIC_TARGET,
            %panic, %location, thread,
            "panicked (RUST_BACKTRACE=full adds a backtrace)"
        ),
        Backtraces::Symbolized => tracing::error!(
            target: PANIC_TARGET,
            %panic, %location, thread,
            backtrace = %Backtrace::force_capture(),
            "panicked"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::captured::Captured;

    fn resident_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn a_panic_is_logged_with_its_place_without_resolving_a_backtrace() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.writer())
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        install(Backtraces::Off);
        let before = resident_kib();
        let panicked = std::panic::catch_unwind(|| panic!("boom {}", 42));
        let grown = resident_kib().saturating_sub(before);
        let _ = std::panic::take_hook();
        assert!(panicked.is_err());
        // Resolving a backtrace of this test binary costs tens of MiB.
        assert!(grown < 8 * 1024, "the panic cost {grown} KiB of memory");
        let log = captured.text();
        assert!(log.contains("ERROR shoal::panic"), "{log}");
        assert!(log.contains("panic=boom 42"), "{log}");
        assert!(log.contains("src/telemetry/panics.rs:"), "{log}");
        assert!(!log.contains("backtrace="), "{log}");
    }
}
