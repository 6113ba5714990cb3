//! A sliding-window rate limit, measured the strict way: at no instant may the last `window` hold more than
//! `limit` admitted requests. This is how the simulators decide to answer 429, and how they prove the daemon
//! never exceeded a quota.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A strict sliding-window limit that remembers every request it had to refuse.
#[derive(Debug)]
pub struct SlidingWindow {
    limit: u32,
    window: Duration,
    admitted: VecDeque<Instant>,
    excess: u64,
}

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Let through; `remaining` more fit in the current window.
    Admitted { remaining: u32 },
    /// Over the limit; the oldest admitted request leaves the window after `retry_after`.
    Refused { retry_after: Duration },
}

impl SlidingWindow {
    pub fn new(limit: u32, window: Duration) -> Self {
        assert!(limit > 0, "a rate limit needs at least one request");
        Self {
            limit,
            window,
            admitted: VecDeque::new(),
            excess: 0,
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// How many admitted requests the window holds at `now` (Salesforce reports this as its API usage).
    pub fn used(&mut self, now: Instant) -> u32 {
        self.evict(now);
        self.admitted.len() as u32
    }

    fn evict(&mut self, now: Instant) {
        while let Some(&front) = self.admitted.front() {
            if now.duration_since(front) >= self.window {
                self.admitted.pop_front();
            } else {
                break;
            }
        }
    }

    /// Decides one request arriving at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        self.evict(now);
        if self.admitted.len() as u32 >= self.limit {
            self.excess += 1;
            let oldest = *self.admitted.front().expect("limit > 0");
            return Admission::Refused {
                retry_after: self.window.saturating_sub(now.duration_since(oldest)),
            };
        }
        self.admitted.push_back(now);
        Admission::Admitted {
            remaining: self.limit - self.admitted.len() as u32,
        }
    }

    /// How many requests arrived while the window was full (each was answered 429).
    pub fn excess(&self) -> u64 {
        self.excess
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_then_refuses() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(3, Duration::from_secs(1));
        assert_eq!(w.admit(t0), Admission::Admitted { remaining: 2 });
        assert_eq!(w.admit(t0), Admission::Admitted { remaining: 1 });
        assert_eq!(
            w.admit(t0 + Duration::from_millis(10)),
            Admission::Admitted { remaining: 0 }
        );
        assert_eq!(
            w.admit(t0 + Duration::from_millis(400)),
            Admission::Refused {
                retry_after: Duration::from_millis(600)
            }
        );
        assert_eq!(w.excess(), 1);
    }

    #[test]
    fn window_slides_rather_than_resetting() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(2, Duration::from_secs(1));
        w.admit(t0);
        w.admit(t0 + Duration::from_millis(900));
        // A fixed window starting at t0 would reset at 1 s; a sliding one still holds the request from 900 ms.
        assert_eq!(
            w.admit(t0 + Duration::from_millis(1000)),
            Admission::Admitted { remaining: 0 }
        );
        assert!(matches!(
            w.admit(t0 + Duration::from_millis(1100)),
            Admission::Refused { .. }
        ));
        assert_eq!(
            w.admit(t0 + Duration::from_millis(1900)),
            Admission::Admitted { remaining: 0 }
        );
    }
}
