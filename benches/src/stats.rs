//! Percentiles of a sample of durations.

use std::time::Duration;

/// A sample of durations, sorted.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    sorted: Vec<Duration>,
}

impl Sample {
    /// The sample of `values`.
    pub fn new(mut values: Vec<Duration>) -> Self {
        values.sort_unstable();
        Self { sorted: values }
    }

    /// How many values it holds.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The `p`-th percentile (0 < p ≤ 100), nearest rank: the smallest value
    /// that at least `p`% of the sample does not exceed.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.sorted.is_empty() {
            return None;
        }
        let rank = (p / 100.0 * self.sorted.len() as f64).ceil() as usize;
        Some(self.sorted[rank.clamp(1, self.sorted.len()) - 1])
    }

    /// The median.
    pub fn p50(&self) -> Option<Duration> {
        self.percentile(50.0)
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Option<Duration> {
        self.percentile(99.0)
    }

    /// The largest value.
    pub fn max(&self) -> Option<Duration> {
        self.sorted.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sample = Sample::new((1..=200).rev().map(Duration::from_millis).collect());
        assert_eq!(sample.p50(), Some(Duration::from_millis(100)));
        assert_eq!(sample.p99(), Some(Duration::from_millis(198)));
        assert_eq!(sample.percentile(100.0), Some(Duration::from_millis(200)));
        assert_eq!(sample.max(), Some(Duration::from_millis(200)));
        assert_eq!(Sample::default().p50(), None);
    }
}
