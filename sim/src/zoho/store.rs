//! The org's data: records per module, each with its committed version and, while a slow operation is open, a
//! pending one; the delete log `/deleted` reads; and how many records the API created per field value.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// Ids are 19-digit numbers, like Zoho's (`5725767000000412001`), so string and numeric order agree.
const FIRST_ID: u64 = 5_725_767_000_000_100_001;

/// One version of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub fields: Map<String, Value>,
    pub modified: DateTime<Utc>,
}

/// A record: its committed version (None while it was created by a late operation that has not committed) and a
/// version a late operation wrote but has not committed yet.
#[derive(Debug, Clone)]
pub struct Stored {
    pub created: DateTime<Utc>,
    pub current: Option<Version>,
    pub pending: Option<Version>,
}

impl Stored {
    /// The version every API read sees.
    pub fn visible(&self) -> Option<&Version> {
        self.current.as_ref()
    }
}

/// A deleted record, as `/deleted` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletedEntry {
    pub id: String,
    pub display_name: String,
    pub deleted_time: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub struct Store {
    modules: HashMap<String, BTreeMap<u64, Stored>>,
    deleted: HashMap<String, Vec<DeletedEntry>>,
    next_id: u64,
    creates: HashMap<(String, String, String), usize>,
}

impl Store {
    pub fn new() -> Self {
        Self {
            next_id: FIRST_ID,
            ..Self::default()
        }
    }

    pub fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn module(&self, module: &str) -> Option<&BTreeMap<u64, Stored>> {
        self.modules.get(module)
    }

    pub fn module_mut(&mut self, module: &str) -> &mut BTreeMap<u64, Stored> {
        self.modules.entry(module.to_string()).or_default()
    }

    /// Inserts a committed record.
    pub fn insert(&mut self, module: &str, id: u64, fields: Map<String, Value>, at: DateTime<Utc>) {
        self.module_mut(module).insert(
            id,
            Stored {
                created: at,
                current: Some(Version { fields, modified: at }),
                pending: None,
            },
        );
    }

    /// Merges `fields` into the committed version and stamps it `at`. False if there is no visible record.
    pub fn update(&mut self, module: &str, id: u64, fields: Map<String, Value>, at: DateTime<Utc>) -> bool {
        let Some(version) = self
            .modules
            .get_mut(module)
            .and_then(|m| m.get_mut(&id))
            .and_then(|r| r.current.as_mut())
        else {
            return false;
        };
        version.fields.extend(fields);
        version.modified = at;
        true
    }

    /// Removes a visible record and logs its deletion at `at`. False if there is no such record.
    pub fn delete(&mut self, module: &str, id: u64, at: DateTime<Utc>) -> bool {
        let Some(records) = self.modules.get_mut(module) else {
            return false;
        };
        if records.get(&id).and_then(Stored::visible).is_none() {
            return false;
        }
        let record = records.remove(&id).expect("checked above");
        let display_name = display_name(module, &record.current.expect("visible").fields);
        self.deleted.entry(module.to_string()).or_default().push(DeletedEntry {
            id: id.to_string(),
            display_name,
            deleted_time: at,
        });
        true
    }

    /// The delete log of `module`, oldest first.
    pub fn deleted(&self, module: &str) -> &[DeletedEntry] {
        self.deleted.get(module).map_or(&[], Vec::as_slice)
    }

    /// Drops delete-log entries older than `cutoff` (Zoho keeps them for a limited time).
    pub fn purge_deleted_before(&mut self, cutoff: DateTime<Utc>) {
        for entries in self.deleted.values_mut() {
            entries.retain(|e| e.deleted_time >= cutoff);
        }
    }

    /// Counts a record the API created, once per string field it was created with.
    pub fn count_create(&mut self, module: &str, fields: &Map<String, Value>) {
        for (name, value) in fields {
            if let Value::String(value) = value {
                *self
                    .creates
                    .entry((module.to_string(), name.clone(), value.clone()))
                    .or_default() += 1;
            }
        }
    }

    pub fn creates_for(&self, module: &str, field: &str, value: &str) -> usize {
        self.creates
            .get(&(module.to_string(), field.to_string(), value.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// The first visible record of `module` whose `field` equals `value`.
    pub fn find_by(&self, module: &str, field: &str, value: &Value) -> Option<u64> {
        self.modules.get(module)?.iter().find_map(|(id, r)| {
            let fields = &r.visible()?.fields;
            (fields.get(field) == Some(value)).then_some(*id)
        })
    }

    /// A random visible record of `module`.
    pub fn random_visible(&self, module: &str, rng: &mut impl rand::Rng) -> Option<u64> {
        let records = self.modules.get(module)?;
        if records.is_empty() {
            return None;
        }
        // A few tries are enough: almost every record is visible.
        for _ in 0..8 {
            let index = rng.random_range(0..records.len());
            let (id, record) = records.iter().nth(index).expect("index in range");
            if record.visible().is_some() {
                return Some(*id);
            }
        }
        None
    }
}

/// The name `/deleted` shows for a record: the module's main name field.
pub fn display_name(module: &str, fields: &Map<String, Value>) -> String {
    let field = match module {
        "Accounts" => "Account_Name",
        "Deals" => "Deal_Name",
        _ => "Last_Name",
    };
    fields.get(field).and_then(Value::as_str).unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn deletes_leave_a_log_entry_and_counts_follow_creates() {
        let mut store = Store::new();
        let at = Utc::now();
        let id = store.allocate_id();
        assert_eq!(id.to_string().len(), 19);
        store.insert("Leads", id, fields(json!({"Last_Name": "Ada"})), at);
        assert_eq!(store.find_by("Leads", "Last_Name", &json!("Ada")), Some(id));
        assert!(store.delete("Leads", id, at));
        assert!(!store.delete("Leads", id, at), "a second delete finds nothing");
        assert_eq!(store.deleted("Leads")[0].display_name, "Ada");
        store.count_create("Leads", &fields(json!({"Email": "a@b.c", "Age": 3})));
        assert_eq!(store.creates_for("Leads", "Email", "a@b.c"), 1);
        assert_eq!(store.creates_for("Leads", "Age", "3"), 0);
    }
}
