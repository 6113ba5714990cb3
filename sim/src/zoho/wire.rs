//! How the fake Zoho writes its answers: the error body every Zoho API uses, records as the API returns them,
//! and the user that stands behind every change.

use chrono::{DateTime, FixedOffset, Utc};
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::store::Version;
use super::time::format_time;
use crate::server::SimResponse;

/// The id of the API user every simulated change is made by.
pub const USER_ID: &str = "5725767000000000001";

/// Zoho's lookup to a user (`Created_By`, `Modified_By`, `deleted_by`).
pub fn user() -> Value {
    json!({"name": "Sim Admin", "id": USER_ID, "email": "admin@example.com"})
}

/// Zoho's error body: `{"code", "details", "message", "status": "error"}`.
pub fn error_body(code: &str, message: &str, details: Value) -> Value {
    json!({"code": code, "details": details, "message": message, "status": "error"})
}

/// An error answer.
pub fn error(status: StatusCode, code: &str, message: &str, details: Value) -> SimResponse {
    SimResponse::json(status, &error_body(code, message, details))
}

/// A record as the API returns it: `id`, and the `columns` asked for (every field when None), with datetimes in
/// the org's offset. A column the record lacks reads null, as in Zoho.
pub fn record_json(
    id: u64,
    created: DateTime<Utc>,
    version: &Version,
    columns: Option<&[String]>,
    offset: FixedOffset,
) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(id.to_string()));
    let value = |name: &str| -> Value {
        match name {
            "Modified_Time" => json!(format_time(version.modified, offset)),
            "Created_Time" => json!(format_time(created, offset)),
            "Created_By" | "Modified_By" => user(),
            _ => version.fields.get(name).cloned().unwrap_or(Value::Null),
        }
    };
    match columns {
        Some(columns) => {
            for column in columns.iter().filter(|c| c.as_str() != "id") {
                out.insert(column.clone(), value(column));
            }
        }
        None => {
            for (name, v) in &version.fields {
                out.insert(name.clone(), v.clone());
            }
            for name in ["Modified_Time", "Created_Time", "Created_By", "Modified_By"] {
                out.insert(name.into(), value(name));
            }
        }
    }
    Value::Object(out)
}
