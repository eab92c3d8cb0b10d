//! What `/proc` says about a process and the CPUs: resident memory, CPU
//! time, and how busy each CPU was over an interval.

use std::time::Duration;

use anyhow::Context as _;

/// The unit of CPU times in `/proc` (`USER_HZ`), fixed at 100 per second
/// on Linux whatever the kernel's tick rate.
const USER_HZ: u64 = 100;

/// `VmRSS` of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// User plus system CPU time of process `pid`, all its threads.
pub fn process_cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: the
    // fields that follow are counted from its closing parenthesis. There,
    // utime and stime are the 12th and 13th.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("unexpected {path}"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("unexpected {path}"))
    };
    Ok(ticks_to_duration(ticks(11)? + ticks(12)?))
}

/// Busy and total time of every CPU since boot, from `/proc/stat`.
#[derive(Debug, Clone)]
pub struct CpuTimes {
    /// Per CPU, in order: (busy ticks, all ticks).
    cpus: Vec<(u64, u64)>,
}

impl CpuTimes {
    /// Reads `/proc/stat` now.
    pub fn now() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        let cpus = stat
            .lines()
            .filter(|line| {
                line.strip_prefix("cpu")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .map(|line| {
                // user nice system idle iowait irq softirq steal ...
                let ticks: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|f| f.parse().ok())
                    .collect();
                let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
                // guest and guest_nice are already counted in user and nice.
                let all: u64 = ticks.iter().take(8).sum();
                (all - idle, all)
            })
            .collect();
        Ok(Self { cpus })
    }

    /// The share of time CPU `cpu` was busy between `earlier` and `self`,
    /// from 0 to 1; `None` if there is no such CPU or no time passed.
    pub fn busy_since(&self, earlier: &CpuTimes, cpu: usize) -> Option<f64> {
        let (busy, all) = self.cpus.get(cpu)?;
        let (busy0, all0) = earlier.cpus.get(cpu)?;
        let elapsed = all.checked_sub(*all0).filter(|&t| t > 0)?;
        Some(busy.saturating_sub(*busy0) as f64 / elapsed as f64)
    }
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / USER_HZ)
}
