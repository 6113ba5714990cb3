//! A save that takes a while: Creatio stamps ModifiedOn when the save starts (the entity's `Saving` event), yet
//! the row is visible only when the transaction commits, possibly after a client has read past that moment.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::Shared;
use super::store::new_id;

#[derive(Debug)]
enum Change {
    Create {
        entity: String,
        id: String,
        fields: Map<String, Value>,
    },
    Update {
        entity: String,
        id: String,
        fields: Map<String, Value>,
    },
}

/// Buffered changes that become visible all at once on [`LateTransaction::commit`], stamped with the time the
/// transaction began. Dropping it without committing rolls it back.
pub struct LateTransaction {
    shared: Arc<Shared>,
    started: DateTime<Utc>,
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

    /// The ModifiedOn everything in this transaction gets.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.started
    }

    /// Creates a row that appears at commit; returns its GUID.
    pub fn create(&mut self, entity: &str, fields: Map<String, Value>) -> String {
        let id = new_id();
        self.changes.push(Change::Create {
            entity: entity.to_owned(),
            id: id.clone(),
            fields,
        });
        id
    }

    /// Writes a committed row; the write appears at commit (and is dropped if the row is deleted meanwhile).
    pub fn update(&mut self, entity: &str, id: &str, fields: Map<String, Value>) {
        self.changes.push(Change::Update {
            entity: entity.to_owned(),
            id: id.to_owned(),
            fields,
        });
    }

    /// Whether this save wrote (or created) row `id` of `entity`: the database holds that row's lock until the
    /// save commits, so no other writer can change the row meanwhile.
    pub fn touches(&self, entity: &str, id: &str) -> bool {
        self.changes.iter().any(|c| match c {
            Change::Create { entity: e, id: i, .. } | Change::Update { entity: e, id: i, .. } => e == entity && i == id,
        })
    }

    /// Makes every change visible at once, each with ModifiedOn = [`LateTransaction::started_at`].
    pub fn commit(self) {
        let mut store = self.shared.store.lock().unwrap();
        for change in self.changes {
            match change {
                Change::Create { entity, id, fields } => {
                    store.table_or_create(&entity).insert(&id, &fields, self.started)
                }
                Change::Update { entity, id, fields } => {
                    if let Some(table) = store.table_mut(&entity) {
                        table.update(&id, &fields, self.started);
                    }
                }
            }
        }
    }
}
