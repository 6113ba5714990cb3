//! Klaviyo's JSON:API on the daemon's side: profile resources into records, a write into a `profile-import`
//! document, and Klaviyo's times.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::model::RemoteRecord;
use crate::providers::{ProviderError, PushRequest};

/// Attributes `profile-import` takes at the top level; any other key of a write goes into `properties`.
const STANDARD_ATTRIBUTES: &[&str] = &[
    "email",
    "phone_number",
    "external_id",
    "anonymous_id",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
    "location",
];

/// The identifiers a write may be matched on (`"match": {"email": ...}`); `id` is Klaviyo's own profile id.
const MATCH_KEYS: &[&str] = &["external_id", "email", "phone_number", "id"];

/// A page of `GET /api/profiles`.
#[derive(Debug, Deserialize)]
pub struct ProfilePage {
    #[serde(default)]
    pub data: Vec<ApiProfile>,
    #[serde(default)]
    pub links: Links,
}

#[derive(Debug, Default, Deserialize)]
pub struct Links {
    pub next: Option<String>,
}

/// One profile resource.
#[derive(Debug, Deserialize)]
pub struct ApiProfile {
    pub id: String,
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// The answer of `profile-import`.
#[derive(Debug, Deserialize)]
pub struct ImportAnswer {
    pub data: ApiProfile,
}

impl ApiProfile {
    /// The record: the attributes as Klaviyo sent them, modified at `updated`.
    pub fn into_record(self) -> Result<RemoteRecord, ProviderError> {
        let updated = self
            .attributes
            .get("updated")
            .and_then(Value::as_str)
            .and_then(parse_time)
            .ok_or_else(|| ProviderError::Transient(format!("profile {} has no readable `updated`", self.id)))?;
        Ok(RemoteRecord {
            remote_id: self.id,
            updated_at: updated,
            data: Value::Object(self.attributes),
        })
    }
}

/// Klaviyo's times: ISO-8601 with an offset (`2024-01-01T00:00:00+00:00`) or `Z`.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

/// The `profile-import` document for a write. Its identifiers make it an upsert, so a retry of the same write
/// updates the profile the first attempt created instead of creating another: the `match` identifier when the
/// write names one, else the write's idempotency key as the profile's `external_id`.
pub fn import_document(write: &PushRequest) -> Result<Value, ProviderError> {
    let Some(given) = write.properties.as_object() else {
        return Err(ProviderError::Permanent("properties must be a JSON object".into()));
    };
    let mut attributes = Map::new();
    let mut custom = Map::new();
    for (key, value) in given {
        if key == "properties" {
            match value {
                Value::Object(map) => custom.extend(map.clone()),
                _ => return Err(ProviderError::Permanent("`properties` must be a JSON object".into())),
            }
        } else if STANDARD_ATTRIBUTES.contains(&key.as_str()) {
            attributes.insert(key.clone(), value.clone());
        } else {
            custom.insert(key.clone(), value.clone());
        }
    }
    let mut id = None;
    match (&write.match_key, &write.match_value) {
        (Some(key), Some(value)) if key == "id" => id = Some(value.clone()),
        (Some(key), Some(value)) if MATCH_KEYS.contains(&key.as_str()) => {
            attributes.insert(key.clone(), json!(value));
        }
        (Some(key), _) => {
            return Err(ProviderError::Permanent(format!(
                "Klaviyo matches profiles by external_id, email, phone_number or id, not {key:?}"
            )));
        }
        (None, _) => {
            attributes
                .entry("external_id")
                .or_insert_with(|| json!(write.idempotency_key));
        }
    }
    if !custom.is_empty() {
        attributes.insert("properties".into(), Value::Object(custom));
    }
    let mut data = json!({"type": "profile", "attributes": attributes});
    if let Some(id) = id {
        data["id"] = json!(id);
    }
    Ok(json!({ "data": data }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(match_key: Option<&str>, match_value: Option<&str>, properties: Value) -> PushRequest {
        PushRequest {
            idempotency_key: "key-1".into(),
            object: "profiles".into(),
            match_key: match_key.map(Into::into),
            match_value: match_value.map(Into::into),
            properties,
            queued_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn times_parse_with_an_offset_or_z() {
        let a = parse_time("2024-01-01T00:00:05+00:00").unwrap();
        let b = parse_time("2024-01-01T00:00:05Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(parse_time("2024-01-01T02:00:05+02:00").unwrap(), a);
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn a_profile_without_updated_is_refused() {
        let p = ApiProfile {
            id: "01H".into(),
            attributes: Map::new(),
        };
        assert!(matches!(p.into_record(), Err(ProviderError::Transient(_))));
    }

    #[test]
    fn without_a_match_the_idempotency_key_becomes_the_external_id() {
        let doc = import_document(&write(None, None, json!({"first_name": "A", "plan": "pro"}))).unwrap();
        assert_eq!(doc["data"]["type"], "profile");
        assert_eq!(doc["data"]["attributes"]["external_id"], "key-1");
        assert_eq!(doc["data"]["attributes"]["first_name"], "A");
        assert_eq!(
            doc["data"]["attributes"]["properties"]["plan"], "pro",
            "custom keys go to properties"
        );
    }

    #[test]
    fn a_match_names_the_identifier_and_id_targets_a_profile() {
        let doc = import_document(&write(Some("email"), Some("a@b.co"), json!({"email": "old@b.co"}))).unwrap();
        assert_eq!(doc["data"]["attributes"]["email"], "a@b.co");
        assert!(doc["data"]["attributes"].get("external_id").is_none());
        let doc = import_document(&write(Some("id"), Some("01HX"), json!({"title": "CTO"}))).unwrap();
        assert_eq!(doc["data"]["id"], "01HX");
        assert!(matches!(
            import_document(&write(Some("name"), Some("x"), json!({}))),
            Err(ProviderError::Permanent(_))
        ));
        assert!(matches!(
            import_document(&write(None, None, json!([1]))),
            Err(ProviderError::Permanent(_))
        ));
    }
}
