//! Every request a simulator saw, with when it arrived and what it was answered, so tests can check rates,
//! backoff spacing and what the daemon asked for.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One request as the simulator saw it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// The operation the simulator recognised ("search", "batch_upsert", "execute_kw:search_read", ...).
    pub operation: String,
    pub status: u16,
}

/// An append-only log of requests, shared between the server task and the test.
#[derive(Debug, Default)]
pub struct RequestLog {
    records: Mutex<Vec<RequestRecord>>,
}

impl RequestLog {
    pub fn push(&self, record: RequestRecord) {
        self.records.lock().unwrap().push(record);
    }

    pub fn snapshot(&self) -> Vec<RequestRecord> {
        self.records.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn count_status(&self, status: u16) -> usize {
        self.records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.status == status)
            .count()
    }

    /// The largest number of requests (whatever their answer) that arrived within any window of length
    /// `window`, measured half-open as `(t - window, t]`.
    pub fn max_in_any_window(&self, window: Duration) -> usize {
        let mut times: Vec<Instant> = self.records.lock().unwrap().iter().map(|r| r.at).collect();
        times.sort();
        max_in_window(&times, window)
    }
}

/// The largest count of sorted instants inside any half-open window `(t - window, t]`.
pub fn max_in_window(sorted: &[Instant], window: Duration) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end].duration_since(sorted[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_in_window_counts_half_open_windows() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let times = [ms(0), ms(500), ms(999), ms(1000), ms(1001)];
        // (0, 1000] holds 500, 999, 1000; (1, 1001] holds 500, 999, 1000, 1001.
        assert_eq!(max_in_window(&times, Duration::from_secs(1)), 4);
        assert_eq!(max_in_window(&[], Duration::from_secs(1)), 0);
    }
}
