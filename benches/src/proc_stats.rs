//! What `/proc` says about a process and the CPUs: resident memory, CPU
//! time, and how busy each CPU was over an interval.

use std::collections::BTreeMap;
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

/// The time on a CPU of each live thread of a process, from
/// `/proc/<pid>/task/<tid>/schedstat`, in nanoseconds: `/proc/<pid>/stat`
/// counts in 10 ms ticks, and one tick is 0.33% of a 3 s quiet spell.
pub struct ThreadTimes(BTreeMap<u32, Duration>);

impl ThreadTimes {
    /// Reads the threads of process `pid`.
    pub fn read(pid: u32) -> anyhow::Result<Self> {
        let mut times = BTreeMap::new();
        for (tid, schedstat) in thread_files(pid, "schedstat")? {
            let nanos: u64 = schedstat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("unexpected schedstat of thread {tid}: {schedstat}"))?;
            times.insert(tid, Duration::from_nanos(nanos));
        }
        Ok(Self(times))
    }

    /// The CPU time the process spent since `earlier`; a thread that ended
    /// in between takes what it ran meanwhile with it.
    pub fn since(&self, earlier: &Self) -> Duration {
        self.0
            .iter()
            .map(|(tid, now)| now.saturating_sub(earlier.0.get(tid).copied().unwrap_or_default()))
            .sum()
    }
}

/// The file `name` of each live thread of process `pid`, by thread id; a
/// thread that ends between the listing and the read is left out.
pub fn thread_files(pid: u32, name: &str) -> anyhow::Result<Vec<(u32, String)>> {
    let tasks = format!("/proc/{pid}/task");
    let mut files = Vec::new();
    for task in std::fs::read_dir(&tasks).with_context(|| format!("cannot read {tasks}"))? {
        let task = task?;
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(task.path().join(name)) {
            files.push((tid, text));
        }
    }
    Ok(files)
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

/// Interrupts sent to each CPU from another to wake or reschedule it, since
/// boot: the function-call (`CAL`) and rescheduling (`RES`) lines of
/// `/proc/interrupts`. A server that answers while its client's CPU sleeps
/// wakes that CPU this way.
#[derive(Debug, Clone)]
pub struct WakeUps(Vec<u64>);

impl WakeUps {
    /// Reads `/proc/interrupts` now.
    pub fn now() -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string("/proc/interrupts").context("cannot read /proc/interrupts")?;
        Self::parse(&text).context("no CAL or RES line in /proc/interrupts")
    }

    /// The counts of `text` (as `/proc/interrupts`), or `None` without its
    /// two lines.
    fn parse(text: &str) -> Option<Self> {
        let mut cpus = text.lines().next()?.split_whitespace().count();
        let mut wake_ups = vec![0; cpus];
        let mut found = 0;
        for line in text.lines().map(str::trim_start) {
            let Some(rest) = line
                .strip_prefix("CAL:")
                .or_else(|| line.strip_prefix("RES:"))
            else {
                continue;
            };
            found += 1;
            let counts: Vec<u64> = rest
                .split_whitespace()
                .map_while(|field| field.parse().ok())
                .collect();
            cpus = cpus.min(counts.len());
            for (total, count) in wake_ups.iter_mut().zip(counts) {
                *total += count;
            }
        }
        wake_ups.truncate(cpus);
        (found == 2).then_some(Self(wake_ups))
    }

    /// The wake-ups of CPU `cpu` between `earlier` and `self`; `None` if
    /// there is no such CPU.
    pub fn of_cpu_since(&self, earlier: &Self, cpu: usize) -> Option<u64> {
        Some(self.0.get(cpu)?.saturating_sub(*earlier.0.get(cpu)?))
    }
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(threads: &[(u32, u64)]) -> ThreadTimes {
        ThreadTimes(
            threads
                .iter()
                .map(|&(tid, ms)| (tid, Duration::from_millis(ms)))
                .collect(),
        )
    }

    #[test]
    fn time_since_counts_live_and_new_threads_and_not_ended_ones() {
        let earlier = times(&[(1, 5), (2, 10)]);
        // Thread 2 ended; thread 3 started and ran 1 ms.
        let now = times(&[(1, 7), (3, 1)]);
        assert_eq!(now.since(&earlier), Duration::from_millis(3));
    }

    const INTERRUPTS: &str = "           CPU0       CPU1
   0:         44          0   IO-APIC   2-edge      timer
 LOC:    1678831    1244541   Local timer interrupts
 RES:     105731     107434   Rescheduling interrupts
 CAL:     661848    1848476   Function call interrupts
 TLB:     156826     159361   TLB shootdowns
";

    #[test]
    fn wake_ups_add_function_calls_and_reschedules_per_cpu() {
        let earlier = WakeUps::parse(INTERRUPTS).unwrap();
        let later = WakeUps::parse(
            &INTERRUPTS
                .replace("105731     107434", "105731     107440")
                .replace("661848    1848476", "661850    1848576"),
        )
        .unwrap();
        assert_eq!(earlier.0, vec![105_731 + 661_848, 107_434 + 1_848_476]);
        assert_eq!(later.of_cpu_since(&earlier, 0), Some(2));
        assert_eq!(later.of_cpu_since(&earlier, 1), Some(106));
        assert_eq!(later.of_cpu_since(&earlier, 2), None);
    }

    #[test]
    fn wake_ups_need_both_lines() {
        let without_calls: String = INTERRUPTS
            .lines()
            .filter(|line| !line.contains("CAL:"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(WakeUps::parse(&without_calls).is_none());
        assert!(WakeUps::parse("").is_none());
    }

    #[test]
    fn this_process_threads_are_read_and_their_work_shows() {
        let first = ThreadTimes::read(std::process::id()).unwrap();
        assert!(!first.0.is_empty());
        let sum = (0..20_000_000u64).fold(0u64, |a, b| std::hint::black_box(a.wrapping_add(b)));
        std::hint::black_box(sum);
        let second = ThreadTimes::read(std::process::id()).unwrap();
        assert!(second.since(&first) > Duration::ZERO);
    }
}
