//! How the fake HubSpot writes things on the wire: timestamps, record objects with every property value as a
//! string, and HubSpot's error bodies.

use chrono::{DateTime, SecondsFormat, Utc};
use http::StatusCode;
use rand::Rng;
use serde_json::{Map, Value, json};

use super::modified_property;
use super::store::{Record, Version};
use crate::server::SimResponse;

/// `2024-01-01T00:00:00.000Z`, the format of every HubSpot timestamp.
pub(crate) fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A random id shaped like HubSpot's correlation ids (a UUID).
pub(crate) fn correlation_id() -> String {
    let mut rng = rand::rng();
    let a: u32 = rng.random();
    let b: u16 = rng.random();
    let c: u16 = rng.random();
    let d: u16 = rng.random();
    let e: u64 = rng.random::<u64>() & 0xffff_ffff_ffff;
    format!(
        "{a:08x}-{b:04x}-4{:03x}-{:04x}-{e:012x}",
        c & 0x0fff,
        (d & 0x3fff) | 0x8000
    )
}

/// A failure that maps to one HubSpot error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub category: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn validation(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            category: "VALIDATION_ERROR",
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            category: "OBJECT_NOT_FOUND",
            message: message.into(),
        }
    }

    /// A body that is not the JSON the endpoint expects, worded as HubSpot words it.
    pub fn invalid_json(error: &serde_json::Error) -> Self {
        Self::validation(format!(
            "Invalid input JSON on line {}, column {}: {error}",
            error.line(),
            error.column()
        ))
    }

    pub fn response(&self) -> SimResponse {
        error_response(self.status, &self.message, Some(self.category))
    }
}

/// HubSpot's error body: `{"status":"error","message","correlationId","category"}`.
pub(crate) fn error_response(status: StatusCode, message: &str, category: Option<&str>) -> SimResponse {
    let mut body = json!({
        "status": "error",
        "message": message,
        "correlationId": correlation_id(),
    });
    if let Some(category) = category {
        body["category"] = json!(category);
    }
    SimResponse::json(status, &body)
}

/// The properties HubSpot returns when a request names none.
pub(crate) fn default_properties(object: &str) -> &'static [&'static str] {
    match object {
        "contacts" => &["firstname", "lastname", "email"],
        "companies" => &["name", "domain"],
        "deals" => &["dealname", "amount", "dealstage", "pipeline", "closedate"],
        _ => &[],
    }
}

/// Which properties a response carries, besides the system ones that are always there.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Selection<'a> {
    /// The object type's default properties (no `properties` in the request).
    Defaults,
    /// Exactly these (each one, set or not: unset ones are `null`).
    Named(&'a [String]),
    /// Every property the record has.
    All,
}

impl<'a> Selection<'a> {
    /// `Named`, or `Defaults` when the request's list is empty.
    pub fn named_or_defaults(names: &'a [String]) -> Self {
        if names.is_empty() {
            Self::Defaults
        } else {
            Self::Named(names)
        }
    }
}

/// A property value as HubSpot returns it: always a string, or null when unset.
pub(crate) fn wire_value(value: Option<&Value>) -> Value {
    match value {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(other) => Value::String(other.to_string()),
    }
}

/// The property map of a response: the selected properties plus `hs_object_id`, `createdate` and the modified
/// property, which HubSpot always includes.
pub(crate) fn wire_properties(
    object: &str,
    record: &Record,
    version: &Version,
    selection: Selection<'_>,
) -> Map<String, Value> {
    let mut out = Map::new();
    match selection {
        Selection::Defaults => {
            for name in default_properties(object) {
                out.insert(name.to_string(), wire_value(version.properties.get(*name)));
            }
        }
        Selection::Named(names) => {
            for name in names {
                out.insert(name.clone(), wire_value(version.properties.get(name)));
            }
        }
        Selection::All => {
            for (name, value) in &version.properties {
                out.insert(name.clone(), wire_value(Some(value)));
            }
        }
    }
    out.insert("hs_object_id".into(), json!(record.id.to_string()));
    out.insert("createdate".into(), json!(iso(record.created_at)));
    out.insert(modified_property(object).into(), json!(iso(version.updated_at)));
    out
}

/// One record object: `{id, properties, createdAt, updatedAt, archived}` (plus `archivedAt` when archived).
pub(crate) fn record_json(object: &str, record: &Record, version: &Version, selection: Selection<'_>) -> Value {
    let mut out = json!({
        "id": record.id.to_string(),
        "properties": wire_properties(object, record, version, selection),
        "createdAt": iso(record.created_at),
        "updatedAt": iso(version.updated_at),
        "archived": version.archived(),
    });
    if let Some(at) = version.archived_at {
        out["archivedAt"] = json!(iso(at));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_milliseconds_and_a_z() {
        let at = DateTime::from_timestamp_millis(1_704_067_200_007).unwrap();
        assert_eq!(iso(at), "2024-01-01T00:00:00.007Z");
    }

    #[test]
    fn property_values_are_strings_or_null() {
        assert_eq!(wire_value(Some(&json!(12.5))), json!("12.5"));
        assert_eq!(wire_value(Some(&json!(true))), json!("true"));
        assert_eq!(wire_value(Some(&json!("x"))), json!("x"));
        assert_eq!(wire_value(Some(&Value::Null)), Value::Null);
        assert_eq!(wire_value(None), Value::Null);
    }

    #[test]
    fn correlation_ids_look_like_uuids() {
        let id = correlation_id();
        let parts: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12], "{id}");
    }
}
