//! Zoho's API credits: each call costs credits (most 1; COQL by its LIMIT), and an org may spend at most so many
//! in any rolling window (24 hours in Zoho; tests scale it down). Measured the strict way, like
//! [`crate::window::SlidingWindow`], but weighted, and every refused call is remembered.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A rolling credit budget.
#[derive(Debug)]
pub struct CreditWindow {
    limit: u32,
    window: Duration,
    spent: VecDeque<(Instant, u32)>,
    in_window: u32,
    excess: u64,
}

/// The answer to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Charged; `remaining` credits are left in the window, and the oldest charge in it leaves after `reset_in`.
    Charged { remaining: u32, reset_in: Duration },
    /// Not enough credits left; enough leave the window after `retry_after`.
    Refused { retry_after: Duration },
}

impl CreditWindow {
    pub fn new(limit: u32, window: Duration) -> Self {
        assert!(limit > 0, "a credit budget needs at least one credit");
        Self {
            limit,
            window,
            spent: VecDeque::new(),
            in_window: 0,
            excess: 0,
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, cost)) = self.spent.front() {
            if now.duration_since(at) >= self.window {
                self.spent.pop_front();
                self.in_window -= cost;
            } else {
                break;
            }
        }
    }

    /// Charges `cost` credits for a call arriving at `now`, or refuses it.
    pub fn charge(&mut self, now: Instant, cost: u32) -> Charge {
        self.expire(now);
        if self.in_window + cost > self.limit {
            self.excess += 1;
            // The wait until enough old charges leave the window.
            let mut freed = self.limit - self.in_window;
            let mut retry_after = self.window;
            for &(at, spent) in &self.spent {
                freed += spent;
                if freed >= cost {
                    retry_after = self.window.saturating_sub(now.duration_since(at));
                    break;
                }
            }
            return Charge::Refused { retry_after };
        }
        self.spent.push_back((now, cost));
        self.in_window += cost;
        let oldest = self.spent.front().map_or(now, |(at, _)| *at);
        Charge::Charged {
            remaining: self.limit - self.in_window,
            reset_in: self.window.saturating_sub(now.duration_since(oldest)),
        }
    }

    /// How many calls arrived when the window had too few credits left (each was answered 429).
    pub fn excess(&self) -> u64 {
        self.excess
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_charges_fill_the_window_and_the_refusal_names_the_wait() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut w = CreditWindow::new(5, Duration::from_secs(1));
        assert!(matches!(w.charge(ms(0), 3), Charge::Charged { remaining: 2, .. }));
        assert!(matches!(w.charge(ms(100), 1), Charge::Charged { remaining: 1, .. }));
        // Two credits do not fit; the 3-credit charge from t0 leaves at 1000 ms.
        assert_eq!(
            w.charge(ms(400), 2),
            Charge::Refused {
                retry_after: Duration::from_millis(600)
            }
        );
        assert!(matches!(w.charge(ms(400), 1), Charge::Charged { remaining: 0, .. }));
        assert!(matches!(w.charge(ms(1000), 2), Charge::Charged { remaining: 1, .. }));
        assert_eq!(w.excess(), 1);
    }
}
