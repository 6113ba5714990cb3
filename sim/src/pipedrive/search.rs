//! `GET /api/v2/{entity}/search`: Pipedrive's search over an index that lags writes by `index_lag`, so a record
//! created a moment ago is not found yet (and a changed one is found by its old values).

use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::fake::title_field;
use super::list::MAX_LIMIT;
use super::store::{Record, Store, Version, value_text};
use super::wire::{ApiError, ok};
use crate::server::SimRequest;
use crate::server::SimResponse;

/// The fields a search of `entity` may look in.
fn searchable(entity: &str) -> &'static [&'static str] {
    match entity {
        "persons" => &["custom_fields", "email", "notes", "phone", "name"],
        "organizations" => &["address", "custom_fields", "notes", "name"],
        "deals" => &["custom_fields", "notes", "title"],
        _ => &[],
    }
}

/// A parsed search request.
#[derive(Debug, Clone)]
pub(crate) struct SearchQuery {
    term: String,
    fields: Vec<String>,
    exact: bool,
    limit: usize,
    offset: usize,
}

impl SearchQuery {
    pub fn parse(entity: &str, request: &SimRequest) -> Result<Self, ApiError> {
        let term = request
            .query_param("term")
            .ok_or_else(|| ApiError::bad_request("term is required"))?;
        let exact = request
            .query_param("exact_match")
            .is_some_and(|v| v == "true" || v == "1");
        let shortest = if exact { 1 } else { 2 };
        if term.trim().chars().count() < shortest {
            return Err(ApiError::bad_request(format!(
                "term must be at least {shortest} characters long"
            )));
        }
        let allowed = searchable(entity);
        let fields = match request.query_param("fields") {
            None => allowed.iter().map(|s| s.to_string()).collect(),
            Some(list) => {
                let fields: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = fields.iter().find(|f| !allowed.contains(&f.as_str())) {
                    return Err(ApiError::bad_request(format!("fields: {bad} is not searchable here")));
                }
                fields
            }
        };
        let limit = match request.query_param("limit") {
            None => 100,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "limit must be an integer from 1 to {MAX_LIMIT}"
                    )));
                }
            },
        };
        let offset = match request.query_param("cursor") {
            None => 0,
            Some(text) => decode_offset(&text).ok_or_else(|| ApiError::bad_request("Invalid cursor"))?,
        };
        Ok(Self {
            term: term.trim().to_lowercase(),
            fields,
            exact,
            limit,
            offset,
        })
    }

    fn matches(&self, text: &str) -> bool {
        let text = text.to_lowercase();
        if self.exact {
            text == self.term
        } else {
            text.contains(&self.term)
        }
    }
}

fn decode_offset(text: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()?
        .get("offset")?
        .as_u64()
        .map(|n| n as usize)
}

fn encode_offset(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(json!({"offset": offset}).to_string())
}

/// The texts of `field` in one version, as the index holds them.
fn texts(version: &Version, entity: &str, field: &str) -> Vec<String> {
    let list = |key: &str| -> Vec<String> {
        version
            .fields
            .get(key)
            .and_then(Value::as_array)
            .map_or_else(Vec::new, |items| {
                items
                    .iter()
                    .filter_map(|item| item.get("value").and_then(value_text).or_else(|| value_text(item)))
                    .collect()
            })
    };
    match field {
        "custom_fields" => version.custom_fields.values().filter_map(value_text).collect(),
        "email" => list("emails"),
        "phone" => list("phones"),
        "name" | "title" | "address" => version
            .fields
            .get(if field == "name" || field == "title" {
                title_field(entity)
            } else {
                field
            })
            .and_then(value_text)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

fn item_json(entity: &str, record: &Record, version: &Version) -> Value {
    let field = |key: &str| version.fields.get(key).cloned().unwrap_or(Value::Null);
    let custom: Vec<String> = version.custom_fields.values().filter_map(value_text).collect();
    let owner = json!({"id": field("owner_id")});
    match entity {
        "persons" => json!({
            "id": record.id, "type": "person", "name": field("name"),
            "phones": texts(version, entity, "phone"), "emails": texts(version, entity, "email"),
            "visible_to": field("visible_to"), "owner": owner,
            "organization": field("org_id").as_u64().map(|id| json!({"id": id})),
            "custom_fields": custom, "notes": [],
        }),
        "organizations" => json!({
            "id": record.id, "type": "organization", "name": field("name"), "address": field("address"),
            "visible_to": field("visible_to"), "owner": owner, "custom_fields": custom, "notes": [],
        }),
        _ => json!({
            "id": record.id, "type": "deal", "title": field("title"), "value": field("value"),
            "currency": field("currency"), "status": field("status"), "visible_to": field("visible_to"),
            "owner": owner, "stage": {"id": field("stage_id")}, "person": null, "organization": null,
            "custom_fields": custom, "notes": [],
        }),
    }
}

/// Answers one search from the index as it stands at `now` (`index_lag` behind the API).
pub(crate) fn run(store: &Store, entity: &str, query: &SearchQuery, now: Instant) -> SimResponse {
    let today = store.clock.now();
    let mut hits: Vec<(bool, &Record, &Version)> = store
        .entity(entity)
        .map(|e| {
            e.records
                .values()
                .filter_map(|record| {
                    let version = record.seen(store.index_lag, now)?;
                    if version.deleted() || version.purged(today) {
                        return None;
                    }
                    let texts: Vec<String> = query.fields.iter().flat_map(|f| texts(version, entity, f)).collect();
                    let exact = texts.iter().any(|t| t.to_lowercase() == query.term);
                    texts
                        .iter()
                        .any(|t| query.matches(t))
                        .then_some((exact, record, version))
                })
                .collect()
        })
        .unwrap_or_default();
    // Exact hits first, then by id: a stable order for the offset cursor.
    hits.sort_by_key(|(exact, record, _)| (!*exact, record.id));
    let page = hits.iter().skip(query.offset);
    let items: Vec<Value> = page
        .clone()
        .take(query.limit)
        .map(|(exact, record, version)| {
            json!({"result_score": if *exact { 1.0 } else { 0.5 }, "item": item_json(entity, record, version)})
        })
        .collect();
    let more = hits.len() > query.offset + query.limit;
    let next_cursor = more.then(|| encode_offset(query.offset + query.limit));
    ok(json!({"items": items}), Some(json!({"next_cursor": next_cursor})))
}
