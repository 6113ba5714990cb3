//! The rate gate every request to a CRM passes: a governor token bucket sized so that no window of length `per`
//! ever sees more than `requests` (for every window the budget names), an optional cap on requests in flight,
//! and a pause that a 429 or an exhausted quota header sets. Connections that share a CRM account's quota share
//! one gate.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{RateLimitConfig, RateLimits};

/// One connection's (or one rate-limit group's) gate.
pub struct RateGate {
    limiter: DefaultDirectRateLimiter,
    in_flight: Option<Arc<Semaphore>>,
    paused_until: Mutex<Option<Instant>>,
    period: Duration,
}

impl std::fmt::Debug for RateGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateGate").field("period", &self.period).finish()
    }
}

/// Leave to send one request: hold it until the answer is read, so the concurrency cap counts the request.
#[derive(Debug)]
pub struct Permit {
    /// How long the request waited at the gate.
    pub waited: Duration,
    _slot: Option<OwnedSemaphorePermit>,
}

/// The spacing between releases that keeps any window of `limit.per` at or under `limit.requests`.
///
/// governor's GCRA with a burst of `n` lets `n` through at once and then one per period, so a naive
/// `Quota::per_x(n).allow_burst(n)` admits almost `2n` in some windows of length `per`. With a burst of 1 and a
/// period of `per / n`, any window of length `per` holds at most `n` releases. Requests reach the CRM a little
/// after their release, and unevenly, so the period gets a small guard (2% of `per`, at most 100 ms over the
/// whole window): that keeps arrival jitter from packing `n + 1` into one of the CRM's windows while still using
/// 98% or more of the quota.
fn spacing(limit: RateLimitConfig) -> Duration {
    let guard = (limit.per / 50).min(Duration::from_millis(100));
    (limit.per + guard) / limit.requests.max(1)
}

impl RateGate {
    /// A gate for `limits`.
    ///
    /// With a burst of 1, each window is a minimum spacing between requests, and several windows together are
    /// the largest of their spacings: Klaviyo's 75/s and 700/min become one request every 87 ms, which keeps
    /// both.
    pub fn new(limits: &RateLimits) -> Self {
        let period = limits
            .windows
            .iter()
            .map(|w| spacing(*w))
            .max()
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .expect("period is non-zero")
            .allow_burst(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(quota),
            in_flight: limits
                .max_concurrent
                .map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
            paused_until: Mutex::new(None),
            period,
        }
    }

    /// A gate for one window and no concurrency cap.
    pub fn single(limit: RateLimitConfig) -> Self {
        Self::new(&RateLimits {
            windows: vec![limit],
            max_concurrent: None,
        })
    }

    /// The spacing between requests this gate keeps.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Waits until a request may be sent. Send it at once and hold the permit until its answer is read.
    ///
    /// The slot for a request in flight is taken first and the rate token last, so a request never holds a
    /// token while it waits for a slot: it goes out right at its release time, and releases stay spaced.
    pub async fn acquire(&self) -> Permit {
        let started = Instant::now();
        let slot = match &self.in_flight {
            Some(s) => Some(s.clone().acquire_owned().await.expect("the semaphore is never closed")),
            None => None,
        };
        loop {
            self.wait_out_pause().await;
            self.limiter.until_ready().await;
            // A 429 may have paused the gate while this request queued for a token.
            if self.pause_remaining().is_none() {
                return Permit {
                    waited: started.elapsed(),
                    _slot: slot,
                };
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
        let gate = RateGate::single(RateLimitConfig {
            requests: 20,
            per: Duration::from_millis(500),
        });
        let mut times = Vec::new();
        for _ in 0..60 {
            let _ = gate.acquire().await;
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
        let gate = RateGate::single(RateLimitConfig {
            requests: 1000,
            per: Duration::from_secs(1),
        });
        gate.pause_for(Duration::from_millis(300));
        let waited = gate.acquire().await.waited;
        assert!(waited >= Duration::from_millis(290), "waited {waited:?}");
        assert!(gate.pause_remaining().is_none());
    }

    #[test]
    fn shorter_pause_does_not_shorten_a_longer_one() {
        let gate = RateGate::single(RateLimitConfig {
            requests: 10,
            per: Duration::from_secs(1),
        });
        gate.pause_for(Duration::from_secs(30));
        gate.pause_for(Duration::from_secs(1));
        assert!(gate.pause_remaining().unwrap() > Duration::from_secs(20));
    }

    #[tokio::test]
    async fn every_window_holds_when_a_budget_names_several() {
        // 10 per 100 ms and 12 per 500 ms: the second is the tighter one over half a second.
        let gate = RateGate::new(&RateLimits {
            windows: vec![
                RateLimitConfig {
                    requests: 10,
                    per: Duration::from_millis(100),
                },
                RateLimitConfig {
                    requests: 12,
                    per: Duration::from_millis(500),
                },
            ],
            max_concurrent: None,
        });
        let mut times = Vec::new();
        for _ in 0..30 {
            let _ = gate.acquire().await;
            times.push(Instant::now());
        }
        assert!(max_in_window(&times, Duration::from_millis(100)) <= 10);
        assert!(max_in_window(&times, Duration::from_millis(500)) <= 12);
    }

    #[tokio::test]
    async fn concurrency_cap_holds_requests_until_a_permit_is_returned() {
        let gate = Arc::new(RateGate::new(&RateLimits {
            windows: vec![RateLimitConfig {
                requests: 1000,
                per: Duration::from_secs(1),
            }],
            max_concurrent: Some(2),
        }));
        let first = gate.acquire().await;
        let _second = gate.acquire().await;
        let third = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire().await.waited }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!third.is_finished(), "a third request waits while two are in flight");
        drop(first);
        let waited = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the third request goes once a permit is returned")
            .unwrap();
        assert!(waited >= Duration::from_millis(190), "waited {waited:?}");
    }
}
