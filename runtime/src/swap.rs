//! Whether this process's memory may be swapped out, which decides how the
//! instance pool makes a linear memory pristine for its next instance.
//!
//! wasmtime 48 resets a pooled memory with `PAGEMAP_SCAN` by restoring the
//! pages the last instance wrote that are *present*: a written page that
//! is swapped out when its instance is dropped is neither restored nor
//! released, and the next instance in the slot reads the last one's data
//! from swap. (Seen here: a guest that fills 1 MiB and sleeps while its
//! pages are paged out, then a fresh instance of it that finds 1,044,480
//! of those bytes still written. wasmtime 50 fixes it, at 2.4 times the
//! cost of a fresh instance on Linux 6.18, and this toolchain cannot build
//! it: benches/README.md, "wasmtime 49 and 50 beside 48".) So the pool
//! uses that reset only where no page of this process can go to swap: no
//! swap device, or a cgroup v2 that allows it none (`memory.swap.max` of 0
//! here or above, as Kubernetes sets for a pod without swap). Otherwise
//! memory is released whole after each instance (`madvise`), which swap
//! cannot get wrong.

use std::path::{Path, PathBuf};

/// Why this process's memory may be swapped out; `None` if it cannot be.
pub fn may_swap() -> Option<String> {
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    why_swap(read)
}

/// [`may_swap`], reading files with `read`.
fn why_swap(read: impl Fn(&Path) -> Option<String>) -> Option<String> {
    let Some(swaps) = read(Path::new("/proc/swaps")) else {
        return Some("/proc/swaps cannot be read".to_owned());
    };
    let devices = swap_devices(&swaps);
    if devices == 0 {
        return None;
    }
    let cgroup = read(Path::new("/proc/self/cgroup")).unwrap_or_default();
    if cgroup_forbids_swap(&cgroup, &read) {
        return None;
    }
    Some(format!(
        "swap is on ({devices} device(s) in /proc/swaps) and no cgroup v2 \
         memory.swap.max of 0 keeps this process out of it"
    ))
}

/// The swap devices and files `/proc/swaps` lists (after its heading).
fn swap_devices(proc_swaps: &str) -> usize {
    proc_swaps
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .count()
}

/// Whether this process's cgroup v2 (from `/proc/self/cgroup`), or one
/// above it, allows no swap at all.
fn cgroup_forbids_swap(proc_self_cgroup: &str, read: &impl Fn(&Path) -> Option<String>) -> bool {
    // The unified hierarchy's line is `0::/path`.
    let Some(path) = proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
    else {
        return false;
    };
    let mut dir = PathBuf::from("/sys/fs/cgroup");
    dir.extend(Path::new(path.trim()).components().skip(1));
    dir.ancestors()
        .take_while(|dir| dir.starts_with("/sys/fs/cgroup"))
        .any(|dir| read(&dir.join("memory.swap.max")).is_some_and(|max| max.trim() == "0"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const HEADING: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";

    fn files(entries: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> + use<> {
        let files: HashMap<PathBuf, String> = entries
            .iter()
            .map(|(path, text)| (PathBuf::from(path), (*text).to_owned()))
            .collect();
        move |path: &Path| files.get(path).cloned()
    }

    #[test]
    fn without_a_swap_device_nothing_is_swapped() {
        let read = files(&[("/proc/swaps", HEADING), ("/proc/self/cgroup", "0::/\n")]);
        assert_eq!(why_swap(read), None);
    }

    #[test]
    fn with_a_swap_device_memory_may_be_swapped_unless_a_cgroup_allows_none() {
        let swaps = format!("{HEADING}/swapfile  file  1048572  0  -2\n");
        let cgroup = "0::/kubepods/pod1/c1\n";
        // No cgroup v2 limit: swap may be used.
        let read = files(&[("/proc/swaps", &swaps), ("/proc/self/cgroup", cgroup)]);
        let why = why_swap(read).expect("swap is on");
        assert!(why.contains("1 device(s)"), "{why}");
        // A limit above zero, here or above: still.
        let read = files(&[
            ("/proc/swaps", &swaps),
            ("/proc/self/cgroup", cgroup),
            ("/sys/fs/cgroup/kubepods/pod1/c1/memory.swap.max", "max\n"),
            ("/sys/fs/cgroup/kubepods/memory.swap.max", "1073741824\n"),
        ]);
        assert!(why_swap(read).is_some());
        // None allowed to this cgroup, or to one above it.
        for limited in [
            "/sys/fs/cgroup/kubepods/pod1/c1/memory.swap.max",
            "/sys/fs/cgroup/kubepods/pod1/memory.swap.max",
            "/sys/fs/cgroup/memory.swap.max",
        ] {
            let read = files(&[
                ("/proc/swaps", &swaps),
                ("/proc/self/cgroup", cgroup),
                ("/sys/fs/cgroup/kubepods/pod1/c1/memory.swap.max", "max\n"),
                (limited, "0\n"),
            ]);
            assert_eq!(why_swap(read), None, "{limited}");
        }
        // cgroup v1 (no unified line): swap may be used.
        let v1 = "4:memory:/process_api/x\n1:cpu:/\n";
        let read = files(&[("/proc/swaps", &swaps), ("/proc/self/cgroup", v1)]);
        assert!(why_swap(read).is_some());
    }

    #[test]
    fn unreadable_swap_devices_count_as_swap() {
        assert!(why_swap(files(&[])).is_some());
    }
}
