//! A long-running transaction, Odoo's most surprising sync pitfall: every row it touches gets write_date = the
//! moment it began, yet nobody sees those rows until it commits, possibly after a client's watermark has moved
//! past that moment.

use std::sync::Arc;

use chrono::NaiveDateTime;
use serde_json::{Map, Value};

use super::Shared;

#[derive(Debug)]
enum Change {
    Create {
        model: String,
        id: i64,
        vals: Map<String, Value>,
    },
    Write {
        model: String,
        id: i64,
        vals: Map<String, Value>,
    },
}

/// Buffered changes that become visible all at once on [`LateTransaction::commit`], stamped with the time the
/// transaction began. Dropping it without committing rolls it back (the ids it took stay used, as with a
/// PostgreSQL sequence).
pub struct LateTransaction {
    shared: Arc<Shared>,
    started: NaiveDateTime,
    changes: Vec<Change>,
}

impl std::fmt::Debug for LateTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LateTransaction")
            .field("started", &self.started)
            .field("changes", &self.changes)
            .finish()
    }
}

impl LateTransaction {
    pub(crate) fn begin(shared: Arc<Shared>) -> Self {
        let started = shared.store.lock().unwrap().clock.now();
        Self {
            shared,
            started,
            changes: Vec::new(),
        }
    }

    /// The write_date everything in this transaction gets.
    pub fn started_at(&self) -> NaiveDateTime {
        self.started
    }

    /// Creates a row: its id is taken now (so it is smaller than ids created by others meanwhile), the row
    /// appears at commit.
    pub fn create(&mut self, model: &str, vals: Map<String, Value>) -> i64 {
        let id = self.shared.store.lock().unwrap().model_or_create(model).allocate_id();
        self.changes.push(Change::Create {
            model: model.to_owned(),
            id,
            vals,
        });
        id
    }

    /// Writes a row, committed or created earlier in this transaction. Panics if neither.
    pub fn write(&mut self, model: &str, id: i64, vals: Map<String, Value>) {
        let own = self.changes.iter_mut().find_map(|c| match c {
            Change::Create { model: m, id: i, vals } if m == model && *i == id => Some(vals),
            _ => None,
        });
        if let Some(pending) = own {
            pending.extend(vals);
            return;
        }
        let exists = {
            let store = self.shared.store.lock().unwrap();
            store.model(model).is_some_and(|m| m.rows.contains_key(&id))
        };
        assert!(exists, "LateTransaction::write: no {model} row with id {id}");
        self.changes.push(Change::Write {
            model: model.to_owned(),
            id,
            vals,
        });
    }

    /// Whether this transaction wrote (or created) row `id` of `model`: in Odoo it holds that row's lock until it
    /// commits, so no other writer can change the row meanwhile.
    pub fn touches(&self, model: &str, id: i64) -> bool {
        self.changes.iter().any(|c| match c {
            Change::Create { model: m, id: i, .. } | Change::Write { model: m, id: i, .. } => m == model && *i == id,
        })
    }

    /// Makes every change visible at once, each with write_date = [`LateTransaction::started_at`]. A write to a
    /// row deleted in the meantime is dropped.
    pub fn commit(self) {
        let mut store = self.shared.store.lock().unwrap();
        for change in self.changes {
            match change {
                Change::Create { model, id, vals } => store.model_or_create(&model).insert(id, &vals, self.started),
                Change::Write { model, id, vals } => {
                    if let Some(m) = store.model_mut(&model) {
                        m.update(id, &vals, self.started);
                    }
                }
            }
        }
    }
}
