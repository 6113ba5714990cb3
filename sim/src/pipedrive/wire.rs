//! Pipedrive's JSON on the wire: the `{success, data, additional_data}` envelope, records as API v2 returns them,
//! RFC 3339 times at second precision, and the error bodies.

use chrono::{DateTime, SecondsFormat, Utc};
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::store::{Record, Version};
use crate::server::SimResponse;

/// What every Pipedrive error body says after its message.
const ERROR_INFO: &str = "Please check developers.pipedrive.com for more information about Pipedrive API.";

/// `2025-01-01T10:20:00Z`: how API v2 writes times.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses an RFC 3339 time as the API accepts it in `updated_since`/`updated_until`.
pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

/// A record as `GET /api/v2/{entity}` returns it; `custom_fields` limited to `only` when given.
pub(crate) fn record_json(record: &Record, version: &Version, only: Option<&[String]>) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(record.id));
    for (key, value) in &version.fields {
        out.insert(key.clone(), value.clone());
    }
    out.insert("add_time".into(), json!(format_time(record.add_time)));
    out.insert("update_time".into(), json!(format_time(version.update_time)));
    out.insert("is_deleted".into(), json!(version.deleted()));
    let custom: Map<String, Value> = version
        .custom_fields
        .iter()
        .filter(|(key, _)| only.is_none_or(|keys| keys.iter().any(|k| k == *key)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.insert("custom_fields".into(), Value::Object(custom));
    Value::Object(out)
}

/// A 200 with `{"success": true, "data": ..., "additional_data": ...}`.
pub(crate) fn ok(data: Value, additional: Option<Value>) -> SimResponse {
    let mut body = json!({"success": true, "data": data});
    if let Some(additional) = additional {
        body["additional_data"] = additional;
    }
    SimResponse::json(StatusCode::OK, &body)
}

/// An error answer the way Pipedrive writes them.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub code: &'static str,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            code: "ERR_SCHEMA_VALIDATION_FAILED",
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            code: "ERR_NOT_FOUND",
        }
    }

    pub fn response(&self) -> SimResponse {
        SimResponse::json(
            self.status,
            &json!({
                "success": false,
                "error": self.message,
                "code": self.code,
                "error_info": ERROR_INFO,
                "data": null,
                "additional_data": null,
            }),
        )
    }
}

/// The 401 for a missing or wrong `x-api-token`.
pub(crate) fn unauthorized() -> SimResponse {
    SimResponse::json(
        StatusCode::UNAUTHORIZED,
        &json!({"success": false, "error": "unauthorized access", "errorCode": 401, "error_info": ERROR_INFO}),
    )
}

/// The 429 for a full window.
pub(crate) fn rate_limited() -> SimResponse {
    SimResponse::json(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({"success": false, "error": "Request over limit", "errorCode": 429, "error_info": ERROR_INFO}),
    )
}

/// A server error: Pipedrive's JSON for a 500, a proxy's HTML page for the gateway errors.
pub(crate) fn server_error(status: StatusCode) -> SimResponse {
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        SimResponse::json(
            status,
            &json!({"success": false, "error": "Internal server error", "errorCode": 500, "error_info": ERROR_INFO}),
        )
    } else {
        let reason = status.canonical_reason().unwrap_or("Error");
        SimResponse::new(
            status,
            format!(
                "<html><head><title>{} {reason}</title></head><body>{reason}</body></html>",
                status.as_u16()
            ),
        )
        .with_header("content-type", "text/html")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_are_rfc3339_utc_to_the_second() {
        let at = Utc.with_ymd_and_hms(2025, 1, 1, 10, 20, 0).unwrap();
        assert_eq!(format_time(at), "2025-01-01T10:20:00Z");
        assert_eq!(parse_time("2025-01-01T12:20:00+02:00"), Some(at));
        assert_eq!(parse_time("2025-01-01 10:20:00"), None);
    }
}
