//! The profiles behind the fake Klaviyo: each with a short version history, so the list endpoint can show a
//! write only once it has become visible (Klaviyo's profile reads are eventually consistent, and not in write
//! order), plus the lookups and create counters that `profile-import` needs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{Map, Value};

/// The current wall-clock time at Klaviyo's precision: `updated` and `created` carry whole seconds.
pub(crate) fn now_s() -> DateTime<Utc> {
    truncate_s(Utc::now())
}

pub(crate) fn truncate_s(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).expect("a timestamp in range stays in range")
}

/// The identifiers `profile-import` matches on, in the order it tries them.
pub(crate) const IDENTIFIERS: &[&str] = &["external_id", "email", "phone_number"];

/// One state of a profile, as it was after one write.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    /// From when readers see this version (the write's instant plus its own visibility delay).
    pub visible_from: Instant,
    /// Every attribute but `created` and `updated`.
    pub attributes: Map<String, Value>,
    pub updated: DateTime<Utc>,
    /// A data-privacy deletion: the profile is gone for every reader that sees this version.
    pub deleted: bool,
}

/// One profile and the versions of it that some reader may still see.
#[derive(Debug)]
pub(crate) struct Profile {
    pub id: String,
    pub created: DateTime<Utc>,
    /// In write order, never empty; the last one is the truth.
    versions: VecDeque<Version>,
}

impl Profile {
    pub fn current(&self) -> &Version {
        self.versions.back().expect("a profile has at least one version")
    }

    /// The newest version visible at `now`; None when even the first write is not visible yet.
    pub fn visible(&self, now: Instant) -> Option<&Version> {
        // Delays differ per write, so a later version can become visible before an earlier one: the newest
        // visible one wins, as a replica that has applied it shows.
        self.versions.iter().rev().find(|v| v.visible_from <= now)
    }

    fn push(&mut self, version: Version, now: Instant) {
        self.versions.push_back(version);
        // Keep only the newest version every reader already sees, and the ones after it.
        if let Some(pos) = self.versions.iter().rposition(|v| v.visible_from <= now) {
            self.versions.drain(..pos);
        }
    }
}

/// Every profile of the account.
#[derive(Debug)]
pub(crate) struct Store {
    /// By id; ids are ULIDs, so this is also creation order.
    profiles: BTreeMap<String, Profile>,
    /// The longest a write may take to become visible; each write draws its own delay up to this.
    max_lag: Duration,
    /// (identifier, value) -> how many profiles `profile-import` created with it.
    creates: HashMap<(String, String), usize>,
    /// Deletions, in the order they happened.
    deletions: Vec<(String, DateTime<Utc>)>,
    next_seq: u64,
}

impl Store {
    pub fn new(max_lag: Duration) -> Self {
        Self {
            profiles: BTreeMap::new(),
            max_lag,
            creates: HashMap::new(),
            deletions: Vec::new(),
            next_seq: 0,
        }
    }

    fn visible_from(&self, now: Instant) -> Instant {
        if self.max_lag.is_zero() {
            return now;
        }
        let millis = rand::rng().random_range(0..=self.max_lag.as_millis() as u64);
        now + Duration::from_millis(millis)
    }

    /// A new ULID: 48 bits of milliseconds, then a counter and random bits, in Crockford base32 (26 characters),
    /// so ids sort by creation as Klaviyo's do.
    pub fn allocate_id(&mut self, at: DateTime<Utc>) -> String {
        self.next_seq += 1;
        let ms = at.timestamp_millis().max(0) as u128 & ((1 << 48) - 1);
        let random: u16 = rand::rng().random();
        let value = (ms << 80) | (u128::from(self.next_seq) << 16) | u128::from(random);
        ulid_string(value)
    }

    pub fn get(&self, id: &str) -> Option<&Profile> {
        self.profiles.get(id)
    }

    pub fn profiles(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }

    /// Inserts a new profile created and updated at `at`. A `historic` one (seeded with a time in the past) is
    /// visible at once: read lag is about fresh writes, not about data that was there before anyone looked.
    pub fn insert(
        &mut self,
        id: String,
        attributes: Map<String, Value>,
        at: DateTime<Utc>,
        now: Instant,
        historic: bool,
    ) {
        let version = Version {
            visible_from: if historic { now } else { self.visible_from(now) },
            attributes,
            updated: at,
            deleted: false,
        };
        self.profiles.insert(
            id.clone(),
            Profile {
                id,
                created: at,
                versions: VecDeque::from([version]),
            },
        );
    }

    /// Merges `changes` into a live profile (`properties` merges key by key, as Klaviyo's does) and sets its
    /// `updated` to `at`. False when there is no live profile with that id.
    pub fn update(&mut self, id: &str, changes: &Map<String, Value>, at: DateTime<Utc>, now: Instant) -> bool {
        let visible_from = self.visible_from(now);
        let Some(profile) = self.profiles.get_mut(id) else {
            return false;
        };
        let current = profile.current();
        if current.deleted {
            return false;
        }
        let mut attributes = current.attributes.clone();
        merge_attributes(&mut attributes, changes);
        // `updated` never goes back, even when the wall clock does.
        let updated = at.max(current.updated);
        profile.push(
            Version {
                visible_from,
                attributes,
                updated,
                deleted: false,
            },
            now,
        );
        true
    }

    /// Deletes a live profile for good (Klaviyo's data-privacy deletion). False when there is none.
    pub fn delete(&mut self, id: &str, at: DateTime<Utc>, now: Instant) -> bool {
        let visible_from = self.visible_from(now);
        let Some(profile) = self.profiles.get_mut(id) else {
            return false;
        };
        let current = profile.current().clone();
        if current.deleted {
            return false;
        }
        profile.push(
            Version {
                visible_from,
                deleted: true,
                updated: at.max(current.updated),
                ..current
            },
            now,
        );
        self.deletions.push((id.to_string(), at));
        true
    }

    /// The live profile (current state) whose identifier `name` equals `value`.
    pub fn find_live(&self, name: &str, value: &str) -> Option<&str> {
        self.profiles
            .values()
            .find(|p| {
                let v = p.current();
                !v.deleted && v.attributes.get(name).and_then(Value::as_str) == Some(value)
            })
            .map(|p| p.id.as_str())
    }

    /// A random live profile's id, or None when a few tries found none.
    pub fn random_live(&self, rng: &mut impl Rng) -> Option<String> {
        if self.profiles.is_empty() {
            return None;
        }
        // BTreeMap has no random access; the account is small enough to walk.
        (0..16).find_map(|_| {
            let n = rng.random_range(0..self.profiles.len());
            let profile = self.profiles.values().nth(n)?;
            (!profile.current().deleted).then(|| profile.id.clone())
        })
    }

    pub fn count_create(&mut self, identifier: &str, value: &str) {
        *self
            .creates
            .entry((identifier.to_string(), value.to_string()))
            .or_default() += 1;
    }

    pub fn creates_for(&self, identifier: &str, value: &str) -> usize {
        self.creates
            .get(&(identifier.to_string(), value.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn deletions(&self) -> &[(String, DateTime<Utc>)] {
        &self.deletions
    }
}

/// Merges attribute changes: `properties` and `location` merge member by member, everything else is replaced;
/// a null removes a custom property, as Klaviyo's `unset` would.
pub(crate) fn merge_attributes(attributes: &mut Map<String, Value>, changes: &Map<String, Value>) {
    for (key, value) in changes {
        match (key.as_str(), value, attributes.get_mut(key)) {
            ("properties" | "location", Value::Object(new), Some(Value::Object(old))) => {
                for (k, v) in new {
                    if v.is_null() && key == "properties" {
                        old.remove(k);
                    } else {
                        old.insert(k.clone(), v.clone());
                    }
                }
            }
            _ => {
                attributes.insert(key.clone(), value.clone());
            }
        }
    }
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A 128-bit value as a 26-character Crockford base32 ULID.
fn ulid_string(value: u128) -> String {
    (0..26)
        .rev()
        .map(|i| CROCKFORD[((value >> (i * 5)) & 31) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn ids_are_26_character_ulids_that_sort_by_creation() {
        let mut store = Store::new(Duration::ZERO);
        let t = now_s();
        let a = store.allocate_id(t);
        let b = store.allocate_id(t);
        let c = store.allocate_id(t + chrono::Duration::seconds(1));
        assert_eq!(a.len(), 26);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert!(a.chars().all(|ch| CROCKFORD.contains(&(ch as u8))));
    }

    #[test]
    fn properties_merge_and_other_attributes_replace() {
        let mut attrs = map(json!({"first_name": "A", "properties": {"x": 1, "y": 2}}));
        merge_attributes(
            &mut attrs,
            &map(json!({"first_name": "B", "properties": {"y": null, "z": 3}})),
        );
        assert_eq!(
            Value::Object(attrs),
            json!({"first_name": "B", "properties": {"x": 1, "z": 3}})
        );
    }

    #[test]
    fn readers_see_the_newest_version_that_is_visible_to_them() {
        let now = Instant::now();
        let version = |name: &str, visible_from: Instant| Version {
            visible_from,
            attributes: map(json!({ "first_name": name })),
            updated: now_s(),
            deleted: false,
        };
        let mut profile = Profile {
            id: "A".into(),
            created: now_s(),
            versions: VecDeque::from([version("first", now)]),
        };
        profile.push(version("slow", now + Duration::from_secs(60)), now);
        profile.push(version("quick", now + Duration::from_secs(1)), now);
        let seen = |at: Instant| profile.visible(at).unwrap().attributes["first_name"].clone();
        assert_eq!(seen(now), "first");
        // The last write overtook the slow one: a reader sees it first, and never the slow one after it.
        assert_eq!(seen(now + Duration::from_secs(2)), "quick");
        assert_eq!(seen(now + Duration::from_secs(61)), "quick");
        assert_eq!(profile.current().attributes["first_name"], "quick");
    }
}
