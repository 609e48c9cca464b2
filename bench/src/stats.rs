//! Latency samples and their percentiles. Every figure of the suite is a percentile of one
//! of these, so the rule is written once: nearest rank on the sorted samples (p50 of
//! `[1, 2, 3, 4]` is 2, p99 of 100 samples is the 99th), in milliseconds.

use std::time::Duration;

/// Latencies collected by one scenario on one system, in milliseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    values: Vec<f64>,
    sorted: bool,
}

impl Samples {
    pub fn push(&mut self, latency: Duration) {
        self.values.push(latency.as_secs_f64() * 1000.0);
        self.sorted = false;
    }

    pub fn extend(&mut self, other: Samples) {
        self.values.extend(other.values);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The `p`-th percentile (0 < p <= 100) by nearest rank; `None` without samples.
    pub fn percentile(&mut self, p: f64) -> Option<f64> {
        if self.values.is_empty() {
            return None;
        }
        if !self.sorted {
            self.values.sort_by(f64::total_cmp);
            self.sorted = true;
        }
        let n = self.values.len();
        // Nearest rank: the smallest value with at least p% of the samples at or below it.
        let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as usize;
        self.values.get(rank.min(n) - 1).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ms: &[u64]) -> Samples {
        let mut s = Samples::default();
        for &m in ms {
            s.push(Duration::from_millis(m));
        }
        s
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut s = samples(&[4, 1, 3, 2]);
        assert_eq!(s.percentile(50.0), Some(2.0));
        assert_eq!(s.percentile(99.0), Some(4.0));
        assert_eq!(s.percentile(25.0), Some(1.0));
    }

    #[test]
    fn the_99th_of_a_hundred_samples_is_the_99th_value() {
        let mut s = samples(&(1..=100).collect::<Vec<_>>());
        assert_eq!(s.percentile(99.0), Some(99.0));
        assert_eq!(s.percentile(100.0), Some(100.0));
    }

    #[test]
    fn no_samples_have_no_percentile() {
        assert_eq!(Samples::default().percentile(50.0), None);
    }
}
