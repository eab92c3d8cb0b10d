//! The registry's work beside the requests: scaling idle functions to zero
//! (and giving their memory back once none is warm), reporting long
//! compiles, warming functions kept warm, and collecting the artifact
//! cache.
//!
//! Each task holds a weak reference to the registry and reads the table
//! serving at the time, so it follows every change and ends with the
//! registry. [`Background::stop`] (or dropping the handle) ends them and the
//! compiler's workers.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Registry;
use super::compiler::Progress;
use super::entry::FunctionEntry;

/// The shortest and longest pause between two sweeps for idle functions.
/// A sweep reads a few atomics per warm function, and none of a function at
/// rest.
const MIN_SWEEP: Duration = Duration::from_millis(10);
const MAX_SWEEP: Duration = Duration::from_secs(1);

/// How often a long compile reports its progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// How often the artifact cache is collected, after the start's collection.
const COLLECT_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// The registry's background tasks.
pub struct Background {
    registry: Weak<Registry>,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    pub(super) fn start(registry: &Arc<Registry>) -> Self {
        let weak = Arc::downgrade(registry);
        Self {
            tasks: vec![
                tokio::spawn(scale_idle_to_zero(weak.clone())),
                tokio::spawn(report_progress(weak.clone())),
                tokio::spawn(collect_artifacts(weak.clone())),
            ],
            registry: weak,
        }
    }

    /// Stops the tasks and the compiler's workers.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(registry) = self.registry.upgrade() {
            registry.compiler.stop();
        }
    }
}

/// Warms `entry` in the background (a function with `min_instances`
/// published before its component compiled).
pub(super) fn prewarm(registry: &Arc<Registry>, entry: Arc<FunctionEntry>) {
    let registry = Arc::downgrade(registry);
    tokio::spawn(async move {
        let Some(registry) = registry.upgrade() else {
            return;
        };
        if let Err(error) = entry.prewarm(&registry.runtime, &registry.compiler).await {
            tracing::error!(%error, "cannot keep the function warm");
        }
    });
}

/// Sweeps the warm functions for idle ones, until the registry is gone;
/// sleeps while none is warm.
async fn scale_idle_to_zero(registry: Weak<Registry>) {
    // Whether the last sweep left a function warm.
    let mut some_warm = false;
    loop {
        let (warm, shortest) = {
            let Some(registry) = registry.upgrade() else {
                return;
            };
            let shortest = registry.warm.sweep(registry.clock());
            (registry.warm.clone(), shortest)
        };
        match shortest {
            // A quarter of the shortest idle timeout, so that a function
            // scales to zero within 25% of its timeout.
            Some(timeout) => {
                some_warm = true;
                tokio::time::sleep((timeout / 4).clamp(MIN_SWEEP, MAX_SWEEP)).await;
            }
            None => {
                // The last one scaled to zero: the memory its instances
                // used goes back now, rather than over the allocator's
                // decay, which would keep a thread waking in an idle host.
                // Off the runtime's threads: after 10,000 functions had
                // been warm, it took 5 ms.
                if std::mem::take(&mut some_warm) {
                    tokio::task::spawn_blocking(crate::memory::release_freed);
                }
                warm.wait_for_one().await;
            }
        }
    }
}

/// Logs, every [`PROGRESS_INTERVAL`], how far compiling the components
/// has got, while some are not done. It asks the compiler, whose jobs are
/// one per component content. (Walking the table instead, once after the
/// start and once after each change, took 6-8 ms of a runtime worker with
/// 100,000 functions.)
async fn report_progress(registry: Weak<Registry>) {
    let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let Progress {
            done,
            total,
            compiling,
        } = registry.compiler.progress();
        if done < total {
            let compiling: Vec<_> = compiling
                .iter()
                .map(|(path, elapsed)| format!("{} ({} s)", path.display(), elapsed.as_secs()))
                .collect();
            tracing::info!(
                done,
                total,
                compiling = %compiling.join(", "),
                "still compiling components"
            );
        }
    }
}

/// Collects the artifact cache every [`COLLECT_INTERVAL`]; the first
/// collection is the start's, once the first table is in place (see
/// [`Registry::collect_artifacts`]).
async fn collect_artifacts(registry: Weak<Registry>) {
    let mut ticks = tokio::time::interval(COLLECT_INTERVAL);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let collected = tokio::task::spawn_blocking(move || registry.collect_artifacts()).await;
        if let Err(error) = collected {
            tracing::error!(%error, "collecting the artifact cache failed");
        }
    }
}
