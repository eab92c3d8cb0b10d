//! The facts a reader needs to weigh the figures: the machine, the date,
//! the code that was measured and the environment it ran in.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

/// The variable this machine sets, which makes every `anyhow::Error`
/// (wasmtime's and the host's) capture a backtrace when created.
pub const BACKTRACE_VARIABLE: &str = "RUST_BACKTRACE";

/// Where and when a run happened.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPUs the kernel has online (`processor` entries of `/proc/cpuinfo`),
    /// whatever this process's affinity.
    pub cpus: usize,
    /// The CPU model.
    pub cpu_model: String,
    /// The kernel release.
    pub kernel: String,
    /// When the run started (UTC).
    pub date: String,
    /// `git rev-parse HEAD`.
    pub commit: String,
    /// Files with uncommitted changes (`git status --porcelain`).
    pub uncommitted: Vec<String>,
    /// The value of [`BACKTRACE_VARIABLE`], if set.
    pub rust_backtrace: Option<String>,
    /// `/proc/loadavg` when the run started.
    pub load_before: String,
    /// What `wasmtime --version` printed.
    pub wasmtime: String,
    /// The CPUs this harness may run on (`Cpus_allowed_list` of
    /// `/proc/self/status`).
    pub harness_cpus: String,
}

impl Machine {
    /// Describes this machine, the repository at `repo` and the `wasmtime`
    /// CLI at `wasmtime`, now.
    pub fn describe(repo: &Path, wasmtime: &Path) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpus = cpuinfo
            .lines()
            .filter(|line| line.starts_with("processor"))
            .count();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let uncommitted = git(repo, &["status", "--porcelain"])
            .lines()
            .map(|line| line.trim().to_owned())
            .filter(|line| !line.is_empty())
            .collect();
        Self {
            cpus,
            cpu_model,
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            commit: git(repo, &["rev-parse", "HEAD"]).trim().to_owned(),
            uncommitted,
            rust_backtrace: std::env::var(BACKTRACE_VARIABLE).ok(),
            load_before: load_average(),
            wasmtime: output(Command::new(wasmtime).arg("--version"))
                .trim()
                .to_owned(),
            harness_cpus: allowed_cpus(),
        }
    }
}

/// `/proc/loadavg`: the 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    let text = read_trimmed("/proc/loadavg");
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The CPUs this process may run on, e.g. `1` or `0-1`.
fn allowed_cpus() -> String {
    read_trimmed("/proc/self/status")
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .map_or_else(|| "unknown".to_owned(), |cpus| cpus.trim().to_owned())
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The output of `git args` in `repo`, empty if git fails.
fn git(repo: &Path, args: &[&str]) -> String {
    output(Command::new("git").arg("-C").arg(repo).args(args))
}

/// What `command` prints on stdout, empty if it fails.
fn output(command: &mut Command) -> String {
    command
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}
