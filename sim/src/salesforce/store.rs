//! The simulated org's data: records per object with Salesforce's system fields, the recycle bin and its delete
//! log, and a count of the records each external-id upsert created.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rand::Rng;
use rand::seq::IteratorRandom;
use serde_json::{Map, Value, json};

use super::soql::{self, Query};
use super::wire::{format_time, key_prefix, record_id};

/// Fields the org sets itself; a write that names one is refused.
pub const SYSTEM_FIELDS: &[&str] = &["Id", "SystemModstamp", "CreatedDate", "LastModifiedDate", "IsDeleted"];

/// One record as the org holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SfRecord {
    pub id: String,
    pub object: String,
    /// The record's own fields (not the system fields).
    pub fields: Map<String, Value>,
    pub created: DateTime<Utc>,
    pub modstamp: DateTime<Utc>,
    /// When it went to the recycle bin; None while it is live.
    pub deleted_at: Option<DateTime<Utc>>,
}

impl SfRecord {
    /// The record as the REST API renders it: its fields, the system fields and `attributes`.
    pub fn render(&self, version: &str) -> Map<String, Value> {
        let mut row = Map::new();
        row.insert(
            "attributes".into(),
            json!({"type": self.object, "url": format!("/services/data/{version}/sobjects/{}/{}", self.object, self.id)}),
        );
        row.insert("Id".into(), json!(self.id));
        for (k, v) in &self.fields {
            row.insert(k.clone(), v.clone());
        }
        row.insert("CreatedDate".into(), json!(format_time(self.created)));
        row.insert("LastModifiedDate".into(), json!(format_time(self.modstamp)));
        row.insert("SystemModstamp".into(), json!(format_time(self.modstamp)));
        row.insert("IsDeleted".into(), json!(self.deleted_at.is_some()));
        row
    }
}

/// Why an upsert was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpsertError {
    /// More than one record holds the external id: Salesforce answers 300 with their URLs.
    Multiple(Vec<String>),
}

/// Every object's records.
#[derive(Debug, Default)]
pub struct Store {
    objects: BTreeMap<String, BTreeMap<String, SfRecord>>,
    next: u64,
    /// (object, external id field, value) → records the upsert created.
    creates: HashMap<(String, String, String), usize>,
    /// The recycle bin was emptied up to here: the delete log knows nothing older.
    purged_before: Option<DateTime<Utc>>,
}

impl Store {
    /// A fresh id for `object`.
    pub fn allocate_id(&mut self, object: &str) -> String {
        self.next += 1;
        record_id(key_prefix(object), self.next)
    }

    /// Makes sure `object` exists (queries on an unknown object are `INVALID_TYPE`).
    pub fn ensure_object(&mut self, object: &str) {
        self.objects.entry(object.to_string()).or_default();
    }

    pub fn has_object(&self, object: &str) -> bool {
        self.objects.contains_key(object)
    }

    /// Inserts a record with a given id, created and modified at `at`.
    pub fn insert(&mut self, object: &str, id: String, fields: Map<String, Value>, at: DateTime<Utc>) {
        let record = SfRecord {
            id: id.clone(),
            object: object.to_string(),
            fields,
            created: at,
            modstamp: at,
            deleted_at: None,
        };
        self.objects.entry(object.to_string()).or_default().insert(id, record);
    }

    /// Creates a record now; returns its id.
    pub fn create(&mut self, object: &str, fields: Map<String, Value>, at: DateTime<Utc>) -> String {
        let id = self.allocate_id(object);
        self.insert(object, id.clone(), fields, at);
        id
    }

    /// Merges `fields` into a live record and stamps it `at`. False if there is no such live record.
    pub fn update(&mut self, object: &str, id: &str, fields: &Map<String, Value>, at: DateTime<Utc>) -> bool {
        match self.get_mut(object, id) {
            Some(record) if record.deleted_at.is_none() => {
                for (k, v) in fields {
                    record.fields.insert(k.clone(), v.clone());
                }
                record.modstamp = record.modstamp.max(at);
                true
            }
            _ => false,
        }
    }

    /// Moves a live record to the recycle bin at `at`. False if there is no such live record.
    pub fn delete(&mut self, object: &str, id: &str, at: DateTime<Utc>) -> bool {
        match self.get_mut(object, id) {
            Some(record) if record.deleted_at.is_none() => {
                record.deleted_at = Some(at);
                record.modstamp = record.modstamp.max(at);
                true
            }
            _ => false,
        }
    }

    /// Restores a record from the recycle bin at `at` (it leaves the delete log). False if it is not there.
    pub fn undelete(&mut self, object: &str, id: &str, at: DateTime<Utc>) -> bool {
        match self.get_mut(object, id) {
            Some(record) if record.deleted_at.is_some() => {
                record.deleted_at = None;
                record.modstamp = record.modstamp.max(at);
                true
            }
            _ => false,
        }
    }

    /// Empties the recycle bin of everything deleted before `before`: those records are gone for good, and the
    /// delete log no longer reaches back past `before`.
    pub fn purge_deleted_before(&mut self, before: DateTime<Utc>) {
        for records in self.objects.values_mut() {
            records.retain(|_, r| r.deleted_at.is_none_or(|at| at >= before));
        }
        self.purged_before = Some(self.purged_before.map_or(before, |p| p.max(before)));
    }

    pub fn purged_before(&self) -> Option<DateTime<Utc>> {
        self.purged_before
    }

    fn get_mut(&mut self, object: &str, id: &str) -> Option<&mut SfRecord> {
        self.objects.get_mut(object)?.get_mut(id)
    }

    pub fn get(&self, object: &str, id: &str) -> Option<&SfRecord> {
        self.objects.get(object)?.get(id)
    }

    /// Every record of `object`, recycle bin included, in id order.
    pub fn all(&self, object: &str) -> Vec<SfRecord> {
        self.objects
            .get(object)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// A random live record of `object`.
    pub fn random_live(&self, object: &str, rng: &mut impl Rng) -> Option<String> {
        self.objects
            .get(object)?
            .values()
            .filter(|r| r.deleted_at.is_none())
            .choose(rng)
            .map(|r| r.id.clone())
    }

    /// A random record of `object` in the recycle bin.
    pub fn random_deleted(&self, object: &str, rng: &mut impl Rng) -> Option<String> {
        self.objects
            .get(object)?
            .values()
            .filter(|r| r.deleted_at.is_some())
            .choose(rng)
            .map(|r| r.id.clone())
    }

    /// Live records that hold `value` in `field`.
    pub fn find_by(&self, object: &str, field: &str, value: &str) -> Vec<String> {
        self.objects
            .get(object)
            .map(|m| {
                m.values()
                    .filter(|r| r.deleted_at.is_none() && r.fields.get(field).and_then(Value::as_str) == Some(value))
                    .map(|r| r.id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Salesforce's upsert on an external id: updates the one record that holds `value` in `field`, or creates
    /// one with it. Returns the id and whether it was created.
    pub fn upsert(
        &mut self,
        object: &str,
        field: &str,
        value: &str,
        mut fields: Map<String, Value>,
        at: DateTime<Utc>,
    ) -> Result<(String, bool), UpsertError> {
        let matches = self.find_by(object, field, value);
        match matches.as_slice() {
            [] => {
                fields.insert(field.to_string(), json!(value));
                let id = self.create(object, fields, at);
                *self
                    .creates
                    .entry((object.to_string(), field.to_string(), value.to_string()))
                    .or_default() += 1;
                Ok((id, true))
            }
            [id] => {
                let id = id.clone();
                self.update(object, &id, &fields, at);
                Ok((id, false))
            }
            _ => Err(UpsertError::Multiple(matches)),
        }
    }

    /// How many records upserts created for `value` in `field`.
    pub fn creates_for(&self, object: &str, field: &str, value: &str) -> usize {
        self.creates
            .get(&(object.to_string(), field.to_string(), value.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// The live records a query selects, sorted and limited, rendered with the selected fields (plus `Id` and
    /// `attributes`, which Salesforce always returns).
    pub fn query(&self, query: &Query, version: &str) -> Vec<Value> {
        let Some(records) = self.objects.get(&query.object) else {
            return Vec::new();
        };
        let mut rows: Vec<Map<String, Value>> = records
            .values()
            .filter(|r| r.deleted_at.is_none())
            .map(|r| r.render(version))
            .filter(|row| query.filter.as_ref().is_none_or(|f| f.matches(row)))
            .collect();
        rows.sort_by(|a, b| {
            for (field, ascending) in &query.order {
                let ord = soql::compare_values(soql::lookup(a, field), soql::lookup(b, field));
                let ord = if *ascending { ord } else { ord.reverse() };
                if ord.is_ne() {
                    return ord;
                }
            }
            std::cmp::Ordering::Equal
        });
        if let Some(limit) = query.limit {
            rows.truncate(limit);
        }
        rows.into_iter()
            .map(|row| {
                if query.fields.is_empty() {
                    // FIELDS(STANDARD): every field but the custom ones.
                    let mut row = row;
                    row.retain(|k, _| !k.ends_with("__c"));
                    return Value::Object(row);
                }
                let mut selected = Map::new();
                selected.insert("attributes".into(), row["attributes"].clone());
                for field in std::iter::once("Id").chain(query.fields.iter().map(String::as_str)) {
                    let value = soql::lookup(&row, field).cloned().unwrap_or(Value::Null);
                    selected.insert(field.to_string(), value);
                }
                Value::Object(selected)
            })
            .collect()
    }

    /// The field names a query may use on `object`: the system fields and every field a record of it has.
    pub fn known_fields(&self, object: &str, external_id_field: &str) -> Vec<String> {
        let mut names: Vec<String> = SYSTEM_FIELDS.iter().map(|s| s.to_string()).collect();
        names.push(external_id_field.to_string());
        names.extend(["Name", "Email", "FirstName", "LastName", "Phone"].map(String::from));
        if let Some(records) = self.objects.get(object) {
            for r in records.values() {
                names.extend(r.fields.keys().cloned());
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// Records of `object` deleted in `[start, end)`, with their deletion times.
    pub fn deleted_between(
        &self,
        object: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Vec<(String, DateTime<Utc>)> {
        let mut deleted: Vec<_> = self
            .objects
            .get(object)
            .map(|m| {
                m.values()
                    .filter_map(|r| {
                        r.deleted_at
                            .filter(|at| *at >= start && *at < end)
                            .map(|at| (r.id.clone(), at))
                    })
                    .collect()
            })
            .unwrap_or_default();
        deleted.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn upsert_creates_once_then_updates() {
        let mut store = Store::default();
        let now = Utc::now();
        let (id, created) = store
            .upsert("Account", "Key__c", "k1", fields(json!({"Name": "A"})), now)
            .unwrap();
        assert!(created);
        let (again, created) = store
            .upsert("Account", "Key__c", "k1", fields(json!({"Name": "B"})), now)
            .unwrap();
        assert_eq!((again.as_str(), created), (id.as_str(), false));
        assert_eq!(store.get("Account", &id).unwrap().fields["Name"], "B");
        assert_eq!(store.creates_for("Account", "Key__c", "k1"), 1);
        store.insert("Account", "001dup".into(), fields(json!({"Key__c": "k1"})), now);
        assert!(matches!(
            store.upsert("Account", "Key__c", "k1", Map::new(), now),
            Err(UpsertError::Multiple(ids)) if ids.len() == 2
        ));
    }

    #[test]
    fn deleted_records_leave_queries_and_enter_the_delete_log() {
        let mut store = Store::default();
        let t0 = Utc::now();
        let id = store.create("Account", fields(json!({"Name": "A"})), t0);
        let later = t0 + chrono::Duration::seconds(5);
        assert!(store.delete("Account", &id, later));
        let q = soql::parse("SELECT Id FROM Account").unwrap();
        assert!(store.query(&q, "v62.0").is_empty());
        assert_eq!(
            store.deleted_between("Account", t0, later + chrono::Duration::seconds(1)),
            vec![(id.clone(), later)]
        );
        assert!(store.undelete("Account", &id, later));
        assert_eq!(store.query(&q, "v62.0").len(), 1);
        assert!(
            store
                .deleted_between("Account", t0, later + chrono::Duration::seconds(1))
                .is_empty()
        );
    }
}
