//! How long each model has been failing: the first failure's time is kept until a reply from
//! that model succeeds. A model failing for at least the threshold is due for an alert (which
//! the limiter then lets through once per window).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

pub struct Failures {
    threshold: Duration,
    /// First failure of each failing model: when (monotonic, for the threshold) and the wall
    /// time (for the alert).
    since: Mutex<HashMap<String, (Instant, DateTime<Utc>)>>,
}

impl Failures {
    pub fn new(threshold: Duration) -> Self {
        Self {
            threshold,
            since: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failed reply; returns since when the model has been failing when that is at
    /// least the threshold.
    pub fn failed(&self, model: &str, now: Instant) -> Option<DateTime<Utc>> {
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        let (first, wall) = *since
            .entry(model.to_string())
            .or_insert_with(|| (now, Utc::now()));
        (now.duration_since(first) >= self.threshold).then_some(wall)
    }

    /// A reply succeeded: the model is healthy again.
    pub fn succeeded(&self, model: &str) {
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        if !since.is_empty() {
            since.remove(model);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_due_once_it_has_failed_for_the_threshold_and_a_success_resets_it() {
        let failures = Failures::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(failures.failed("m", t0), None);
        assert_eq!(failures.failed("m", t0 + Duration::from_secs(59)), None);
        let since = failures.failed("m", t0 + Duration::from_secs(60));
        assert!(since.is_some());
        assert_eq!(
            failures.failed("other", t0 + Duration::from_secs(60)),
            None,
            "each model has its own clock"
        );
        failures.succeeded("m");
        assert_eq!(
            failures.failed("m", t0 + Duration::from_secs(120)),
            None,
            "a success started the clock again"
        );
        assert!(
            failures
                .failed("m", t0 + Duration::from_secs(180))
                .is_some()
        );
    }

    #[test]
    fn a_zero_threshold_is_due_at_the_first_failure() {
        let failures = Failures::new(Duration::ZERO);
        assert!(failures.failed("m", Instant::now()).is_some());
    }
}
