//! How a pooled instance's memory is made pristine for the next: restored
//! in place, or released whole, and never left as the last instance wrote
//! it when its pages were swapped out.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Host, guest, http1, manifest};

/// A host serving the scribble guest at `/scribble` with `args`, one
/// instance at a time (so that each lands in the same pool slot) and none
/// made ahead.
fn scribble_host(dir: &Path, args: &[&str]) -> Host {
    let manifest = manifest(
        dir,
        &[("scribble", &guest("scribble"), &["/scribble"], &[])],
    );
    let mut all = vec!["--max-instances", "1", "--ready-instances", "0"];
    all.extend(args);
    Host::start_with(&manifest, &dir.join("data"), &all, &[]).unwrap_or_else(|e| panic!("{e}"))
}

async fn scribble(host: &Host, query: &str) -> String {
    let response = http1()
        .get(host.url(&format!("/scribble{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_released_whole_is_pristine_for_each_instance() {
    let dir = tempfile::tempdir().unwrap();
    let host = scribble_host(dir.path(), &["--memory-reset", "release"]);
    let line = host.wait_for_line(Duration::from_secs(10), |line| {
        line.contains("memory_reset=released whole (madvise), as configured")
    });
    assert!(line.is_some(), "{}", host.log());
    // Each instance finds nothing of the one before, which wrote it all.
    for _ in 0..3 {
        assert_eq!(scribble(&host, "").await, "0\n");
    }
}

/// A swap file turned on for as long as it lives (turned off and removed
/// when dropped).
struct SwapFile(PathBuf);

impl SwapFile {
    /// A 64 MiB swap file in `dir`, turned on; `None` where this machine
    /// does not let the tests turn swap on (not root, a file system that
    /// holds no swap).
    fn on(dir: &Path) -> Option<SwapFile> {
        let path = dir.join("swapfile");
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
    let dir = tempfile::tempdir().unwrap();
    let Some(_swap) = SwapFile::on(dir.path()) else {
        eprintln!("skipped: this machine does not let the tests turn swap on");
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
