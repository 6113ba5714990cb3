//! HubSpot's CRM search: `filterGroups` (an OR of ANDs), at most one sort, offset paging capped at 10,000 results,
//! evaluated over the index as it was `index_lag` ago.
//!
//! Each distinct query (filters and sort) is evaluated once into an ordered list of ids, cached until a write to
//! the object type or the index lag makes it stale, so paging through 200,000 records costs one scan and one sort
//! rather than one per page.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate};
use serde::Deserialize;
use serde_json::{Value, json};

use super::modified_property;
use super::store::{ObjectStore, Record, Store, Version};
use super::wire::{ApiError, Selection, record_json};

/// HubSpot's page size limit for search.
pub const MAX_LIMIT: usize = 200;
const DEFAULT_LIMIT: usize = 10;
const MAX_GROUPS: usize = 5;
const MAX_FILTERS_PER_GROUP: usize = 6;
const MAX_FILTERS: usize = 18;
const CACHED_QUERIES: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchBody {
    filter_groups: Option<Vec<GroupBody>>,
    sorts: Option<Vec<SortBody>>,
    properties: Option<Vec<String>>,
    limit: Option<Value>,
    after: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct GroupBody {
    #[serde(default)]
    filters: Vec<FilterBody>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterBody {
    property_name: String,
    operator: String,
    value: Option<Value>,
    high_value: Option<Value>,
    values: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SortBody {
    property_name: String,
    direction: Option<String>,
}

/// What a filter or sort reads from a record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// The object type's modified property (`lastmodifieddate` / `hs_lastmodifieddate`), in epoch ms.
    Modified,
    /// `createdate`, in epoch ms.
    Created,
    /// `hs_object_id`, compared as a number.
    ObjectId,
    /// Any other property, compared as a string.
    Property(String),
}

impl Target {
    fn of(object: &str, name: &str) -> Self {
        if name == modified_property(object) {
            Self::Modified
        } else if name == "createdate" {
            Self::Created
        } else if name == "hs_object_id" {
            Self::ObjectId
        } else {
            Self::Property(name.to_string())
        }
    }

    fn read<'a>(&self, record: &Record, version: &'a Version) -> Field<'a> {
        match self {
            Self::Modified => Field::Number(version.updated_at.timestamp_millis()),
            Self::Created => Field::Number(record.created_at.timestamp_millis()),
            Self::ObjectId => Field::Number(record.id as i64),
            Self::Property(name) => Field::Text(match version.properties.get(name) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(Cow::Borrowed(s.as_str())),
                Some(other) => Some(Cow::Owned(other.to_string())),
            }),
        }
    }
}

/// A record's value for a [`Target`].
#[derive(Debug)]
enum Field<'a> {
    Number(i64),
    Text(Option<Cow<'a, str>>),
}

impl Field<'_> {
    fn is_set(&self) -> bool {
        !matches!(self, Field::Text(None))
    }

    /// None when the record has no value (so only NEQ, NOT_IN and NOT_HAS_PROPERTY match it).
    fn compare(&self, operand: &Operand) -> Option<Ordering> {
        match (self, operand) {
            (Field::Number(a), Operand::Number(b)) => Some(a.cmp(b)),
            (Field::Text(Some(a)), Operand::Text(b)) => Some(a.as_ref().cmp(b.as_str())),
            _ => None,
        }
    }
}

/// A filter's value, parsed for its target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Operand {
    Number(i64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq(Operand),
    Neq(Operand),
    Gt(Operand),
    Gte(Operand),
    Lt(Operand),
    Lte(Operand),
    Between(Operand, Operand),
    In(Vec<Operand>),
    NotIn(Vec<Operand>),
    HasProperty,
    NotHasProperty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Filter {
    target: Target,
    op: Op,
}

impl Filter {
    fn parse(object: &str, body: &FilterBody) -> Result<Self, ApiError> {
        let target = Target::of(object, &body.property_name);
        let name = body.property_name.as_str();
        let one = |value: &Option<Value>| -> Result<Operand, ApiError> {
            match value {
                Some(value) => operand(&target, name, value),
                None => Err(ApiError::validation(format!(
                    "Filter on {name} with operator {} needs a value",
                    body.operator
                ))),
            }
        };
        let many = || -> Result<Vec<Operand>, ApiError> {
            match &body.values {
                Some(values) => values.iter().map(|v| operand(&target, name, v)).collect(),
                None => Err(ApiError::validation(format!(
                    "Filter on {name} with operator {} needs values",
                    body.operator
                ))),
            }
        };
        let op = match body.operator.as_str() {
            "EQ" => Op::Eq(one(&body.value)?),
            "NEQ" => Op::Neq(one(&body.value)?),
            "GT" => Op::Gt(one(&body.value)?),
            "GTE" => Op::Gte(one(&body.value)?),
            "LT" => Op::Lt(one(&body.value)?),
            "LTE" => Op::Lte(one(&body.value)?),
            "BETWEEN" => Op::Between(one(&body.value)?, one(&body.high_value)?),
            "IN" => Op::In(many()?),
            "NOT_IN" => Op::NotIn(many()?),
            "HAS_PROPERTY" => Op::HasProperty,
            "NOT_HAS_PROPERTY" => Op::NotHasProperty,
            other => {
                return Err(ApiError::validation(format!(
                    "Invalid input JSON: operator {other:?} is not one of EQ, NEQ, LT, LTE, GT, GTE, BETWEEN, IN, \
                     NOT_IN, HAS_PROPERTY, NOT_HAS_PROPERTY"
                )));
            }
        };
        Ok(Self { target, op })
    }

    fn matches(&self, record: &Record, version: &Version) -> bool {
        let field = self.target.read(record, version);
        let is = |operand: &Operand, wanted: &[Ordering]| field.compare(operand).is_some_and(|o| wanted.contains(&o));
        use Ordering::{Equal, Greater, Less};
        match &self.op {
            Op::Eq(v) => is(v, &[Equal]),
            Op::Neq(v) => !is(v, &[Equal]),
            Op::Gt(v) => is(v, &[Greater]),
            Op::Gte(v) => is(v, &[Greater, Equal]),
            Op::Lt(v) => is(v, &[Less]),
            Op::Lte(v) => is(v, &[Less, Equal]),
            Op::Between(low, high) => is(low, &[Greater, Equal]) && is(high, &[Less, Equal]),
            Op::In(values) => values.iter().any(|v| is(v, &[Equal])),
            Op::NotIn(values) => !values.iter().any(|v| is(v, &[Equal])),
            Op::HasProperty => field.is_set(),
            Op::NotHasProperty => !field.is_set(),
        }
    }
}

fn operand(target: &Target, name: &str, value: &Value) -> Result<Operand, ApiError> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => {
            return Err(ApiError::validation(format!(
                "Invalid filter value for {name}: {value}"
            )));
        }
    };
    match target {
        Target::Modified | Target::Created => parse_time_ms(&text).map(Operand::Number).ok_or_else(|| {
            ApiError::validation(format!(
                "{text:?} is not a valid date for {name}: use epoch milliseconds or an ISO-8601 date"
            ))
        }),
        Target::ObjectId => {
            text.trim().parse::<i64>().map(Operand::Number).map_err(|_| {
                ApiError::validation(format!("{text:?} is not a valid value for {name}: expected a number"))
            })
        }
        Target::Property(_) => Ok(Operand::Text(text)),
    }
}

/// Epoch milliseconds, or an ISO-8601 date-time or date (midnight UTC), as HubSpot accepts for date properties.
pub(crate) fn parse_time_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.timestamp_millis());
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sort {
    target: Target,
    descending: bool,
}

/// One parsed search request.
#[derive(Debug)]
pub(crate) struct SearchQuery {
    /// OR of groups, each an AND of filters; empty matches everything.
    groups: Vec<Vec<Filter>>,
    sort: Option<Sort>,
    pub properties: Vec<String>,
    pub limit: usize,
    pub after: usize,
}

impl SearchQuery {
    pub fn parse(object: &str, body: &[u8]) -> Result<Self, ApiError> {
        let body: SearchBody = serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(&e))?;
        let groups = body.filter_groups.unwrap_or_default();
        if groups.len() > MAX_GROUPS {
            return Err(ApiError::validation(format!(
                "Too many filter groups ({}); the limit is {MAX_GROUPS}",
                groups.len()
            )));
        }
        let mut total_filters = 0;
        let mut parsed = Vec::with_capacity(groups.len());
        for group in &groups {
            if group.filters.len() > MAX_FILTERS_PER_GROUP {
                return Err(ApiError::validation(format!(
                    "Too many filters in a group ({}); the limit is {MAX_FILTERS_PER_GROUP}",
                    group.filters.len()
                )));
            }
            total_filters += group.filters.len();
            let filters = group
                .filters
                .iter()
                .map(|f| Filter::parse(object, f))
                .collect::<Result<Vec<_>, _>>()?;
            parsed.push(filters);
        }
        if total_filters > MAX_FILTERS {
            return Err(ApiError::validation(format!(
                "Too many filters ({total_filters}); the limit is {MAX_FILTERS}"
            )));
        }
        let sorts = body.sorts.unwrap_or_default();
        if sorts.len() > 1 {
            return Err(ApiError::validation("Only one sort is supported"));
        }
        let sort = match sorts.first() {
            None => None,
            Some(sort) => Some(Sort {
                target: Target::of(object, &sort.property_name),
                descending: match sort.direction.as_deref() {
                    None | Some("ASCENDING") => false,
                    Some("DESCENDING") => true,
                    Some(other) => {
                        return Err(ApiError::validation(format!(
                            "Invalid sort direction {other:?}: expected ASCENDING or DESCENDING"
                        )));
                    }
                },
            }),
        };
        let limit = match &body.limit {
            None | Some(Value::Null) => DEFAULT_LIMIT,
            Some(value) => number(value).ok_or_else(|| ApiError::validation(format!("Invalid limit {value}")))?,
        };
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::validation(format!(
                "limit must be between 1 and {MAX_LIMIT}, got {limit}"
            )));
        }
        let after = match &body.after {
            None | Some(Value::Null) => 0,
            Some(value) => number(value).ok_or_else(|| ApiError::validation(format!("Invalid after {value}")))?,
        };
        Ok(Self {
            groups: parsed,
            sort,
            properties: body.properties.unwrap_or_default(),
            limit,
            after,
        })
    }

    fn matches(&self, record: &Record, version: &Version) -> bool {
        self.groups.is_empty()
            || self
                .groups
                .iter()
                .any(|group| group.iter().all(|f| f.matches(record, version)))
    }

    /// Identifies the result set, whatever the page.
    fn cache_key(&self) -> String {
        format!("{:?}|{:?}", self.groups, self.sort)
    }
}

/// A non-negative integer given as a JSON number or a decimal string (HubSpot's `after` is a string).
fn number(value: &Value) -> Option<usize> {
    match value {
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Result sets of recent queries, per object type.
#[derive(Debug, Default)]
pub(crate) struct SearchCache {
    entries: HashMap<String, Cached>,
}

#[derive(Debug)]
struct Cached {
    generation: u64,
    /// When the lagging index's view changes without any new write.
    valid_until: Option<Instant>,
    ids: Arc<Vec<u64>>,
}

/// Answers one search: `{"total", "results", "paging"}`.
pub(crate) fn run(
    store: &mut Store,
    object: &str,
    query: &SearchQuery,
    cap: usize,
    now: Instant,
) -> Result<Value, ApiError> {
    if query.after + query.limit > cap {
        return Err(ApiError::validation(format!(
            "Search results are limited to the first {cap} results of a query: after {} plus limit {} goes past \
             it. Narrow the query (e.g. re-anchor on the last value seen) instead of paging further.",
            query.after, query.limit
        )));
    }
    let lag = store.lag;
    let Some(objects) = store.object_mut(object) else {
        return Ok(json!({"total": 0, "results": []}));
    };
    let ids = matching_ids(objects, query, lag, now);
    let total = ids.len();
    let page = &ids[query.after.min(total)..(query.after + query.limit).min(total)];
    let selection = Selection::named_or_defaults(&query.properties);
    let results: Vec<Value> = page
        .iter()
        .filter_map(|&id| {
            let record = objects.get(id)?;
            let version = record.visible(lag, now).0?;
            Some(record_json(object, record, version, selection))
        })
        .collect();
    let mut answer = json!({"total": total, "results": results});
    let next = query.after + page.len();
    if next < total {
        answer["paging"] = json!({"next": {"after": next.to_string()}});
    }
    Ok(answer)
}

/// The ids matching `query`, in result order, from the cache when it is still valid.
fn matching_ids(objects: &mut ObjectStore, query: &SearchQuery, lag: Duration, now: Instant) -> Arc<Vec<u64>> {
    let key = query.cache_key();
    if let Some(cached) = objects.searches.entries.get(&key)
        && cached.generation == objects.generation
        && cached.valid_until.is_none_or(|until| now < until)
    {
        return cached.ids.clone();
    }
    let (ids, valid_until) = evaluate(objects, query, lag, now);
    let ids = Arc::new(ids);
    let cache = &mut objects.searches.entries;
    if cache.len() >= CACHED_QUERIES {
        cache.clear();
    }
    cache.insert(
        key,
        Cached {
            generation: objects.generation,
            valid_until,
            ids: ids.clone(),
        },
    );
    ids
}

/// Scans every record once and sorts the matches. Ties are broken by id ascending: real HubSpot does not promise
/// any order among equal sort values, but a stable one makes the simulator's answers reproducible.
fn evaluate(objects: &ObjectStore, query: &SearchQuery, lag: Duration, now: Instant) -> (Vec<u64>, Option<Instant>) {
    let mut valid_until: Option<Instant> = None;
    let mut matches: Vec<(&Record, &Version)> = Vec::new();
    for record in objects.records() {
        let (version, change) = record.visible(lag, now);
        if let Some(change) = change {
            valid_until = Some(valid_until.map_or(change, |until| until.min(change)));
        }
        if let Some(version) = version
            && !version.archived()
            && query.matches(record, version)
        {
            matches.push((record, version));
        }
    }
    // Records are kept in id order, so without a sort the matches already are in result order.
    let ids = match &query.sort {
        None => matches.iter().map(|(r, _)| r.id).collect(),
        Some(Sort {
            target: target @ Target::Property(_),
            descending,
        }) => {
            let mut keyed: Vec<(Option<Cow<'_, str>>, u64)> = matches
                .iter()
                .map(|(r, v)| match target.read(r, v) {
                    Field::Text(text) => (text, r.id),
                    Field::Number(n) => (Some(Cow::Owned(n.to_string())), r.id),
                })
                .collect();
            // Records without the property come last in either direction.
            keyed.sort_unstable_by(|(a, a_id), (b, b_id)| {
                let by_value = match (a, b) {
                    (Some(a), Some(b)) if *descending => b.cmp(a),
                    (Some(a), Some(b)) => a.cmp(b),
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Greater,
                    (Some(_), None) => Ordering::Less,
                };
                by_value.then(a_id.cmp(b_id))
            });
            keyed.into_iter().map(|(_, id)| id).collect()
        }
        Some(Sort { target, descending }) => {
            let mut keyed: Vec<(i64, u64)> = matches
                .iter()
                .map(|(r, v)| match target.read(r, v) {
                    Field::Number(n) => (n, r.id),
                    Field::Text(_) => unreachable!("only Property targets read as text"),
                })
                .collect();
            if *descending {
                keyed.sort_unstable_by(|(a, a_id), (b, b_id)| b.cmp(a).then(a_id.cmp(b_id)));
            } else {
                keyed.sort_unstable();
            }
            keyed.into_iter().map(|(_, id)| id).collect()
        }
    };
    (ids, valid_until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hubspot::store::now_ms;
    use serde_json::Map;

    fn parse(body: Value) -> Result<SearchQuery, ApiError> {
        SearchQuery::parse("contacts", body.to_string().as_bytes())
    }

    fn store_with(names: &[&str]) -> (Store, Vec<u64>) {
        let mut store = Store::new(Duration::ZERO);
        let now = Instant::now();
        let ids = names
            .iter()
            .map(|name| {
                let mut props = Map::new();
                props.insert("firstname".into(), json!(name));
                store.create("contacts", props, now_ms(), now)
            })
            .collect();
        (store, ids)
    }

    fn ids_of(answer: &Value) -> Vec<u64> {
        answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn times_parse_from_epoch_ms_and_iso_8601() {
        assert_eq!(parse_time_ms("1704067200000"), Some(1_704_067_200_000));
        assert_eq!(parse_time_ms("2024-01-01T00:00:00.000Z"), Some(1_704_067_200_000));
        assert_eq!(parse_time_ms("2024-01-01T01:00:00+01:00"), Some(1_704_067_200_000));
        assert_eq!(parse_time_ms("2024-01-01"), Some(1_704_067_200_000));
        assert_eq!(parse_time_ms("yesterday"), None);
    }

    #[test]
    fn limit_above_200_is_rejected() {
        let error = parse(json!({"limit": 201})).unwrap_err();
        assert_eq!(error.category, "VALIDATION_ERROR");
        assert_eq!(parse(json!({"limit": 200})).unwrap().limit, 200);
        assert_eq!(parse(json!({})).unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn more_than_one_sort_is_rejected() {
        let sorts = json!([{"propertyName": "createdate"}, {"propertyName": "email"}]);
        assert!(parse(json!({ "sorts": sorts })).is_err());
    }

    #[test]
    fn unknown_operator_and_bad_date_are_rejected() {
        let bad_op =
            json!({"filterGroups": [{"filters": [{"propertyName": "email", "operator": "LIKE", "value": "x"}]}]});
        assert!(parse(bad_op).is_err());
        let bad_date = json!({"filterGroups": [{"filters": [
            {"propertyName": "lastmodifieddate", "operator": "GTE", "value": "soon"}]}]});
        assert!(parse(bad_date).is_err());
    }

    #[test]
    fn after_is_an_opaque_decimal_string() {
        assert_eq!(parse(json!({"after": "400"})).unwrap().after, 400);
        assert!(parse(json!({"after": "abc"})).is_err());
    }

    #[test]
    fn object_id_compares_numerically_not_as_text() {
        let (mut store, ids) = store_with(&["a"; 12]);
        let query = parse(json!({"filterGroups": [{"filters": [
            {"propertyName": "hs_object_id", "operator": "GT", "value": "9"}]}], "limit": 100}))
        .unwrap();
        let answer = run(&mut store, "contacts", &query, 10_000, Instant::now()).unwrap();
        assert_eq!(ids_of(&answer), ids[9..].to_vec(), "10, 11 and 12 are greater than 9");
    }

    #[test]
    fn in_not_in_and_has_property_filter_by_value() {
        let (mut store, ids) = store_with(&["ann", "bea", "cid"]);
        let now = Instant::now();
        store.create("contacts", Map::new(), now_ms(), now);
        let search = |store: &mut Store, filter: Value| {
            let query = parse(json!({"filterGroups": [{"filters": [filter]}]})).unwrap();
            ids_of(&run(store, "contacts", &query, 10_000, Instant::now()).unwrap())
        };
        let in_filter = json!({"propertyName": "firstname", "operator": "IN", "values": ["ann", "cid"]});
        assert_eq!(search(&mut store, in_filter), vec![ids[0], ids[2]]);
        let has = json!({"propertyName": "firstname", "operator": "HAS_PROPERTY"});
        assert_eq!(search(&mut store, has), ids);
        let between = json!({"propertyName": "firstname", "operator": "BETWEEN", "value": "b", "highValue": "c"});
        assert_eq!(search(&mut store, between), vec![ids[1]]);
    }

    #[test]
    fn descending_sort_by_property_puts_unset_values_last_and_breaks_ties_by_id() {
        let (mut store, ids) = store_with(&["b", "a", "b"]);
        let blank = store.create("contacts", Map::new(), now_ms(), Instant::now());
        let query = parse(json!({"sorts": [{"propertyName": "firstname", "direction": "DESCENDING"}]})).unwrap();
        let answer = run(&mut store, "contacts", &query, 10_000, Instant::now()).unwrap();
        assert_eq!(ids_of(&answer), vec![ids[0], ids[2], ids[1], blank]);
    }

    #[test]
    fn cached_results_follow_writes() {
        let (mut store, ids) = store_with(&["a", "b"]);
        let query = parse(json!({"filterGroups": [{"filters": [
            {"propertyName": "firstname", "operator": "EQ", "value": "a"}]}]}))
        .unwrap();
        let first = run(&mut store, "contacts", &query, 10_000, Instant::now()).unwrap();
        assert_eq!(ids_of(&first), vec![ids[0]]);
        let mut props = Map::new();
        props.insert("firstname".into(), json!("a"));
        store.update("contacts", ids[1], props, now_ms(), Instant::now());
        let second = run(&mut store, "contacts", &query, 10_000, Instant::now()).unwrap();
        assert_eq!(ids_of(&second), ids);
    }
}
