//! Swap and the instance pool's memory, in a test binary of its own: these
//! tests turn swap on for the whole machine, and a host that restores
//! memory in place stops when it sees that, so no other test's host may
//! run meanwhile (cargo runs test binaries one after the other). Each test
//! skips where the machine does not let it turn swap on.

#[allow(dead_code, unused_imports)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{http1, scribble, scribble_host};

/// The tests of this binary take turns: each turns swap on and off.
static SWAP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A swap file turned on for as long as it lives (turned off and removed
/// when dropped).
struct SwapFile(PathBuf);

impl SwapFile {
    /// Where the tests' swap file is: always the same path, so that one
    /// left on by a test run that was killed can be found.
    fn path() -> PathBuf {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("swap-test.swapfile")
    }

    /// A 64 MiB swap file, turned on; `None` where this machine does not
    /// let the tests turn swap on (not root, a file system that holds no
    /// swap).
    fn on() -> Option<SwapFile> {
        let path = SwapFile::path();
        // Written out: a swap file must have no holes.
        std::fs::write(&path, vec![0u8; 64 << 20]).ok()?;
        let mut permissions = std::fs::metadata(&path).ok()?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
        std::fs::set_permissions(&path, permissions).ok()?;
        let run = |program: &str| {
            Command::new(program)
                .arg(&path)
                .output()
                .is_ok_and(|output| output.status.success())
        };
        if !run("mkswap") || !run("swapon") {
            return None;
        }
        Some(SwapFile(path))
    }
}

impl Drop for SwapFile {
    fn drop(&mut self) {
        let _ = Command::new("swapoff").arg(&self.0).status();
        let _ = std::fs::remove_file(&self.0);
    }
}

/// This test's turn, with no swap file of a killed test run left on: left
/// on, it would make every host started after it release memory whole,
/// and the stop test skip.
async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    let turn = SWAP.lock().await;
    let path = SwapFile::path();
    let left_on = std::fs::read_to_string("/proc/swaps").is_ok_and(|swaps| {
        swaps
            .lines()
            .any(|line| line.starts_with(path.to_str().unwrap()))
    });
    if left_on {
        eprintln!("turning off {}, left on by an earlier run", path.display());
        drop(SwapFile(path));
    }
    turn
}

/// A swap file that this process's memory goes to when paged out; `None`,
/// said on stderr, where the machine does not let the tests turn swap on,
/// or nothing of this process (in the hosts' cgroup) can go to swap (a
/// cgroup that allows none).
fn swap_on() -> Option<SwapFile> {
    let Some(swap) = SwapFile::on() else {
        eprintln!("skipped: this machine does not let the tests turn swap on");
        return None;
    };
    let this = std::process::id();
    if !page_out(this) || swapped_kib(this) == 0 {
        eprintln!("skipped: nothing of this process goes to swap here");
        return None;
    }
    Some(swap)
}

/// Asks the kernel to page out every private writable mapping of `pid`
/// (`process_madvise(MADV_PAGEOUT)`); `false` if it refuses.
#[allow(unsafe_code)]
fn page_out(pid: u32) -> bool {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    // SAFETY: pidfd_open takes a pid and flags, and returns a descriptor
    // this function closes.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return false;
    }
    let mut paged = false;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some("rw-p")) = (fields.next(), fields.next()) else {
            continue;
        };
        let (start, end) = range.split_once('-').unwrap();
        let start = usize::from_str_radix(start, 16).unwrap();
        let end = usize::from_str_radix(end, 16).unwrap();
        let range = libc::iovec {
            iov_base: start as *mut libc::c_void,
            iov_len: end - start,
        };
        // SAFETY: the kernel reads one iovec of another process's address
        // range; nothing of this process is written.
        let advised = unsafe {
            libc::syscall(
                libc::SYS_process_madvise,
                pidfd,
                &raw const range,
                1,
                libc::MADV_PAGEOUT,
                0,
            )
        };
        paged |= advised > 0;
    }
    // SAFETY: `pidfd` was opened above and is closed once.
    unsafe { libc::close(pidfd as i32) };
    paged
}

/// KiB of `pid`'s memory in swap.
fn swapped_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmSwap:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_swapped_out_under_an_instance_is_not_left_for_the_next() {
    let _alone = alone().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(_swap) = swap_on() else {
        return;
    };
    // Swap is on: the host must not restore memory in place.
    let host = scribble_host(dir.path(), &[]);
    let line = host.wait_for_line(Duration::from_secs(10), |line| {
        line.contains("memory may be swapped out")
    });
    assert!(line.is_some(), "{}", host.log());
    assert_eq!(scribble(&host, "").await, "0\n");
    for round in 1..=2 {
        // The instance fills its memory and sleeps; its pages go to swap
        // meanwhile, and it ends without touching them again.
        let url = host.url("/scribble?ms=1500");
        let sleeping = tokio::spawn(async move { http1().get(url).send().await });
        let filled = |log: &str| {
            let fills = log
                .lines()
                .filter(|line| line.contains("function=scribble") && line.contains("filled"));
            fills.count() == round
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !filled(&host.log()) {
            assert!(Instant::now() < deadline, "{}", host.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !page_out(host.pid()) {
            eprintln!("skipped: the kernel does not page another process out");
            return;
        }
        assert!(swapped_kib(host.pid()) > 0, "nothing went to swap");
        let answered = sleeping.await.unwrap().unwrap();
        assert_eq!(answered.text().await.unwrap(), "0\n");
        // The next instance finds none of it.
        assert_eq!(scribble(&host, "").await, "0\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_restores_memory_in_place_stops_when_swap_comes() {
    let _alone = alone().await;
    if shoal_runtime::may_swap().is_some() {
        eprintln!("skipped: swap may be used here already");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut host = scribble_host(dir.path(), &[]);
    assert!(
        host.wait_for_log(
            "memory_reset=dirty pages, in place",
            Duration::from_secs(10)
        ),
        "{}",
        host.log()
    );
    assert_eq!(scribble(&host, "").await, "0\n");
    let Some(_swap) = swap_on() else {
        return;
    };
    // Looked at every 2 s: the host drains and exits with the reason.
    let status = host.wait_exit(Duration::from_secs(15));
    assert!(!status.success(), "{}", host.log());
    assert!(host.log().contains("swap was turned on"), "{}", host.log());
}
