//! Fault injection shared by every simulator: each request rolls the dice once.

use std::time::Duration;

use rand::Rng;

/// Shares (0.0 to 1.0) of requests that fail in each way. They are tried in the order of the fields, and their
/// sum should stay at or below 1.0.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Share answered with a 5xx (the CRM's own error body where it has one).
    pub server_error: f64,
    /// Share answered with a 429 as if the CRM's quota were spent, with `retry_after`.
    pub rate_limited: f64,
    /// The wait a simulated 429 asks for.
    pub retry_after: Duration,
    /// Share answered only after `slow_delay` (set it past the client's timeout to simulate hangs).
    pub slow: f64,
    /// How long a slow response waits.
    pub slow_delay: Duration,
    /// Share whose (successful) JSON body is cut in half.
    pub truncated_json: f64,
    /// Share whose connection is closed without any answer.
    pub connection_reset: f64,
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    ServerError,
    RateLimited(Duration),
    Slow(Duration),
    TruncatedJson,
    ConnectionReset,
}

impl Faults {
    /// No faults at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// Picks the fault for one request.
    pub fn roll(&self) -> Fault {
        let mut x: f64 = rand::rng().random();
        let table = [
            (self.server_error, Fault::ServerError),
            (self.rate_limited, Fault::RateLimited(self.retry_after)),
            (self.slow, Fault::Slow(self.slow_delay)),
            (self.truncated_json, Fault::TruncatedJson),
            (self.connection_reset, Fault::ConnectionReset),
        ];
        for (share, fault) in table {
            if x < share {
                return fault;
            }
            x -= share;
        }
        Fault::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_faults_never_fail() {
        let faults = Faults::none();
        assert!((0..10_000).all(|_| faults.roll() == Fault::None));
    }

    #[test]
    fn shares_are_roughly_respected() {
        let faults = Faults {
            server_error: 0.3,
            rate_limited: 0.1,
            retry_after: Duration::from_secs(1),
            ..Faults::default()
        };
        let n = 20_000;
        let rolls: Vec<Fault> = (0..n).map(|_| faults.roll()).collect();
        let errors = rolls.iter().filter(|f| **f == Fault::ServerError).count() as f64 / n as f64;
        let limited = rolls.iter().filter(|f| matches!(f, Fault::RateLimited(_))).count() as f64 / n as f64;
        assert!((errors - 0.3).abs() < 0.03, "server errors {errors}");
        assert!((limited - 0.1).abs() < 0.02, "rate limited {limited}");
    }
}
