//! How a pooled instance's memory is made pristine for the next: restored
//! in place, or released whole (`swap.rs`, a test binary of its own, checks
//! that swap never leaves it as the last instance wrote it).

use crate::common;

use std::time::Duration;

use common::{scribble, scribble_host};

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
