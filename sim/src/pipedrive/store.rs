//! The records behind the fake Pipedrive: persons, organizations and deals, each with its own id sequence and a
//! short version history, so that three readers can disagree the way they do in Pipedrive:
//!
//! - the API sees a version once it is *visible* (a late commit stamps `update_time` at the write but becomes
//!   visible later);
//! - the search index sees it `index_lag` after that;
//! - the truth ([`Record::latest`]) is the last write, visible or not.
//!
//! Deletes are soft: a deleted record keeps its last fields with a deletion time, reads as `is_deleted` by id for
//! 30 days, and is then purged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::clock::Clock;

/// The entities the simulator serves, by their API path segment.
pub const ENTITIES: [&str; 3] = ["persons", "organizations", "deals"];

/// How long a deleted record stays readable before Pipedrive purges it.
pub(crate) const PURGE_AFTER: chrono::Duration = chrono::Duration::days(30);

/// One state of a record, after one write.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    /// When API readers start to see this version.
    pub visible_at: Instant,
    pub update_time: DateTime<Utc>,
    /// The standard fields (`name`, `emails`, `title`, ...), without `id`, times, `is_deleted` and custom fields.
    pub fields: Map<String, Value>,
    /// Custom field values by field key.
    pub custom_fields: Map<String, Value>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// Set when the record was deleted by a merge into this id.
    pub merged_into: Option<u64>,
}

impl Version {
    pub fn deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// Deleted more than 30 days before `today`: gone from every endpoint.
    pub fn purged(&self, today: DateTime<Utc>) -> bool {
        self.deleted_at.is_some_and(|at| at + PURGE_AFTER <= today)
    }
}

/// One record and the versions some reader may still see.
#[derive(Debug)]
pub(crate) struct Record {
    pub id: u64,
    pub add_time: DateTime<Utc>,
    /// Oldest first, never empty; `visible_at` never decreases along it.
    versions: VecDeque<Version>,
}

impl Record {
    /// The last write, whether readers see it yet or not.
    pub fn latest(&self) -> &Version {
        self.versions.back().expect("a record has at least one version")
    }

    /// The version a reader `lag` behind the API sees at `now`; None when the record does not exist for it yet.
    pub fn seen(&self, lag: Duration, now: Instant) -> Option<&Version> {
        self.versions.iter().rev().find(|v| v.visible_at + lag <= now)
    }

    /// Whether a write is still waiting to become visible (a late commit in flight).
    pub fn pending(&self, now: Instant) -> bool {
        self.latest().visible_at > now
    }

    fn push(&mut self, mut version: Version, keep_for: Duration, now: Instant) {
        // A write that starts while a late commit holds the row waits for it: never visible before it.
        version.visible_at = version.visible_at.max(self.latest().visible_at);
        self.versions.push_back(version);
        while self.versions.len() > 1 && self.versions[1].visible_at + keep_for <= now {
            self.versions.pop_front();
        }
    }
}

/// The records of one entity.
#[derive(Debug, Default)]
pub(crate) struct EntityStore {
    pub records: BTreeMap<u64, Record>,
    next_id: u64,
}

impl EntityStore {
    pub fn get(&self, id: u64) -> Option<&Record> {
        self.records.get(&id)
    }

    /// Ids of records that are live (visible and not deleted) for API readers at `now`.
    pub fn live_ids(&self, now: Instant) -> Vec<u64> {
        self.records
            .values()
            .filter(|r| !r.pending(now) && r.seen(Duration::ZERO, now).is_some_and(|v| !v.deleted()))
            .map(|r| r.id)
            .collect()
    }
}

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteError {
    NotFound,
}

/// Every entity's records, the clock, and the bookkeeping tests read.
#[derive(Debug)]
pub(crate) struct Store {
    pub clock: Clock,
    /// How far the search index lags behind the API.
    pub index_lag: Duration,
    entities: HashMap<String, EntityStore>,
    /// (entity, custom field key, value) -> how many records the API created with it.
    creates: HashMap<(String, String, String), usize>,
}

impl Store {
    pub fn new(index_lag: Duration) -> Self {
        Self {
            clock: Clock::default(),
            index_lag,
            entities: HashMap::new(),
            creates: HashMap::new(),
        }
    }

    pub fn entity(&self, entity: &str) -> Option<&EntityStore> {
        self.entities.get(entity)
    }

    fn entity_mut(&mut self, entity: &str) -> &mut EntityStore {
        self.entities.entry(entity.to_string()).or_default()
    }

    /// Takes the entity's next id (ids are per entity in Pipedrive, starting at 1).
    pub fn allocate_id(&mut self, entity: &str) -> u64 {
        let store = self.entity_mut(entity);
        store.next_id += 1;
        store.next_id
    }

    /// Adds a record under an id from [`Store::allocate_id`], created and updated at `at`.
    pub fn insert(
        &mut self,
        entity: &str,
        id: u64,
        fields: Map<String, Value>,
        custom_fields: Map<String, Value>,
        at: DateTime<Utc>,
        visible_at: Instant,
    ) {
        let version = Version {
            visible_at,
            update_time: at,
            fields,
            custom_fields,
            deleted_at: None,
            merged_into: None,
        };
        self.entity_mut(entity).records.insert(
            id,
            Record {
                id,
                add_time: at,
                versions: VecDeque::from([version]),
            },
        );
    }

    /// Creates a record now and returns its id.
    pub fn create(
        &mut self,
        entity: &str,
        fields: Map<String, Value>,
        custom_fields: Map<String, Value>,
        now: Instant,
    ) -> u64 {
        let id = self.allocate_id(entity);
        let at = self.clock.now();
        self.insert(entity, id, fields, custom_fields, at, now);
        id
    }

    /// Merges `fields` and `custom_fields` (a null custom value clears it) into a live record, stamped now and
    /// visible from `visible_at`.
    pub fn update(
        &mut self,
        entity: &str,
        id: u64,
        fields: Map<String, Value>,
        custom_fields: Map<String, Value>,
        visible_at: Instant,
        now: Instant,
    ) -> Result<(), WriteError> {
        let at = self.clock.now();
        let keep_for = self.index_lag;
        let record = self
            .entity_mut(entity)
            .records
            .get_mut(&id)
            .filter(|r| !r.latest().deleted())
            .ok_or(WriteError::NotFound)?;
        let mut version = record.latest().clone();
        version.fields.extend(fields);
        for (key, value) in custom_fields {
            if value.is_null() {
                version.custom_fields.remove(&key);
            } else {
                version.custom_fields.insert(key, value);
            }
        }
        version.update_time = at;
        version.visible_at = visible_at;
        record.push(version, keep_for, now);
        Ok(())
    }

    /// Soft-deletes a live record now (a merge names the surviving record).
    pub fn delete(&mut self, entity: &str, id: u64, merged_into: Option<u64>, now: Instant) -> Result<(), WriteError> {
        let at = self.clock.now();
        let keep_for = self.index_lag;
        let record = self
            .entity_mut(entity)
            .records
            .get_mut(&id)
            .filter(|r| !r.latest().deleted())
            .ok_or(WriteError::NotFound)?;
        let mut version = record.latest().clone();
        version.update_time = at;
        version.deleted_at = Some(at);
        version.merged_into = merged_into;
        version.visible_at = now;
        record.push(version, keep_for, now);
        Ok(())
    }

    /// Counts an API create for every custom field value it set.
    pub fn count_create(&mut self, entity: &str, custom_fields: &Map<String, Value>) {
        for (key, value) in custom_fields {
            if let Some(value) = value_text(value) {
                *self
                    .creates
                    .entry((entity.to_string(), key.clone(), value))
                    .or_default() += 1;
            }
        }
    }

    pub fn creates_with(&self, entity: &str, field: &str, value: &str) -> usize {
        self.creates
            .get(&(entity.to_string(), field.to_string(), value.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

/// A scalar value as the text Pipedrive compares in searches; None for null, arrays and objects.
pub(crate) fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_late_write_is_stamped_now_but_seen_only_once_visible() {
        let mut store = Store::new(Duration::ZERO);
        let t0 = Instant::now();
        let id = store.create("persons", fields(json!({"name": "Ann"})), Map::new(), t0);
        store
            .update(
                "persons",
                id,
                fields(json!({"name": "Bea"})),
                Map::new(),
                t0 + Duration::from_secs(2),
                t0,
            )
            .unwrap();
        let record = store.entity("persons").unwrap().get(id).unwrap();
        assert_eq!(record.latest().fields["name"], "Bea");
        assert_eq!(record.seen(Duration::ZERO, t0).unwrap().fields["name"], "Ann");
        assert!(record.pending(t0));
        let later = t0 + Duration::from_secs(2);
        assert_eq!(record.seen(Duration::ZERO, later).unwrap().fields["name"], "Bea");
    }

    #[test]
    fn the_index_sees_writes_only_after_its_lag() {
        let lag = Duration::from_millis(500);
        let mut store = Store::new(lag);
        let t0 = Instant::now();
        let id = store.create("deals", fields(json!({"title": "D"})), Map::new(), t0);
        let record = store.entity("deals").unwrap().get(id).unwrap();
        assert!(record.seen(lag, t0).is_none(), "not indexed yet");
        assert!(record.seen(lag, t0 + lag).is_some());
    }

    #[test]
    fn deletes_are_soft_and_purged_after_thirty_days() {
        let mut store = Store::new(Duration::ZERO);
        let now = Instant::now();
        let id = store.create("organizations", fields(json!({"name": "O"})), Map::new(), now);
        store.delete("organizations", id, None, now).unwrap();
        let version = store.entity("organizations").unwrap().get(id).unwrap().latest().clone();
        assert!(version.deleted());
        let deleted_at = version.deleted_at.unwrap();
        assert!(!version.purged(deleted_at + chrono::Duration::days(29)));
        assert!(version.purged(deleted_at + chrono::Duration::days(30)));
        assert_eq!(
            store.update("organizations", id, Map::new(), Map::new(), now, now),
            Err(WriteError::NotFound),
            "a deleted record cannot be written"
        );
    }

    #[test]
    fn ids_are_per_entity_and_creates_are_counted_per_custom_value() {
        let mut store = Store::new(Duration::ZERO);
        let now = Instant::now();
        assert_eq!(store.create("persons", Map::new(), Map::new(), now), 1);
        assert_eq!(store.create("deals", Map::new(), Map::new(), now), 1);
        store.count_create("persons", &fields(json!({"k": "a", "n": 3})));
        store.count_create("persons", &fields(json!({"k": "a"})));
        assert_eq!(store.creates_with("persons", "k", "a"), 2);
        assert_eq!(store.creates_with("persons", "n", "3"), 1);
        assert_eq!(store.creates_with("deals", "k", "a"), 0);
    }
}
