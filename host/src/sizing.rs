//! How much memory the host's instances may hold, and how many may run at
//! once.
//!
//! The memory budget bounds the linear memory of all instances together
//! (see [`shoal_runtime::MemoryBudget`]): `--memory-budget` if given; else,
//! inside a container with a memory limit, that limit less what the host
//! keeps for itself ([`host_reserve`]: its code, mapped artifacts,
//! connections, and the pages the instance pool keeps resident between
//! instances); else half of the machine's memory.
//!
//! The instance cap (`--max-instances`) is then only lowered to what the
//! budget could ever hold at [`MIN_INSTANCE_MEMORY`] each: the budget, not a
//! guess of each instance's size, is what keeps memory in bounds. (The
//! runtime may size the pool down further where the address space cannot
//! hold its reservation; it logs so.)

use std::path::Path;

/// Instances at once, unless `--max-instances` says otherwise.
pub const DEFAULT_MAX_INSTANCES: u32 = shoal_runtime::DEFAULT_MAX_INSTANCES;

/// The least memory the host keeps for itself inside a container.
pub const MIN_HOST_RESERVE: u64 = 64 << 20;

/// The least linear memory an instance holds: a Rust guest's memory starts
/// at about 1.1 MiB; C guests start smaller, language runtimes far larger.
pub const MIN_INSTANCE_MEMORY: u64 = 1 << 20;

/// The fewest instances the host runs with, whatever the budget.
pub const MIN_INSTANCES: u32 = 4;

/// cgroup v2's limit, then v1's.
const CGROUP_MEMORY_FILES: [&str; 2] = [
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
];

/// The container's memory limit in bytes, if it has one.
pub fn container_memory_limit() -> Option<u64> {
    CGROUP_MEMORY_FILES
        .iter()
        .find_map(|file| std::fs::read_to_string(Path::new(file)).ok())
        .and_then(|text| parse_memory_limit(&text))
}

/// A cgroup memory file's limit: `max` (v2) or an absurdly large number (v1)
/// mean none.
fn parse_memory_limit(text: &str) -> Option<u64> {
    const UNLIMITED_V1: u64 = 1 << 60;
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes < UNLIMITED_V1).then_some(bytes)
}

/// The machine's memory in bytes (`MemTotal`), if it can be read.
pub fn physical_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}

/// What the host keeps for itself out of a container's `limit`: a quarter,
/// at least [`MIN_HOST_RESERVE`].
pub fn host_reserve(limit: u64) -> u64 {
    (limit / 4).max(MIN_HOST_RESERVE)
}

/// The instances' memory budget: `configured`, else what a container limit
/// leaves, else half of `physical` memory (unbounded if even that is
/// unknown).
pub fn memory_budget(
    configured: Option<u64>,
    container: Option<u64>,
    physical: Option<u64>,
) -> u64 {
    match (configured, container, physical) {
        (Some(configured), _, _) => configured,
        (None, Some(limit), _) => limit
            .saturating_sub(host_reserve(limit))
            .max(MIN_HOST_RESERVE),
        (None, None, Some(physical)) => physical / 2,
        (None, None, None) => u64::MAX,
    }
}

/// The instances to run at once: `configured`, or fewer if a budget of
/// `budget` bytes could not hold that many.
pub fn max_instances(configured: u32, budget: u64) -> u32 {
    let fit = u32::try_from(budget / MIN_INSTANCE_MEMORY).unwrap_or(u32::MAX);
    configured.min(fit.max(MIN_INSTANCES))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_budget_comes_from_the_flag_the_container_or_the_machine() {
        assert_eq!(
            memory_budget(Some(100 * MIB), Some(512 * MIB), None),
            100 * MIB
        );
        // A 512 MiB container: a quarter kept for the host.
        assert_eq!(
            memory_budget(None, Some(512 * MIB), Some(1 << 40)),
            384 * MIB
        );
        // A small one: at least 64 MiB kept.
        assert_eq!(memory_budget(None, Some(128 * MIB), None), 64 * MIB);
        assert_eq!(memory_budget(None, None, Some(24 << 30)), 12 << 30);
        assert_eq!(memory_budget(None, None, None), u64::MAX);
    }

    #[test]
    fn the_budget_lowers_the_instance_cap_only_to_what_it_could_hold() {
        assert_eq!(max_instances(1000, u64::MAX), 1000);
        assert_eq!(max_instances(1000, 384 * MIB), 384);
        assert_eq!(
            max_instances(10, 384 * MIB),
            10,
            "never more than configured"
        );
        assert_eq!(max_instances(1000, MIB), MIN_INSTANCES);
    }

    #[test]
    fn cgroup_files_are_read_as_limits_or_none() {
        assert_eq!(parse_memory_limit("536870912\n"), Some(512 << 20));
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
        assert!(physical_memory().is_some_and(|bytes| bytes > 0));
    }
}
