//! How many instances the host runs at once: the `--max-instances` it is
//! given, fewer inside a container whose memory limit could not hold that
//! many. (The runtime may size the pool down further where the address space
//! cannot hold its reservation; it logs so.)

use std::path::Path;

/// Instances at once, unless `--max-instances` says otherwise.
pub const DEFAULT_MAX_INSTANCES: u32 = shoal_runtime::DEFAULT_MAX_INSTANCES;

/// The memory set aside for the host itself (code, compiled artifacts,
/// connections) before instances are counted.
pub const HOST_MEMORY_RESERVE: u64 = 64 << 20;

/// The resident memory one instance is budgeted: small functions use well
/// under 1 MiB, language runtimes (JavaScript, Python) tens of MiB.
pub const INSTANCE_MEMORY_BUDGET: u64 = 8 << 20;

/// The fewest instances the host runs with, whatever the limit says.
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

/// The instances to run at once: `configured`, or fewer if a memory limit
/// of `memory_limit` bytes cannot hold that many.
pub fn max_instances(configured: u32, memory_limit: Option<u64>) -> u32 {
    let Some(limit) = memory_limit else {
        return configured;
    };
    let fit = limit.saturating_sub(HOST_MEMORY_RESERVE) / INSTANCE_MEMORY_BUDGET;
    let fit = u32::try_from(fit).unwrap_or(u32::MAX).max(MIN_INSTANCES);
    configured.min(fit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_limit_sizes_the_instance_cap_down() {
        assert_eq!(max_instances(1000, None), 1000);
        // 512 MiB: 448 MiB after the reserve, 8 MiB each.
        assert_eq!(max_instances(1000, Some(512 << 20)), 56);
        assert_eq!(
            max_instances(10, Some(512 << 20)),
            10,
            "never more than configured"
        );
        assert_eq!(max_instances(1000, Some(16 << 20)), MIN_INSTANCES);
    }

    #[test]
    fn cgroup_files_are_read_as_limits_or_none() {
        assert_eq!(parse_memory_limit("536870912\n"), Some(512 << 20));
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
    }
}
