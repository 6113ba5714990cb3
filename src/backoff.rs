//! Exponential backoff with jitter (backon), for retries that never give up while the daemon runs.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// A retry delay policy: starts at `min`, doubles, never exceeds `max` (jitter included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self { min, max }
    }

    /// The delay before retry number `attempt` (0 for the first retry).
    ///
    /// backon's jitter adds up to the current delay again, so the builder's cap is half of `max`: the delay with
    /// jitter stays within `max`, and retries of many connections spread out instead of arriving together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let half_max = (self.max / 2).max(self.min);
        ExponentialBuilder::default()
            .with_min_delay(self.min.min(half_max))
            .with_max_delay(half_max)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempt.min(64) as usize)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let first = b.delay(0);
        assert!(
            first >= Duration::from_millis(100) && first <= Duration::from_millis(200),
            "{first:?}"
        );
        let fifth = b.delay(5);
        assert!(fifth >= Duration::from_millis(3200), "{fifth:?}");
        for attempt in [10, 30, 1000, u32::MAX] {
            assert!(b.delay(attempt) <= Duration::from_secs(10));
        }
    }

    #[test]
    fn delays_are_jittered() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let samples: std::collections::HashSet<Duration> = (0..20).map(|_| b.delay(3)).collect();
        assert!(samples.len() > 1, "20 draws gave one value: no jitter");
    }
}
