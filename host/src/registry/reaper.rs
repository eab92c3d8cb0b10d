//! Scales idle functions to zero.

use std::sync::Arc;
use std::time::Duration;

use super::Registry;

/// The shortest and longest pause between two sweeps. A sweep reads two
/// atomics per warm function, so even 10,000 functions cost microseconds.
const MIN_SWEEP: Duration = Duration::from_millis(10);
const MAX_SWEEP: Duration = Duration::from_secs(1);

/// The pause between sweeps: a quarter of the shortest idle timeout, so a
/// function scales to zero within 25% of its timeout.
pub(super) fn sweep_interval(registry: &Registry) -> Duration {
    registry
        .functions()
        .iter()
        .map(|f| f.policy().idle_timeout / 4)
        .min()
        .unwrap_or(MAX_SWEEP)
        .clamp(MIN_SWEEP, MAX_SWEEP)
}

/// Sweeps the registry for idle warm functions until the process ends.
pub(super) async fn run(registry: Arc<Registry>) {
    let mut ticks = tokio::time::interval(sweep_interval(&registry));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for entry in registry.functions() {
            entry.scale_to_zero_if_idle(registry.clock());
        }
    }
}
