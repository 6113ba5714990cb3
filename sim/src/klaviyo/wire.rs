//! Klaviyo's JSON:API shapes: a profile resource, the error document (`{"errors": [{id, status, code, title,
//! detail, source}]}`), and its time format (`2024-01-01T00:00:00+00:00`, whole seconds).

use chrono::{DateTime, Utc};
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::store::{Profile, Version};
use crate::server::SimResponse;

/// Attributes every profile answer carries (null when unset), in Klaviyo's order.
pub(crate) const PROFILE_ATTRIBUTES: &[&str] = &[
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
    "created",
    "updated",
    "last_event_date",
    "location",
    "properties",
];

/// Attributes `profile-import` accepts.
pub(crate) const WRITABLE_ATTRIBUTES: &[&str] = &[
    "email",
    "phone_number",
    "external_id",
    "anonymous_id",
    "_kx",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
    "location",
    "properties",
];

/// Klaviyo's datetime form.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// The full attributes object of one version of a profile.
pub(crate) fn attributes(profile: &Profile, version: &Version) -> Map<String, Value> {
    let mut out = Map::new();
    for name in PROFILE_ATTRIBUTES {
        let value = match *name {
            "created" => json!(format_time(profile.created)),
            "updated" => json!(format_time(version.updated)),
            "location" | "properties" => version.attributes.get(*name).cloned().unwrap_or_else(|| json!({})),
            _ => version.attributes.get(*name).cloned().unwrap_or(Value::Null),
        };
        out.insert(name.to_string(), value);
    }
    out
}

/// One profile resource; `fields` limits the attributes (a sparse fieldset), None: all of them.
pub(crate) fn profile_resource(base: &str, profile: &Profile, version: &Version, fields: Option<&[String]>) -> Value {
    let mut attrs = attributes(profile, version);
    if let Some(fields) = fields {
        attrs.retain(|name, _| fields.iter().any(|f| f == name));
    }
    json!({
        "type": "profile",
        "id": profile.id,
        "attributes": attrs,
        "relationships": {
            "lists": {"links": {"self": format!("{base}/api/profiles/{}/relationships/lists/", profile.id)}},
            "segments": {"links": {"self": format!("{base}/api/profiles/{}/relationships/segments/", profile.id)}},
        },
        "links": {"self": format!("{base}/api/profiles/{}/", profile.id)},
    })
}

/// A refusal as Klaviyo writes it.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// `{"parameter": "filter"}` or `{"pointer": "/data/attributes/email"}` (boxed: errors travel in `Result`s).
    pub source: Box<Value>,
    pub meta: Box<Value>,
}

impl ApiError {
    pub fn invalid(detail: impl Into<String>, source: Value) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            title: "Invalid input.",
            detail: detail.into(),
            source: Box::new(source),
            meta: Box::new(json!({})),
        }
    }

    pub fn parameter(name: &str, detail: impl Into<String>) -> Self {
        Self::invalid(detail, json!({ "parameter": name }))
    }

    pub fn pointer(pointer: &str, detail: impl Into<String>) -> Self {
        Self::invalid(detail, json!({ "pointer": pointer }))
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            title: "Not found.",
            detail: detail.into(),
            source: Box::new(json!({})),
            meta: Box::new(json!({})),
        }
    }

    pub fn response(&self) -> SimResponse {
        error_response(
            self.status,
            self.code,
            self.title,
            &self.detail,
            (*self.source).clone(),
            (*self.meta).clone(),
        )
    }
}

/// `{"errors": [...]}` with one error.
pub(crate) fn error_response(
    status: StatusCode,
    code: &str,
    title: &str,
    detail: &str,
    source: Value,
    meta: Value,
) -> SimResponse {
    SimResponse::json(
        status,
        &json!({"errors": [{
            "id": error_id(),
            "status": status.as_u16(),
            "code": code,
            "title": title,
            "detail": detail,
            "source": source,
            "links": {},
            "meta": meta,
        }]}),
    )
    .with_header("content-type", "application/vnd.api+json")
}

/// A UUID-shaped id for an error document.
fn error_id() -> String {
    let n: u128 = rand::random();
    let h = format!("{n:032x}");
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_have_whole_seconds_and_an_explicit_offset() {
        let t = Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 5).unwrap();
        assert_eq!(format_time(t), "2024-03-01T12:00:05+00:00");
    }

    #[test]
    fn errors_follow_json_api() {
        let r = ApiError::parameter("filter", "bad").response();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["errors"][0]["status"], 400);
        assert_eq!(v["errors"][0]["code"], "invalid");
        assert_eq!(v["errors"][0]["source"]["parameter"], "filter");
    }
}
