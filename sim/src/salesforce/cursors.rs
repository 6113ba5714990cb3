//! Query locators: the server-side cursors behind `nextRecordsUrl`. A query with more rows than one batch keeps
//! its result (as of the query) here; each locator dies after an idle timeout, when the user opens more than the
//! allowed number (the oldest goes first), or once its last batch was served. A dead locator answers
//! `INVALID_QUERY_LOCATOR`, as Salesforce does.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::wire::record_id;

#[derive(Debug)]
struct Cursor {
    rows: Vec<Value>,
    last_used: Instant,
}

/// The open cursors of the API user.
#[derive(Debug)]
pub struct Cursors {
    open: HashMap<String, Cursor>,
    /// Oldest first.
    order: VecDeque<String>,
    next: u64,
    max_open: usize,
    idle_timeout: Duration,
}

/// One batch of a cursor.
#[derive(Debug)]
pub struct Batch {
    pub rows: Vec<Value>,
    pub total: usize,
    /// Where the next batch starts, if any rows are left.
    pub next: Option<usize>,
}

impl Cursors {
    pub fn new(max_open: usize, idle_timeout: Duration) -> Self {
        Self {
            open: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            max_open: max_open.max(1),
            idle_timeout,
        }
    }

    /// Keeps `rows` behind a new locator; releases the oldest cursor if too many are open.
    pub fn open(&mut self, rows: Vec<Value>, now: Instant) -> String {
        self.expire(now);
        while self.order.len() >= self.max_open {
            if let Some(oldest) = self.order.pop_front() {
                self.open.remove(&oldest);
            }
        }
        self.next += 1;
        let locator = record_id("01g", self.next);
        self.open.insert(locator.clone(), Cursor { rows, last_used: now });
        self.order.push_back(locator.clone());
        locator
    }

    /// The batch of `size` rows at `position`; None when the locator is unknown, expired or released.
    pub fn batch(&mut self, locator: &str, position: usize, size: usize, now: Instant) -> Option<Batch> {
        self.expire(now);
        let cursor = self.open.get_mut(locator)?;
        if position > cursor.rows.len() {
            return None;
        }
        cursor.last_used = now;
        let end = (position + size).min(cursor.rows.len());
        let batch = Batch {
            rows: cursor.rows[position..end].to_vec(),
            total: cursor.rows.len(),
            next: (end < cursor.rows.len()).then_some(end),
        };
        if batch.next.is_none() {
            self.close(locator);
        }
        Some(batch)
    }

    /// Releases every cursor (as if each had expired).
    pub fn release_all(&mut self) {
        self.open.clear();
        self.order.clear();
    }

    fn close(&mut self, locator: &str) {
        self.open.remove(locator);
        self.order.retain(|l| l != locator);
    }

    fn expire(&mut self, now: Instant) {
        let timeout = self.idle_timeout;
        let dead: Vec<String> = self
            .open
            .iter()
            .filter(|(_, c)| now.duration_since(c.last_used) >= timeout)
            .map(|(l, _)| l.clone())
            .collect();
        for locator in dead {
            self.close(&locator);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!({"Id": i})).collect()
    }

    #[test]
    fn a_cursor_serves_batches_then_closes() {
        let now = Instant::now();
        let mut cursors = Cursors::new(10, Duration::from_secs(900));
        let l = cursors.open(rows(5), now);
        let b = cursors.batch(&l, 2, 2, now).unwrap();
        assert_eq!((b.rows.len(), b.total, b.next), (2, 5, Some(4)));
        let last = cursors.batch(&l, 4, 2, now).unwrap();
        assert_eq!((last.rows.len(), last.next), (1, None));
        assert!(
            cursors.batch(&l, 4, 2, now).is_none(),
            "the last batch closes the cursor"
        );
    }

    #[test]
    fn too_many_or_idle_cursors_are_released() {
        let now = Instant::now();
        let mut cursors = Cursors::new(2, Duration::from_secs(10));
        let first = cursors.open(rows(5), now);
        let second = cursors.open(rows(5), now);
        let _third = cursors.open(rows(5), now);
        assert!(cursors.batch(&first, 1, 1, now).is_none(), "the oldest was released");
        assert!(
            cursors.batch(&second, 1, 1, now + Duration::from_secs(11)).is_none(),
            "idle"
        );
    }
}
