//! The CRM object endpoints of the fake HubSpot: list, get, batch read, batch upsert and batch archive. (Search
//! has its own module.) Each takes the parsed request and the store, and answers a JSON value or an [`ApiError`].

use std::time::Instant;

use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::store::{Record, Store, Version, lookup_key, now_ms};
use super::webhooks::subscription_prefix;
use super::wire::{ApiError, Selection, iso, record_json};

/// The largest page of `GET /crm/v3/objects/{type}`.
pub const MAX_LIST_LIMIT: usize = 100;
/// The largest batch of the batch endpoints.
pub const MAX_BATCH: usize = 100;
const DEFAULT_LIST_LIMIT: usize = 10;

/// A successful answer: a status and a JSON body (None for 204).
pub(crate) type Answer = Result<(StatusCode, Option<Value>), ApiError>;

/// The query string of a GET, as name/value pairs in order (a name may repeat).
pub(crate) struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        Self(
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `properties=a,b&properties=c` -> `[a, b, c]`.
    fn properties(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == "properties")
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect()
    }

    fn archived(&self) -> Result<bool, ApiError> {
        match self.get("archived") {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::validation(format!("Invalid archived value {other:?}"))),
        }
    }
}

/// `GET /crm/v3/objects/{type}?limit=&after=&archived=&properties=`: records in id order, live ones or (with
/// `archived=true`) archived ones only. Reads the database, not the search index, so there is no lag.
pub(crate) fn list(store: &Store, object: &str, query: &Query) -> Answer {
    let limit = match query.get("limit") {
        None => DEFAULT_LIST_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| ApiError::validation(format!("Invalid limit {text:?}")))?,
    };
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(ApiError::validation(format!(
            "limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}"
        )));
    }
    let after = match query.get("after") {
        None | Some("") => 0,
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| ApiError::validation(format!("Invalid after {text:?}")))?,
    };
    let archived = query.archived()?;
    let properties = query.properties();
    let selection = Selection::named_or_defaults(&properties);
    let records = store.object(object).map(|o| o.records_from(after)).unwrap_or_default();
    let mut page = records
        .iter()
        .filter(|r| r.current().archived() == archived)
        .take(limit + 1);
    let results: Vec<Value> = page
        .by_ref()
        .take(limit)
        .map(|r| record_json(object, r, r.current(), selection))
        .collect();
    let mut answer = json!({ "results": results });
    // The cursor is the id of the first record of the next page.
    if let Some(next) = page.next() {
        answer["paging"] = json!({"next": {"after": next.id.to_string()}});
    }
    Ok((StatusCode::OK, Some(answer)))
}

/// `GET /crm/v3/objects/{type}/{id}?properties=&archived=&idProperty=`.
pub(crate) fn get(store: &mut Store, object: &str, id: &str, query: &Query) -> Answer {
    let archived = query.archived()?;
    let found = match query.get("idProperty") {
        Some(property) => store.find_live(object, property, id),
        None => id.parse::<u64>().ok(),
    };
    let record = found
        .and_then(|id| store.object(object)?.get(id))
        .filter(|r| r.current().archived() == archived)
        .ok_or_else(|| ApiError::not_found("Object not found.  objectId are usually numeric."))?;
    let properties = query.properties();
    let selection = Selection::named_or_defaults(&properties);
    Ok((
        StatusCode::OK,
        Some(record_json(object, record, record.current(), selection)),
    ))
}

/// An id in a batch input: HubSpot takes strings, clients sometimes send numbers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum InputId {
    Text(String),
    Number(u64),
}

impl InputId {
    fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Number(n) => n.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct IdInput {
    id: InputId,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchReadBody {
    inputs: Vec<IdInput>,
    properties: Option<Vec<String>>,
    id_property: Option<String>,
    #[serde(default)]
    archived: bool,
}

fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(&e))
}

fn check_batch_size(n: usize) -> Result<(), ApiError> {
    if n > MAX_BATCH {
        return Err(ApiError::validation(format!(
            "Batch input size {n} exceeds the limit of {MAX_BATCH} inputs"
        )));
    }
    Ok(())
}

/// `CONTACT`, `COMPANY`, ...: how HubSpot names an object type in error messages.
fn object_label(object: &str) -> String {
    subscription_prefix(object).to_ascii_uppercase()
}

/// `POST /crm/v3/objects/{type}/batch/read`: current data (no index lag); 207 with an `errors` entry naming the
/// ids that are missing or archived.
pub(crate) fn batch_read(store: &mut Store, object: &str, body: &[u8]) -> Answer {
    let started = now_ms();
    let body: BatchReadBody = parse_body(body)?;
    check_batch_size(body.inputs.len())?;
    let properties = body.properties.unwrap_or_default();
    let selection = Selection::named_or_defaults(&properties);
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for input in &body.inputs {
        let id = input.id.text();
        let found = match &body.id_property {
            Some(property) => store.find_live(object, property, &id),
            None => id.parse::<u64>().ok(),
        };
        match found
            .and_then(|id| store.object(object)?.get(id))
            .filter(|r| r.current().archived() == body.archived)
        {
            Some(record) => results.push(record_json(object, record, record.current(), selection)),
            None => missing.push(id),
        }
    }
    let mut answer = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": iso(started),
        "completedAt": iso(now_ms()),
    });
    if missing.is_empty() {
        return Ok((StatusCode::OK, Some(answer)));
    }
    answer["numErrors"] = json!(1);
    answer["errors"] = json!([{
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": format!(
            "Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.",
            object_label(object)
        ),
        "context": {"ids": missing},
    }]);
    Ok((StatusCode::MULTI_STATUS, Some(answer)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpsertInput {
    id: InputId,
    id_property: Option<String>,
    #[serde(default)]
    properties: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct UpsertBody {
    inputs: Vec<UpsertInput>,
}

/// The simulator's stand-in for HubSpot's property validation: a name starting with `invalid_` does not exist.
fn invalid_properties(inputs: &[UpsertInput]) -> Vec<Value> {
    inputs
        .iter()
        .flat_map(|input| input.properties.keys())
        .filter(|name| name.starts_with("invalid_"))
        .map(|name| {
            let message = format!("Property \"{name}\" does not exist");
            json!({
                "isValid": false,
                "message": message,
                "error": "PROPERTY_DOESNT_EXIST",
                "name": name,
                "localizedErrorMessage": message,
            })
        })
        .collect()
}

/// `POST /crm/v3/objects/{type}/batch/upsert`: per input, updates the live record whose `idProperty` equals `id`
/// or creates one; all inputs are validated before any is applied.
pub(crate) fn batch_upsert(store: &mut Store, object: &str, body: &[u8], now: Instant) -> Answer {
    let started = now_ms();
    let body: UpsertBody = parse_body(body)?;
    check_batch_size(body.inputs.len())?;
    let mut keys = Vec::with_capacity(body.inputs.len());
    for input in &body.inputs {
        let Some(property) = input.id_property.as_deref() else {
            return Err(ApiError::validation(format!(
                "idProperty is required for upsert (input id {:?})",
                input.id.text()
            )));
        };
        let key = (property, input.id.text());
        if keys.contains(&key) {
            return Err(ApiError::validation(format!(
                "Duplicate IDs found in batch input: [{}]. IDs must be unique",
                key.1
            )));
        }
        keys.push(key);
    }
    let invalid = invalid_properties(&body.inputs);
    if !invalid.is_empty() {
        return Err(ApiError::validation(format!(
            "Property values were not valid: {}",
            Value::Array(invalid)
        )));
    }
    let mut results = Vec::with_capacity(body.inputs.len());
    for (input, (property, value)) in body.inputs.iter().zip(&keys) {
        let at = now_ms();
        let (id, new) = match store.find_live(object, property, value) {
            Some(id) => {
                store.update(object, id, input.properties.clone(), at, now);
                (id, false)
            }
            None => {
                let mut properties = input.properties.clone();
                properties.insert(property.to_string(), Value::String(value.clone()));
                let id = store.create(object, properties, at, now);
                store.count_create(object, property, value);
                (id, true)
            }
        };
        let record = store.object(object).and_then(|o| o.get(id)).expect("just written");
        let mut result = record_json(object, record, record.current(), Selection::All);
        result["new"] = json!(new);
        results.push(result);
    }
    let answer = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": iso(started),
        "completedAt": iso(now_ms()),
    });
    Ok((StatusCode::OK, Some(answer)))
}

#[derive(Debug, Deserialize)]
struct ArchiveBody {
    inputs: Vec<IdInput>,
}

/// `POST /crm/v3/objects/{type}/batch/archive`: archives the records; 204 whether or not they existed.
pub(crate) fn batch_archive(store: &mut Store, object: &str, body: &[u8], now: Instant) -> Answer {
    let body: ArchiveBody = parse_body(body)?;
    check_batch_size(body.inputs.len())?;
    for input in &body.inputs {
        if let Ok(id) = input.id.text().parse::<u64>() {
            store.archive(object, id, now_ms(), now);
        }
    }
    Ok((StatusCode::NO_CONTENT, None))
}

/// The value of `property` on a record's current version, as HubSpot would return it.
pub(crate) fn current_value(record: &Record, property: &str) -> Option<String> {
    value_of(record.current(), property)
}

fn value_of(version: &Version, property: &str) -> Option<String> {
    lookup_key(version.properties.get(property))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_comma_separated_properties_are_merged() {
        let query = Query::parse(Some("properties=a,b&limit=5&properties=c"));
        assert_eq!(query.properties(), ["a", "b", "c"]);
        assert_eq!(query.get("limit"), Some("5"));
    }

    #[test]
    fn list_pages_in_id_order_with_the_next_id_as_cursor() {
        let mut store = Store::new(std::time::Duration::ZERO);
        let now = Instant::now();
        let ids: Vec<u64> = (0..5)
            .map(|_| store.create("deals", Map::new(), now_ms(), now))
            .collect();
        store.archive("deals", ids[1], now_ms(), now);
        let (_, page) = list(&store, "deals", &Query::parse(Some("limit=2"))).unwrap();
        let page = page.unwrap();
        let got: Vec<&str> = page["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, [ids[0].to_string(), ids[2].to_string()]);
        assert_eq!(page["paging"]["next"]["after"], ids[3].to_string());

        let (_, archived) = list(&store, "deals", &Query::parse(Some("archived=true"))).unwrap();
        let archived = archived.unwrap();
        assert_eq!(archived["results"][0]["id"], ids[1].to_string());
        assert_eq!(archived["results"][0]["archived"], true);
        assert!(archived.get("paging").is_none());
    }

    #[test]
    fn list_limit_above_100_is_rejected() {
        let store = Store::new(std::time::Duration::ZERO);
        assert!(list(&store, "deals", &Query::parse(Some("limit=101"))).is_err());
    }

    #[test]
    fn duplicate_ids_in_one_upsert_are_rejected() {
        let mut store = Store::new(std::time::Duration::ZERO);
        let body = json!({"inputs": [
            {"id": "a@x.io", "idProperty": "email", "properties": {}},
            {"id": "a@x.io", "idProperty": "email", "properties": {}},
        ]});
        let error = batch_upsert(&mut store, "contacts", body.to_string().as_bytes(), Instant::now()).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert!(store.object("contacts").is_none());
    }
}
