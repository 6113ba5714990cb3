//! The records behind the fake HubSpot: every object type's records with a short version history (so search can
//! see the data as it was a moment ago), lookups by unique property for upserts, and the count of upsert creates.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{Map, Value};

use super::search::SearchCache;

/// The current wall-clock time at HubSpot's precision (milliseconds).
pub(crate) fn now_ms() -> DateTime<Utc> {
    truncate_ms(Utc::now())
}

pub(crate) fn truncate_ms(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).expect("a timestamp in range stays in range")
}

/// One state of a record, as it was after one write.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    /// When the write happened, on the monotonic clock that the index lag is measured with.
    pub written: Instant,
    pub properties: Map<String, Value>,
    pub updated_at: DateTime<Utc>,
    pub archived_at: Option<DateTime<Utc>>,
}

impl Version {
    pub fn archived(&self) -> bool {
        self.archived_at.is_some()
    }
}

/// One record and the versions of it that a lagging reader may still see.
#[derive(Debug)]
pub(crate) struct Record {
    pub id: u64,
    pub created_at: DateTime<Utc>,
    /// Oldest first, never empty; the last one is the truth.
    versions: VecDeque<Version>,
}

impl Record {
    pub fn current(&self) -> &Version {
        self.versions.back().expect("a record has at least one version")
    }

    /// The version a reader lagging `lag` behind sees at `now` (None: the record does not exist yet for it), and
    /// the instant at which that reader's view of this record next changes.
    pub fn visible(&self, lag: Duration, now: Instant) -> (Option<&Version>, Option<Instant>) {
        if lag.is_zero() {
            return (Some(self.current()), None);
        }
        let mut seen = None;
        for version in &self.versions {
            let shown_from = version.written + lag;
            if shown_from <= now {
                seen = Some(version);
            } else {
                return (seen, Some(shown_from));
            }
        }
        (seen, None)
    }

    fn push(&mut self, version: Version, lag: Duration, now: Instant) {
        self.versions.push_back(version);
        // A version can be dropped once the next one is visible to every reader.
        while self.versions.len() > 1 && self.versions[1].written + lag <= now {
            self.versions.pop_front();
        }
    }
}

/// The records of one object type, in id order (ids only grow, so appending keeps the order).
#[derive(Debug, Default)]
pub(crate) struct ObjectStore {
    records: Vec<Record>,
    positions: HashMap<u64, usize>,
    /// Bumped by every write, so cached search results know when they went stale.
    pub generation: u64,
    /// property -> value -> ids of live records holding it; built on first use, then maintained by every write.
    lookups: HashMap<String, HashMap<String, BTreeSet<u64>>>,
    pub searches: SearchCache,
}

impl ObjectStore {
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn get(&self, id: u64) -> Option<&Record> {
        self.positions.get(&id).map(|&pos| &self.records[pos])
    }

    /// The records whose id is at least `from`, in id order.
    pub fn records_from(&self, from: u64) -> &[Record] {
        let start = self.records.partition_point(|r| r.id < from);
        &self.records[start..]
    }

    fn insert(&mut self, record: Record) {
        let version = record.current();
        for (property, index) in &mut self.lookups {
            if let Some(key) = lookup_key(version.properties.get(property)) {
                index.entry(key).or_default().insert(record.id);
            }
        }
        self.positions.insert(record.id, self.records.len());
        self.records.push(record);
        self.generation += 1;
    }

    fn write(&mut self, id: u64, version: Version, lag: Duration, now: Instant) -> bool {
        let Some(&pos) = self.positions.get(&id) else {
            return false;
        };
        let record = &mut self.records[pos];
        let old = record.current();
        for (property, index) in &mut self.lookups {
            let before = live_key(old, property);
            let after = live_key(&version, property);
            if before != after {
                if let Some(key) = before
                    && let Some(ids) = index.get_mut(&key)
                {
                    ids.remove(&id);
                    if ids.is_empty() {
                        index.remove(&key);
                    }
                }
                if let Some(key) = after {
                    index.entry(key).or_default().insert(id);
                }
            }
        }
        record.push(version, lag, now);
        self.generation += 1;
        true
    }

    /// The live (non-archived) record whose `property` equals `value`; the lowest id if several do.
    pub fn find_live(&mut self, property: &str, value: &str) -> Option<u64> {
        if !self.lookups.contains_key(property) {
            let mut index: HashMap<String, BTreeSet<u64>> = HashMap::new();
            for record in &self.records {
                if let Some(key) = live_key(record.current(), property) {
                    index.entry(key).or_default().insert(record.id);
                }
            }
            self.lookups.insert(property.to_string(), index);
        }
        self.lookups[property].get(value).and_then(|ids| ids.first().copied())
    }

    /// A random live record, or None if a few tries found only archived ones.
    pub fn random_live(&self, rng: &mut impl Rng) -> Option<u64> {
        if self.records.is_empty() {
            return None;
        }
        (0..16)
            .map(|_| &self.records[rng.random_range(0..self.records.len())])
            .find(|r| !r.current().archived())
            .map(|r| r.id)
    }
}

fn live_key(version: &Version, property: &str) -> Option<String> {
    if version.archived() {
        None
    } else {
        lookup_key(version.properties.get(property))
    }
}

/// A property value as the string HubSpot compares and returns; None when unset.
pub(crate) fn lookup_key(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Every object type's records, the shared id counter and the upsert bookkeeping.
#[derive(Debug)]
pub(crate) struct Store {
    /// How far search lags behind writes; versions are kept for this long.
    pub lag: Duration,
    next_id: u64,
    objects: HashMap<String, ObjectStore>,
    /// (object, idProperty, value) -> how many records batch/upsert created for it.
    creates: HashMap<(String, String, String), usize>,
}

impl Store {
    pub fn new(lag: Duration) -> Self {
        Self {
            lag,
            next_id: 1,
            objects: HashMap::new(),
            creates: HashMap::new(),
        }
    }

    pub fn object(&self, object: &str) -> Option<&ObjectStore> {
        self.objects.get(object)
    }

    pub fn object_mut(&mut self, object: &str) -> Option<&mut ObjectStore> {
        self.objects.get_mut(object)
    }

    /// Takes the next id from the counter shared by all object types.
    pub fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Adds a record under an id from [`Store::allocate_id`].
    pub fn insert(
        &mut self,
        object: &str,
        id: u64,
        properties: Map<String, Value>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
        now: Instant,
    ) {
        let version = Version {
            written: now,
            properties,
            updated_at,
            archived_at: None,
        };
        let record = Record {
            id,
            created_at,
            versions: VecDeque::from([version]),
        };
        self.objects.entry(object.to_string()).or_default().insert(record);
    }

    pub fn create(&mut self, object: &str, properties: Map<String, Value>, at: DateTime<Utc>, now: Instant) -> u64 {
        let id = self.allocate_id();
        self.insert(object, id, properties, at, at, now);
        id
    }

    /// Merges `properties` into a record and bumps its modified time; false if there is no such record.
    pub fn update(
        &mut self,
        object: &str,
        id: u64,
        properties: Map<String, Value>,
        at: DateTime<Utc>,
        now: Instant,
    ) -> bool {
        let lag = self.lag;
        let Some(store) = self.objects.get_mut(object) else {
            return false;
        };
        let Some(record) = store.get(id) else {
            return false;
        };
        let mut version = record.current().clone();
        version.properties.extend(properties);
        version.written = now;
        version.updated_at = at;
        store.write(id, version, lag, now)
    }

    /// Archives a record (HubSpot's delete); false if there is no such record or it is already archived.
    pub fn archive(&mut self, object: &str, id: u64, at: DateTime<Utc>, now: Instant) -> bool {
        let lag = self.lag;
        let Some(store) = self.objects.get_mut(object) else {
            return false;
        };
        let Some(record) = store.get(id) else {
            return false;
        };
        if record.current().archived() {
            return false;
        }
        let mut version = record.current().clone();
        version.written = now;
        version.updated_at = at;
        version.archived_at = Some(at);
        store.write(id, version, lag, now)
    }

    /// The live record of `object` whose `property` equals `value`.
    pub fn find_live(&mut self, object: &str, property: &str, value: &str) -> Option<u64> {
        self.objects.get_mut(object)?.find_live(property, value)
    }

    pub fn count_create(&mut self, object: &str, id_property: &str, value: &str) {
        *self
            .creates
            .entry((object.to_string(), id_property.to_string(), value.to_string()))
            .or_default() += 1;
    }

    pub fn creates_for(&self, object: &str, id_property: &str, value: &str) -> usize {
        self.creates
            .get(&(object.to_string(), id_property.to_string(), value.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn lagging_reader_sees_previous_version_until_the_lag_passes() {
        let lag = Duration::from_millis(100);
        let mut store = Store::new(lag);
        let t0 = Instant::now();
        let id = store.create("contacts", props(json!({"firstname": "Ann"})), now_ms(), t0);
        let t1 = t0 + Duration::from_millis(150);
        store.update("contacts", id, props(json!({"firstname": "Bea"})), now_ms(), t1);
        let record = store.object("contacts").unwrap().get(id).unwrap();

        let (before_creation, change) = record.visible(lag, t0 + Duration::from_millis(50));
        assert!(before_creation.is_none());
        assert_eq!(change, Some(t0 + lag));

        let (old, change) = record.visible(lag, t1 + Duration::from_millis(50));
        assert_eq!(old.unwrap().properties["firstname"], "Ann");
        assert_eq!(change, Some(t1 + lag));

        let (new, change) = record.visible(lag, t1 + lag);
        assert_eq!(new.unwrap().properties["firstname"], "Bea");
        assert_eq!(change, None);
    }

    #[test]
    fn without_lag_only_the_current_version_is_kept() {
        let mut store = Store::new(Duration::ZERO);
        let now = Instant::now();
        let id = store.create("deals", Map::new(), now_ms(), now);
        for n in 0..5 {
            store.update("deals", id, props(json!({"amount": n})), now_ms(), Instant::now());
        }
        let record = store.object("deals").unwrap().get(id).unwrap();
        assert_eq!(record.versions.len(), 1);
        assert_eq!(record.current().properties["amount"], 4);
    }

    #[test]
    fn lookup_follows_updates_and_archives() {
        let mut store = Store::new(Duration::ZERO);
        let now = Instant::now();
        let id = store.create("contacts", props(json!({"email": "a@x.io"})), now_ms(), now);
        assert_eq!(store.find_live("contacts", "email", "a@x.io"), Some(id));
        store.update("contacts", id, props(json!({"email": "b@x.io"})), now_ms(), now);
        assert_eq!(store.find_live("contacts", "email", "a@x.io"), None);
        assert_eq!(store.find_live("contacts", "email", "b@x.io"), Some(id));
        store.archive("contacts", id, now_ms(), now);
        assert_eq!(store.find_live("contacts", "email", "b@x.io"), None);
        let other = store.create("contacts", props(json!({"email": "b@x.io"})), now_ms(), now);
        assert_eq!(store.find_live("contacts", "email", "b@x.io"), Some(other));
    }

    #[test]
    fn ids_are_shared_across_object_types() {
        let mut store = Store::new(Duration::ZERO);
        let now = Instant::now();
        let a = store.create("contacts", Map::new(), now_ms(), now);
        let b = store.create("companies", Map::new(), now_ms(), now);
        assert_eq!(b, a + 1);
        assert_eq!(store.object("companies").unwrap().records_from(0).len(), 1);
    }
}
