//! What a run measures and for how long: the full run behind the committed
//! report, or a quick one for trying the harness out.

use std::time::Duration;

/// The CPU the measured servers are pinned to (`taskset -c`).
pub const SERVER_CPU: usize = 0;

/// The CPU `wrk` and this harness run on (`benches/run` pins the harness).
pub const CLIENT_CPU: usize = 1;

/// The connection counts `wrk` is run with, one after the other.
pub const CONCURRENCIES: [usize; 3] = [1, 16, 64];

/// `wrk` threads: one, on [`CLIENT_CPU`].
pub const WRK_THREADS: usize = 1;

/// `max_instance_reuse` (host) and `--max-instance-reuse-count`
/// (`wasmtime serve`) for the instance-reuse rows: large enough that one
/// instance serves the whole run.
pub const REUSE_COUNT: u64 = 1_000_000;

/// How long a function of the cold-start section stays warm: short, so that
/// it scales to zero between two timed requests.
pub const COLD_IDLE_TIMEOUT: &str = "20ms";

/// How long a function of the density section stays warm after its one
/// request.
pub const DENSITY_IDLE_TIMEOUT: &str = "1s";

/// How long a server may take to start (the first run compiles the 13 MB
/// JavaScript component on a shared CPU).
pub const START_TIMEOUT: Duration = Duration::from_secs(600);

/// How often the cold-start section asks the admin API whether its function
/// has scaled to zero.
pub const COLD_START_POLL: Duration = Duration::from_millis(5);

/// How often the density section asks whether every function has scaled to
/// zero (the listing of 10,000 functions is a few MB of JSON).
pub const DENSITY_POLL: Duration = Duration::from_millis(500);

/// How long a function may take to scale to zero before the run gives up.
pub const SCALE_TO_ZERO_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the harness looks for a line a server has written.
pub const OUTPUT_POLL: Duration = Duration::from_millis(2);

/// How often the reload section asks whether a new component is in place.
pub const RELOAD_POLL: Duration = Duration::from_millis(1);

/// How long a reload may take before the run gives up (the JavaScript hello
/// compiles for seconds on one CPU).
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// How long one HTTP request of the harness may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The durations and counts of one run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// `benches/run --quick`.
    pub quick: bool,
    /// `wrk` load before the measured runs of each server.
    pub warmup: Duration,
    /// Each measured `wrk` run.
    pub duration: Duration,
    /// Timed cold starts per function.
    pub cold_starts: usize,
    /// Function counts of the density section.
    pub densities: &'static [usize],
    /// Starts of the host per function count, to take the median start-up
    /// time.
    pub starts_per_density: usize,
    /// Timed reloads of the Rust hello.
    pub reloads_rust: usize,
    /// Timed reloads of the JavaScript hello (each compiles 13 MB).
    pub reloads_js: usize,
}

/// The full run, behind the committed report.
pub const FULL: Plan = Plan {
    quick: false,
    warmup: Duration::from_secs(3),
    duration: Duration::from_secs(10),
    cold_starts: 500,
    densities: &[1, 100, 1_000, 10_000, 100_000],
    starts_per_density: 3,
    reloads_rust: 20,
    reloads_js: 5,
};

/// `--quick`: a minute or two, to try the harness.
pub const QUICK: Plan = Plan {
    quick: true,
    warmup: Duration::from_secs(1),
    duration: Duration::from_secs(2),
    cold_starts: 30,
    densities: &[1, 100, 1_000, 100_000],
    starts_per_density: 1,
    reloads_rust: 3,
    reloads_js: 1,
};

impl Plan {
    /// The command that reproduces this run.
    pub fn command(&self) -> &'static str {
        if self.quick {
            "benches/run --quick"
        } else {
            "benches/run"
        }
    }
}
