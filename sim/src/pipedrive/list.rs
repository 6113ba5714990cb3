//! `GET /api/v2/{entity}`: the list endpoint with `updated_since` (inclusive), `updated_until` (exclusive),
//! `sort_by` (`id`, `update_time`, `add_time`), `sort_direction`, `ids`, `custom_fields`, `limit` (at most 500)
//! and cursor paging.
//!
//! The cursor is a marker for the first item of the next page: the sort key and id it had when the page was cut.
//! Paging by it never repeats or skips a record that did not change; a record that changes between pages moves
//! to its new place (after the cursor when sorted by `update_time`, so it is read again, or, with an
//! `updated_until` in the past, it leaves the result). Soft-deleted records are not listed.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::store::{Record, Store, Version};
use super::wire::{ApiError, ok, parse_time, record_json};
use crate::server::{SimRequest, SimResponse};

/// Pipedrive's largest page.
pub const MAX_LIMIT: usize = 500;
/// What a list returns without `limit`.
const DEFAULT_LIMIT: usize = 100;
/// Most ids one `ids` filter may name.
pub const MAX_IDS: usize = 100;
/// Most custom field keys one `custom_fields` parameter may name.
pub const MAX_CUSTOM_FIELDS: usize = 15;

/// What a list is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SortBy {
    Id,
    UpdateTime,
    AddTime,
}

impl SortBy {
    fn key(self, record: &Record, version: &Version) -> i64 {
        match self {
            SortBy::Id => record.id as i64,
            SortBy::UpdateTime => version.update_time.timestamp(),
            SortBy::AddTime => record.add_time.timestamp(),
        }
    }
}

/// The marker a cursor encodes: where the next page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    sort: SortBy,
    key: i64,
    id: u64,
}

impl Marker {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("markers serialise"))
    }

    fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// A parsed list request.
#[derive(Debug, Clone)]
pub(crate) struct ListQuery {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    sort_by: SortBy,
    descending: bool,
    limit: usize,
    cursor: Option<Marker>,
    ids: Option<Vec<u64>>,
    custom_fields: Option<Vec<String>>,
}

impl ListQuery {
    pub fn parse(request: &SimRequest) -> Result<Self, ApiError> {
        let time = |name: &str| -> Result<Option<DateTime<Utc>>, ApiError> {
            match request.query_param(name) {
                None => Ok(None),
                Some(text) => parse_time(&text)
                    .map(Some)
                    .ok_or_else(|| ApiError::bad_request(format!("{name} must be an RFC3339 date-time"))),
            }
        };
        let sort_by = match request.query_param("sort_by").as_deref() {
            None | Some("id") => SortBy::Id,
            Some("update_time") => SortBy::UpdateTime,
            Some("add_time") => SortBy::AddTime,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "sort_by must be one of id, update_time, add_time, got {other}"
                )));
            }
        };
        let descending = match request.query_param("sort_direction").as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "sort_direction must be asc or desc, got {other}"
                )));
            }
        };
        let limit = match request.query_param("limit") {
            None => DEFAULT_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "limit must be an integer from 1 to {MAX_LIMIT}"
                    )));
                }
            },
        };
        let cursor = match request.query_param("cursor") {
            None => None,
            Some(text) => match Marker::decode(&text) {
                Some(marker) if marker.sort == sort_by => Some(marker),
                _ => return Err(ApiError::bad_request("Invalid cursor")),
            },
        };
        let ids = match request.query_param("ids") {
            None => None,
            Some(text) => {
                let ids = text
                    .split(',')
                    .map(|s| s.trim().parse::<u64>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| ApiError::bad_request("ids must be a comma separated list of integers"))?;
                if ids.len() > MAX_IDS {
                    return Err(ApiError::bad_request(format!("ids may name at most {MAX_IDS} items")));
                }
                Some(ids)
            }
        };
        let custom_fields = match request.query_param("custom_fields") {
            None => None,
            Some(text) => {
                let keys: Vec<String> = text
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if keys.len() > MAX_CUSTOM_FIELDS {
                    return Err(ApiError::bad_request(format!(
                        "custom_fields may name at most {MAX_CUSTOM_FIELDS} keys"
                    )));
                }
                Some(keys)
            }
        };
        Ok(Self {
            since: time("updated_since")?,
            until: time("updated_until")?,
            sort_by,
            descending,
            limit,
            cursor,
            ids,
            custom_fields,
        })
    }
}

/// Answers one list request as API readers see the data at `now`.
pub(crate) fn run(store: &Store, entity: &str, query: &ListQuery, now: Instant) -> SimResponse {
    let today = store.clock.now();
    let mut rows: Vec<(i64, u64, &Record, &Version)> = store
        .entity(entity)
        .map(|e| {
            e.records
                .values()
                .filter_map(|record| {
                    let version = record.seen(Duration::ZERO, now)?;
                    let listed = !version.deleted()
                        && !version.purged(today)
                        && query.ids.as_ref().is_none_or(|ids| ids.contains(&record.id))
                        && query.since.is_none_or(|since| version.update_time >= since)
                        && query.until.is_none_or(|until| version.update_time < until);
                    listed.then(|| (query.sort_by.key(record, version), record.id, record, version))
                })
                .collect()
        })
        .unwrap_or_default();
    rows.sort_by_key(|(key, id, ..)| (*key, *id));
    if query.descending {
        rows.reverse();
    }
    let start = match query.cursor {
        None => 0,
        Some(marker) => rows.partition_point(|(key, id, ..)| {
            if query.descending {
                (*key, *id) > (marker.key, marker.id)
            } else {
                (*key, *id) < (marker.key, marker.id)
            }
        }),
    };
    let page = &rows[start.min(rows.len())..];
    let data: Vec<Value> = page
        .iter()
        .take(query.limit)
        .map(|(_, _, record, version)| record_json(record, version, query.custom_fields.as_deref()))
        .collect();
    let next_cursor = page.get(query.limit).map(|(key, id, ..)| {
        Marker {
            sort: query.sort_by,
            key: *key,
            id: *id,
        }
        .encode()
    });
    ok(Value::Array(data), Some(json!({"next_cursor": next_cursor})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_refuse_garbage() {
        let marker = Marker {
            sort: SortBy::UpdateTime,
            key: 1_700_000_000,
            id: 42,
        };
        assert_eq!(Marker::decode(&marker.encode()), Some(marker));
        assert_eq!(Marker::decode("not a cursor"), None);
    }
}
