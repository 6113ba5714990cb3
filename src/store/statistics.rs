//! Planner statistics for the `records` table, kept current during bulk loads.
//!
//! PostgreSQL plans a page's lookup (`remote_id IN (...)` within one stream) from the table's statistics. A table
//! that was never analysed (a fresh install before autovacuum's first visit, or autovacuum off) is estimated at a
//! couple of rows per stream, so the planner reads the whole stream through the index's first two columns and
//! filters on `remote_id`: every page costs the size of the stream, and an initial sync of 100,000 HubSpot records
//! fell to ~1.3k records/s (docs/BENCHMARKS.md, "Pull throughput"). The store therefore analyses the table itself
//! while it grows: once this process has inserted 1,000 rows, and again each time that count doubles, so a load of
//! n rows costs about log2(n / 1000) ANALYZEs. SQLite's planner picks the unique index without statistics.

use std::sync::atomic::{AtomicU64, Ordering};

use sea_orm::{ConnectionTrait, DbBackend};

use super::Store;

/// Rows inserted before the first ANALYZE.
const FIRST: u64 = 1_000;

/// Rows this process inserted into `records`, and the count at which it next analyses the table.
#[derive(Debug)]
pub(crate) struct GrowthTracker {
    inserted: AtomicU64,
    next: AtomicU64,
}

impl Default for GrowthTracker {
    fn default() -> Self {
        Self {
            inserted: AtomicU64::new(0),
            next: AtomicU64::new(FIRST),
        }
    }
}

impl GrowthTracker {
    /// Counts `n` inserted rows; true when the table should be analysed now (once per threshold, whichever caller
    /// crosses it first).
    fn grew(&self, n: u64) -> bool {
        let total = self.inserted.fetch_add(n, Ordering::Relaxed) + n;
        let next = self.next.load(Ordering::Relaxed);
        total >= next
            && self
                .next
                .compare_exchange(next, total.saturating_mul(2), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl Store {
    /// Called after a commit that inserted `n` records: refreshes the planner's statistics when the table has
    /// grown enough since the last time. A failure is logged, not returned: the rows are committed, and a stale
    /// plan is slow, not wrong.
    pub(crate) async fn records_inserted(&self, n: usize) {
        if n == 0 || self.backend() != DbBackend::Postgres || !self.growth.grew(n as u64) {
            return;
        }
        let started = std::time::Instant::now();
        match self.db.execute_unprepared("ANALYZE records").await {
            Ok(_) => tracing::debug!(elapsed = ?started.elapsed(), "Analysed the records table after bulk inserts."),
            Err(e) => tracing::warn!(error = %e, "Could not analyse the records table; page lookups may be slow."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_analysed_at_a_thousand_rows_and_then_at_each_doubling() {
        let tracker = GrowthTracker::default();
        let mut analysed_at = Vec::new();
        for page in 1..=100u64 {
            if tracker.grew(500) {
                analysed_at.push(page * 500);
            }
        }
        assert_eq!(analysed_at, [1_000, 2_000, 4_000, 8_000, 16_000, 32_000]);
        assert!(!tracker.grew(0));
    }
}
