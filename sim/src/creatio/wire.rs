//! What goes on the wire: OData 4 JSON entities (`@odata.context`, `value`), Creatio's date-time form, and the
//! OData error body (`{"error": {"code": "", "message": ...}}`).

use chrono::{DateTime, Utc};
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::store::{Row, Table};
use crate::server::SimResponse;

/// Creatio's date-time on the wire: UTC, milliseconds, `Z` (`2024-01-01T10:00:00.123Z`).
pub fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// One entity as OData returns it: `Id`, the requested columns (every declared one when `select` is None) and,
/// without a `$select`, the system dates. Unset columns read `null`, as Creatio answers them.
pub(crate) fn entity(table: &Table, id: &str, row: &Row, select: Option<&[String]>) -> Value {
    let mut out = Map::new();
    let column = |name: &str| -> Value {
        match name {
            "Id" => Value::String(id.to_owned()),
            "CreatedOn" => Value::String(format_time(row.created_on)),
            "ModifiedOn" => Value::String(format_time(row.modified_on)),
            _ => row.fields.get(name).cloned().unwrap_or(Value::Null),
        }
    };
    match select {
        Some(names) => {
            for name in names {
                out.insert(name.clone(), column(name));
            }
        }
        None => {
            out.insert("Id".to_owned(), column("Id"));
            for name in &table.columns {
                out.insert(name.clone(), column(name));
            }
            for name in row.fields.keys() {
                out.entry(name.clone()).or_insert_with(|| column(name));
            }
            out.insert("CreatedOn".to_owned(), column("CreatedOn"));
            out.insert("ModifiedOn".to_owned(), column("ModifiedOn"));
        }
    }
    Value::Object(out)
}

/// `{base}/0/odata/$metadata#Contact` and friends.
pub(crate) fn context(base: &str, resource: &str) -> String {
    format!("{base}/0/odata/$metadata#{resource}")
}

/// A collection answer.
pub(crate) fn collection(base: &str, entity_set: &str, rows: Vec<Value>, count: Option<usize>) -> Value {
    let mut out = json!({"@odata.context": context(base, entity_set)});
    if let Some(n) = count {
        out["@odata.count"] = json!(n);
    }
    out["value"] = Value::Array(rows);
    out
}

/// An OData error answer.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> SimResponse {
    SimResponse::json(status, &json!({"error": {"code": "", "message": message.into()}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_milliseconds_and_a_z() {
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.6Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_time(t), "2024-01-02T03:04:05.600Z");
    }
}
