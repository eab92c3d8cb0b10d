//! Chaos: a healthy function under load while its neighbours loop forever,
//! grow memory without bound, trap on every request, and are flooded past
//! their concurrency. The healthy function must answer every request, the
//! host must never restart, and its memory must stay bounded.
//!
//! The suite runs a short version; `cargo test --release -p shoal-host --test
//! suite chaos:: -- --ignored --nocapture` runs the long one (`benches/run`
//! does).

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Host, example, guest, http1, manifest};
use tokio::sync::Mutex;

/// How long the suite's version runs.
const SHORT: Duration = Duration::from_secs(4);

/// How long the benchmark's version runs.
const LONG: Duration = Duration::from_secs(60);

/// Clients loading the healthy function.
const HEALTHY_CLIENTS: usize = 4;

/// Clients per misbehaving function.
const NOISY_CLIENTS: usize = 4;

/// Peak RSS the host may reach under chaos.
const MAX_RSS_MIB: u64 = 768;

#[derive(Default)]
struct Tally {
    /// Answers by status code (0: no answer).
    statuses: BTreeMap<u16, u64>,
    /// Latencies of successful answers, in microseconds.
    latencies_us: Vec<u64>,
}

async fn load(
    client: reqwest::Client,
    url: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    expect: Option<&'static str>,
) {
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let (status, ok) = match client.get(&url).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                (status, expect.is_none_or(|e| status == 200 && body == e))
            }
            Err(_) => (0, false),
        };
        let mut tally = tally.lock().await;
        *tally
            .statuses
            .entry(if ok || expect.is_none() { status } else { 1 })
            .or_default() += 1;
        if status == 200 {
            tally.latencies_us.push(start.elapsed().as_micros() as u64);
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn chaos(duration: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(
        dir.path(),
        &[
            ("healthy", &example("hello"), &["/healthy"], &[]),
            (
                "looper",
                &guest("spin"),
                &["/looper"],
                &["timeout = \"500ms\""],
            ),
            (
                "hog",
                &guest("memory-hog"),
                &["/hog"],
                &["memory = \"64MiB\""],
            ),
            ("trapper", &guest("trap"), &["/trapper"], &[]),
            (
                "flooded",
                &guest("slow"),
                &["/flooded"],
                &[
                    "max_concurrency = 2",
                    "max_queue = 2",
                    "queue_timeout = \"100ms\"",
                ],
            ),
        ],
    );
    let host = Host::start(&manifest);
    let pid = host.pid();

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut tallies = BTreeMap::new();
    let noisy = [
        ("looper", "/looper?forever"),
        ("hog", "/hog"),
        ("trapper", "/trapper"),
        ("flooded", "/flooded?ms=200"),
    ];
    let healthy = Arc::new(Mutex::new(Tally::default()));
    for _ in 0..HEALTHY_CLIENTS {
        let task = load(
            http1(),
            host.url("/healthy"),
            stop.clone(),
            healthy.clone(),
            Some("Hello, world!\n"),
        );
        tasks.push(tokio::spawn(task));
    }
    for (name, path) in noisy {
        let tally = Arc::new(Mutex::new(Tally::default()));
        tallies.insert(name, tally.clone());
        for _ in 0..NOISY_CLIENTS {
            tasks.push(tokio::spawn(load(
                http1(),
                host.url(path),
                stop.clone(),
                tally.clone(),
                None,
            )));
        }
    }

    let peak_rss_kib = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    while start.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak_rss_kib.fetch_max(host.memory_kib("VmRSS"), Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    let healthy = healthy.lock().await;
    let mut latencies = healthy.latencies_us.clone();
    latencies.sort_unstable();
    let total: u64 = healthy.statuses.values().sum();
    println!(
        "chaos for {duration:?}, {HEALTHY_CLIENTS} clients on the healthy function, {NOISY_CLIENTS} on each other one"
    );
    println!(
        "healthy: {total} requests, answers {:?}, p50 {} µs, p99 {} µs",
        healthy.statuses,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    for (name, tally) in &tallies {
        println!("{name}: answers {:?}", tally.lock().await.statuses);
    }
    let peak_mib = peak_rss_kib.load(Ordering::Relaxed) / 1024;
    println!(
        "host peak RSS {peak_mib} MiB; still the same process: {}",
        host.pid() == pid
    );

    assert!(total > 0, "the healthy function was never answered");
    assert_eq!(
        healthy.statuses.get(&200),
        Some(&total),
        "healthy answers: {:?}",
        healthy.statuses
    );
    assert!(peak_mib < MAX_RSS_MIB, "peak RSS {peak_mib} MiB");
    // Each misbehaving function got its documented answer.
    let seen = |name: &str, status: u16| {
        let tally = tallies[name].clone();
        async move {
            tally
                .lock()
                .await
                .statuses
                .get(&status)
                .copied()
                .unwrap_or(0)
                > 0
        }
    };
    assert!(seen("looper", 504).await, "no 504 from the looper");
    assert!(seen("hog", 500).await, "no 500 from the hog");
    assert!(seen("trapper", 500).await, "no 500 from the trapper");
    assert!(
        seen("flooded", 503).await,
        "no 503 from the flooded function"
    );
    // The host is alive and still serves.
    assert_eq!(
        host.get("/healthy").await,
        (200, "Hello, world!\n".to_owned())
    );
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_ok(),
        "the host is gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_function_is_untouched_by_misbehaving_neighbours() {
    chaos(SHORT).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the long version, run by benches/run"]
async fn a_healthy_function_is_untouched_by_misbehaving_neighbours_for_a_minute() {
    chaos(LONG).await;
}
