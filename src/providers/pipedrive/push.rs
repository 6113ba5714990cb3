//! Push: Pipedrive has no upsert and no idempotency key, so every write carries its idempotency key in a custom
//! field (`push_key_field`) and looks for the record holding it before it creates one.
//!
//! Pipedrive's search is backed by an index that lags writes by seconds, so a record that an earlier attempt
//! created (and whose answer was lost to a timeout, a reset or a cut body) may not be searchable yet. The list
//! endpoint does not lag: the push reads the records *added* since the write was queued, newest first, and stops
//! at the first one added before. No attempt can have created a record before the write was queued, so this scan
//! is complete whatever the write's age, and for a fresh write it is one request. A write queued long ago (say,
//! retried through an outage) asks the search index first, which has long caught up with anything created more
//! than seconds ago, to spare a scan over every record added since; if the search finds nothing, the scan still
//! decides. Only when neither finds the key does the push create.
//!
//! A record found by the key, or else by the write's `match` (an email, a name, a custom field), is updated.

use chrono::Utc;
use serde_json::{Map, Value, json};

use super::config::OBJECTS;
use super::paging::{format_time, parse_time};
use super::wire::{self, OneAnswer, custom_field, id_of};
use super::{MAX_IDS, MAX_PAGE_SIZE, Pipedrive};
use crate::providers::{ProviderError, PushRequest};

/// How far this host's clock may be ahead of Pipedrive's: the scan for an earlier attempt's record starts this
/// long before the write was queued.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// Writes queued longer ago than this search for their key before scanning: many records may have been added
/// since. Younger ones only scan, which spares the search budget (10 requests per 2 s) for them.
const SEARCH_AFTER: chrono::Duration = chrono::Duration::minutes(5);

/// Applies one write; returns the id of the record written.
pub(super) async fn push(pipedrive: &Pipedrive, write: &PushRequest) -> Result<String, ProviderError> {
    let Some(key_field) = pipedrive.config.push_key_field.as_deref() else {
        return Err(ProviderError::Permanent(
            "Pipedrive writes need push_key_field: the key of a text custom field that holds each write's \
             idempotency key, so a retry cannot create twice"
                .into(),
        ));
    };
    let object = write.object.as_str();
    if !OBJECTS.contains(&object) {
        return Err(ProviderError::Permanent(format!(
            "{object:?} is not a Pipedrive entity this daemon writes; expected one of {OBJECTS:?}"
        )));
    }
    let body = body_with_key(&write.properties, key_field, &write.idempotency_key)?;
    let mut target = find_by_key(pipedrive, write, key_field).await?;
    if target.is_none()
        && let (Some(field), Some(value)) = (&write.match_key, &write.match_value)
    {
        target = find_by_match(pipedrive, object, field, value).await?;
    }
    match target {
        Some(id) => {
            let request = pipedrive
                .request(http::Method::PATCH, &format!("{object}/{id}"))
                .json(&body);
            pipedrive.client.send("update", request).await?;
            Ok(id.to_string())
        }
        None => {
            let request = pipedrive.request(http::Method::POST, object).json(&body);
            let answer: OneAnswer = pipedrive.client.send("create", request).await?.json()?;
            answer
                .data
                .as_ref()
                .and_then(id_of)
                .map(|id| id.to_string())
                .ok_or_else(|| ProviderError::Transient("create answered without an id".into()))
        }
    }
}

/// The write's properties with the idempotency key added to its custom fields.
fn body_with_key(properties: &Value, key_field: &str, key: &str) -> Result<Value, ProviderError> {
    let Some(map) = properties.as_object() else {
        return Err(ProviderError::Permanent("properties must be a JSON object".into()));
    };
    let mut body = map.clone();
    let custom = body.entry("custom_fields").or_insert_with(|| Value::Object(Map::new()));
    let Some(custom) = custom.as_object_mut() else {
        return Err(ProviderError::Permanent(
            "properties.custom_fields must be a JSON object".into(),
        ));
    };
    custom.insert(key_field.to_string(), json!(key));
    Ok(Value::Object(body))
}

/// The record that holds the write's key, if one exists: for an old write by search first, and in any case among
/// the records added since the write was queued.
async fn find_by_key(
    pipedrive: &Pipedrive,
    write: &PushRequest,
    key_field: &str,
) -> Result<Option<u64>, ProviderError> {
    if Utc::now() - write.queued_at > SEARCH_AFTER
        && let Some(id) = search_key(pipedrive, write, key_field).await?
    {
        return Ok(Some(id));
    }
    scan_recent(pipedrive, write, key_field).await
}

/// The record the search index says holds the key, confirmed on the field itself.
async fn search_key(pipedrive: &Pipedrive, write: &PushRequest, key_field: &str) -> Result<Option<u64>, ProviderError> {
    let object = write.object.as_str();
    let key = write.idempotency_key.as_str();
    let candidates = pipedrive.search(object, key, "custom_fields").await?;
    if !candidates.is_empty() {
        // exact_match ignores case and looks in every custom field: confirm on the field itself.
        let ids: Vec<String> = candidates.iter().take(MAX_IDS).map(u64::to_string).collect();
        let records = pipedrive.by_ids(object, &ids, Some(key_field)).await?;
        return Ok(records
            .iter()
            .filter(|r| custom_field(r, key_field) == Some(key))
            .filter_map(id_of)
            .min());
    }
    Ok(None)
}

/// Reads the records added since the write was queued (less the clock skew), newest first, for one holding the
/// key: the list does not lag the way the search index does.
async fn scan_recent(
    pipedrive: &Pipedrive,
    write: &PushRequest,
    key_field: &str,
) -> Result<Option<u64>, ProviderError> {
    let bound = write.queued_at - CLOCK_SKEW;
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![
            // Every record added since `bound` was also updated since then.
            ("updated_since", format_time(bound)),
            ("sort_by", "add_time".to_string()),
            ("sort_direction", "desc".to_string()),
            ("limit", MAX_PAGE_SIZE.to_string()),
            ("custom_fields", key_field.to_string()),
        ];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let answer = pipedrive.list("scan_recent", &write.object, &query).await?;
        let next = answer.next_cursor();
        for record in answer.records() {
            let added = record.get("add_time").and_then(Value::as_str).and_then(parse_time);
            if added.is_some_and(|at| at < bound) {
                // Newest first: everything after this was added before the write existed.
                return Ok(None);
            }
            if !wire::is_deleted(&record) && custom_field(&record, key_field) == Some(write.idempotency_key.as_str()) {
                return Ok(id_of(&record));
            }
        }
        match next {
            None => return Ok(None),
            Some(next) if cursor.as_ref() == Some(&next) => {
                return Err(ProviderError::Transient(
                    "the scan for recent records made no progress".into(),
                ));
            }
            Some(next) => cursor = Some(next),
        }
    }
}

/// Which search field finds `field` of `object`, and how to confirm a hit: a standard field Pipedrive searches,
/// or else a custom field key.
fn match_field(object: &str, field: &str) -> &'static str {
    match (object, field) {
        ("persons", "email" | "emails") => "email",
        ("persons", "phone" | "phones") => "phone",
        ("persons" | "organizations", "name") => "name",
        ("organizations", "address") => "address",
        ("deals", "title") => "title",
        _ => "custom_fields",
    }
}

/// Whether `record`'s `field` holds `value` (email and phone lists by any entry, text without regard to case).
fn holds(record: &Value, search_field: &str, field: &str, value: &str) -> bool {
    let list_has = |key: &str| {
        record.get(key).and_then(Value::as_array).is_some_and(|items| {
            items.iter().any(|item| {
                item.get("value")
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.eq_ignore_ascii_case(value))
            })
        })
    };
    match search_field {
        "email" => list_has("emails"),
        "phone" => list_has("phones"),
        "custom_fields" => custom_field(record, field) == Some(value),
        standard => record
            .get(standard)
            .and_then(Value::as_str)
            .is_some_and(|v| v.eq_ignore_ascii_case(value)),
    }
}

/// An existing record whose `field` equals `value` (the write's `match`), lowest id first.
async fn find_by_match(
    pipedrive: &Pipedrive,
    object: &str,
    field: &str,
    value: &str,
) -> Result<Option<u64>, ProviderError> {
    let search_field = match_field(object, field);
    let candidates = pipedrive.search(object, value, search_field).await?;
    if candidates.is_empty() {
        return Ok(None);
    }
    let ids: Vec<String> = candidates.iter().take(MAX_IDS).map(u64::to_string).collect();
    let custom = (search_field == "custom_fields").then_some(field);
    let records = pipedrive.by_ids(object, &ids, custom).await?;
    Ok(records
        .iter()
        .filter(|r| holds(r, search_field, field, value))
        .filter_map(id_of)
        .min())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_joins_the_written_custom_fields() {
        let body = body_with_key(&json!({"name": "A", "custom_fields": {"other": 1}}), "kf", "key-1").unwrap();
        assert_eq!(body, json!({"name": "A", "custom_fields": {"other": 1, "kf": "key-1"}}));
        let body = body_with_key(&json!({"title": "D"}), "kf", "key-2").unwrap();
        assert_eq!(body["custom_fields"]["kf"], "key-2");
        assert!(body_with_key(&json!(["not", "an", "object"]), "kf", "k").is_err());
        assert!(body_with_key(&json!({"custom_fields": 3}), "kf", "k").is_err());
    }

    #[test]
    fn a_match_is_confirmed_on_the_field_it_names() {
        let person =
            json!({"id": 1, "name": "Ada", "emails": [{"value": "Ada@Example.com"}], "custom_fields": {"ext": "X1"}});
        assert_eq!(match_field("persons", "email"), "email");
        assert!(holds(&person, "email", "email", "ada@example.com"));
        assert!(!holds(&person, "email", "email", "bob@example.com"));
        assert!(holds(&person, "name", "name", "ADA"));
        assert_eq!(match_field("persons", "ext"), "custom_fields");
        assert!(holds(&person, "custom_fields", "ext", "X1"));
        assert!(
            !holds(&person, "custom_fields", "ext", "x1"),
            "a custom key matches exactly"
        );
    }
}

#[cfg(test)]
mod sim_tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use crmsyncd_sim::pipedrive::{KEY_FIELD, PipedriveSim, PipedriveSimConfig, fields};
    use serde_json::json;

    use super::*;
    use crate::config::{Config, ProviderConfig};
    use crate::metrics::Metrics;
    use crate::providers::CrmClient;
    use crate::providers::pipedrive::QuotaHeaders;
    use crate::ratelimit::RateGate;

    fn provider(sim: &PipedriveSim) -> Pipedrive {
        let text = format!(
            "[[connection]]\nid = \"pd\"\nprovider = \"pipedrive\"\nbase_url = \"{}\"\napi_token = \"pd-test-token\"\n\
             objects = [\"persons\"]\npush_key_field = \"{KEY_FIELD}\"\n",
            sim.base_url()
        );
        let config = Config::parse(&text, Path::new("t.toml"), &|_| None).unwrap();
        let connection = config.connections[0].clone();
        let ProviderConfig::Pipedrive(settings) = connection.provider.clone() else {
            panic!("a Pipedrive connection");
        };
        let gate = Arc::new(RateGate::new(&connection.rate_limit));
        let client = CrmClient::new(
            &connection,
            gate,
            Arc::new(Metrics::new()),
            Arc::new(QuotaHeaders::default()),
        )
        .unwrap();
        Pipedrive::new(&connection, settings, client)
    }

    fn write(key: &str, queued_ago: chrono::Duration) -> PushRequest {
        PushRequest {
            idempotency_key: key.into(),
            object: "persons".into(),
            match_key: None,
            match_value: None,
            properties: json!({"name": format!("Pushed {key}")}),
            queued_at: Utc::now() - queued_ago,
        }
    }

    fn operations(sim: &PipedriveSim) -> Vec<String> {
        sim.log().snapshot().into_iter().map(|r| r.operation).collect()
    }

    #[tokio::test]
    async fn a_fresh_write_scans_recent_records_and_creates_without_searching() {
        let sim = PipedriveSim::start(PipedriveSimConfig::default()).await.unwrap();
        let id = push(&provider(&sim), &write("fresh-1", chrono::Duration::zero()))
            .await
            .unwrap();
        assert_eq!(operations(&sim), ["list", "create"]);
        assert_eq!(sim.creates_with("persons", KEY_FIELD, "fresh-1"), 1);
        assert_eq!(sim.records("persons")[0].id.to_string(), id);
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn an_old_writes_record_is_found_by_search_when_indexed() {
        let sim = PipedriveSim::start(PipedriveSimConfig::default()).await.unwrap();
        let earlier = sim.create(
            "persons",
            fields(json!({"name": "Earlier", "custom_fields": {KEY_FIELD: "old-1"}})),
        );
        // Another record whose custom field matches case-insensitively is not taken for it.
        sim.create(
            "persons",
            fields(json!({"name": "Other", "custom_fields": {KEY_FIELD: "OLD-1"}})),
        );
        let id = push(&provider(&sim), &write("old-1", chrono::Duration::hours(2)))
            .await
            .unwrap();
        assert_eq!(id, earlier.to_string());
        assert_eq!(
            operations(&sim),
            ["search", "list", "update"],
            "found by search, confirmed, updated"
        );
        assert_eq!(sim.creates_with("persons", KEY_FIELD, "old-1"), 0, "nothing created");
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn an_old_writes_record_the_index_has_not_caught_up_with_is_found_by_the_scan() {
        let sim = PipedriveSim::start(PipedriveSimConfig {
            index_lag: Duration::from_secs(30),
            ..PipedriveSimConfig::default()
        })
        .await
        .unwrap();
        // An earlier attempt created the record a moment ago; its answer was lost.
        let earlier = sim.create(
            "persons",
            fields(json!({"name": "Earlier", "custom_fields": {KEY_FIELD: "old-2"}})),
        );
        sim.seed("persons", 20, None);
        let id = push(&provider(&sim), &write("old-2", chrono::Duration::hours(2)))
            .await
            .unwrap();
        assert_eq!(id, earlier.to_string());
        assert_eq!(
            operations(&sim),
            ["search", "list", "update"],
            "the search missed, the scan found it"
        );
        assert_eq!(sim.records("persons").len(), 21, "nothing created");
        sim.shutdown().await;
    }
}
