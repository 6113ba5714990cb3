//! The rate gate every request to a CRM passes: a governor token bucket sized so that no window of length `per`
//! ever sees more than `requests`, plus a pause that a 429 or an exhausted quota header sets.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::RateLimitConfig;

/// One connection's rate gate.
pub struct RateGate {
    limiter: DefaultDirectRateLimiter,
    paused_until: Mutex<Option<Instant>>,
    period: Duration,
}

impl std::fmt::Debug for RateGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateGate").field("period", &self.period).finish()
    }
}

impl RateGate {
    /// A gate for `limit`.
    ///
    /// governor's GCRA with a burst of `n` lets `n` through at once and then one per period, so a naive
    /// `Quota::per_x(n).allow_burst(n)` admits almost `2n` in some windows of length `per`. With a burst of 1 and
    /// a period of `per / n`, any window of length `per` holds at most `n` releases. Requests reach the CRM a
    /// little after their release, and unevenly, so the period gets a small guard (2% of `per`, at most 100 ms
    /// over the whole window): that keeps arrival jitter from packing `n + 1` into one of the CRM's windows while
    /// still using 98% or more of the quota.
    pub fn new(limit: RateLimitConfig) -> Self {
        let guard = (limit.per / 50).min(Duration::from_millis(100));
        let period = (limit.per + guard) / limit.requests.max(1);
        let period = period.max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .expect("period is non-zero")
            .allow_burst(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(quota),
            paused_until: Mutex::new(None),
            period,
        }
    }

    /// Waits until a request may be sent; returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        let started = Instant::now();
        loop {
            self.wait_out_pause().await;
            self.limiter.until_ready().await;
            // A 429 may have paused the gate while this request queued for a token.
            if self.pause_remaining().is_none() {
                return started.elapsed();
            }
        }
    }

    /// Stops every request for `wait` (a 429's Retry-After, an exhausted quota). A longer pause already in
    /// force is kept.
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut paused = self.paused_until.lock().expect("rate gate lock");
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    /// How much of a pause is left, if any.
    pub fn pause_remaining(&self) -> Option<Duration> {
        let paused = *self.paused_until.lock().expect("rate gate lock");
        paused.and_then(|until| until.checked_duration_since(Instant::now()))
    }

    async fn wait_out_pause(&self) {
        while let Some(left) = self.pause_remaining() {
            tokio::time::sleep(left).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_in_window(times: &[Instant], window: Duration) -> usize {
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    #[tokio::test]
    async fn gate_never_admits_more_than_the_limit_in_any_window() {
        let gate = RateGate::new(RateLimitConfig {
            requests: 20,
            per: Duration::from_millis(500),
        });
        let mut times = Vec::new();
        for _ in 0..60 {
            gate.acquire().await;
            times.push(Instant::now());
        }
        assert!(max_in_window(&times, Duration::from_millis(500)) <= 20);
    }

    #[tokio::test]
    async fn naive_governor_burst_would_exceed_the_limit() {
        // The reason for burst 1: governor's own per_x(n).allow_burst(n) lets ~2n through in one window.
        let n = NonZeroU32::new(10).unwrap();
        let naive = RateLimiter::direct(Quota::with_period(Duration::from_millis(50)).unwrap().allow_burst(n));
        let mut times = Vec::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(600) {
            naive.until_ready().await;
            times.push(Instant::now());
        }
        assert!(max_in_window(&times, Duration::from_millis(500)) > 10);
    }

    #[tokio::test]
    async fn pause_holds_requests_back() {
        let gate = RateGate::new(RateLimitConfig {
            requests: 1000,
            per: Duration::from_secs(1),
        });
        gate.pause_for(Duration::from_millis(300));
        let waited = gate.acquire().await;
        assert!(waited >= Duration::from_millis(290), "waited {waited:?}");
        assert!(gate.pause_remaining().is_none());
    }

    #[test]
    fn shorter_pause_does_not_shorten_a_longer_one() {
        let gate = RateGate::new(RateLimitConfig {
            requests: 10,
            per: Duration::from_secs(1),
        });
        gate.pause_for(Duration::from_secs(30));
        gate.pause_for(Duration::from_secs(1));
        assert!(gate.pause_remaining().unwrap() > Duration::from_secs(20));
    }
}
