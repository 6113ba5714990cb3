//! Incremental reads through COQL, keyset-paged on (`Modified_Time`, `id`): each page asks for what comes after
//! the last row of the previous one, so a block of thousands of rows with one timestamp is paged through, and a
//! row edited between two pages moves behind the position instead of shifting the rows after it (as Zoho's own
//! offset-based page tokens would: see the simulator's tests).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Cursor, RemoteRecord};
use crate::providers::ProviderError;

/// Where the next page of a pass starts: after the row at (`ts`, `id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyset {
    pub ts: DateTime<Utc>,
    pub id: String,
}

impl Keyset {
    pub fn after(cursor: Cursor) -> Self {
        Self {
            ts: cursor.ts,
            id: cursor.id,
        }
    }
}

/// A COQL datetime literal in UTC, at Zoho's second precision (floored: a lower bound only widens).
pub fn literal(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// The query for one page: rows modified at or after `since` (a pass's first page), or after `from`.
pub fn page_query(module: &str, fields: &[String], since: DateTime<Utc>, from: Option<&Keyset>, limit: u32) -> String {
    let filter = match from {
        None => format!("(Modified_Time >= '{}')", literal(since)),
        Some(k) => {
            // Ids are numbers: one that is not could only come from a corrupted token.
            let id: u64 = k.id.parse().unwrap_or(0);
            let ts = literal(k.ts);
            format!("((Modified_Time > '{ts}') or ((Modified_Time = '{ts}') and (id > {id})))")
        }
    };
    format!(
        "select {} from {module} where {filter} order by Modified_Time asc, id asc limit {limit}",
        fields.join(", ")
    )
}

/// The query for one page of every id (for a full comparison when the delete log does not reach back).
pub fn ids_query(module: &str, after: Option<&str>, limit: u32) -> String {
    let filter = match after.and_then(|id| id.parse::<u64>().ok()) {
        None => "(id is not null)".to_string(),
        Some(id) => format!("(id > {id})"),
    };
    format!("select id from {module} where {filter} order by id asc limit {limit}")
}

/// A COQL answer (a 204 has none).
#[derive(Debug, Deserialize)]
pub struct Answer {
    #[serde(default)]
    pub data: Vec<Value>,
    #[serde(default)]
    pub info: Info,
}

#[derive(Debug, Default, Deserialize)]
pub struct Info {
    #[serde(default)]
    pub more_records: bool,
}

/// Zoho's datetimes carry the org's offset (`2024-03-01T17:30:05+05:30`): the same instant in UTC.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A record id as text (Zoho sends ids as strings; numbers are accepted too).
pub fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The id of a row.
pub fn row_id(row: &Value) -> Option<String> {
    row.get("id").and_then(id_text)
}

/// A row as a record stamped with its Modified_Time in UTC.
pub fn row_to_record(row: Value) -> Result<RemoteRecord, ProviderError> {
    let id = row_id(&row).ok_or_else(|| ProviderError::Transient("a row without an id".into()))?;
    let modified = row
        .get("Modified_Time")
        .and_then(Value::as_str)
        .and_then(parse_time)
        .ok_or_else(|| ProviderError::Transient(format!("row {id} has no readable Modified_Time")))?;
    Ok(RemoteRecord {
        remote_id: id,
        updated_at: modified,
        data: row,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields() -> Vec<String> {
        ["Last_Name", "id", "Modified_Time"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn a_pass_starts_at_since_and_pages_by_keyset() {
        let since = parse_time("2024-03-01T12:00:05.750Z").unwrap();
        assert_eq!(
            page_query("Leads", &fields(), since, None, 200),
            "select Last_Name, id, Modified_Time from Leads where (Modified_Time >= '2024-03-01T12:00:05+00:00') \
             order by Modified_Time asc, id asc limit 200"
        );
        let from = Keyset {
            ts: parse_time("2024-03-01T17:30:06+05:30").unwrap(),
            id: "5725767000000100042".into(),
        };
        assert_eq!(
            page_query("Leads", &fields(), since, Some(&from), 50),
            "select Last_Name, id, Modified_Time from Leads where ((Modified_Time > '2024-03-01T12:00:06+00:00') \
             or ((Modified_Time = '2024-03-01T12:00:06+00:00') and (id > 5725767000000100042))) \
             order by Modified_Time asc, id asc limit 50"
        );
    }

    #[test]
    fn keysets_survive_the_page_token_round_trip() {
        let k = Keyset {
            ts: parse_time("2024-03-01T12:00:06Z").unwrap(),
            id: "7".into(),
        };
        let token = serde_json::to_value(&k).unwrap();
        assert_eq!(serde_json::from_value::<Keyset>(token).unwrap(), k);
    }

    #[test]
    fn rows_become_records_in_utc() {
        let r =
            row_to_record(json!({"id": "42", "Modified_Time": "2024-03-01T17:30:05+05:30", "Last_Name": "A"})).unwrap();
        assert_eq!(r.remote_id, "42");
        assert_eq!(r.updated_at, parse_time("2024-03-01T12:00:05Z").unwrap());
        assert_eq!(r.data["Last_Name"], "A");
        assert!(row_to_record(json!({"id": "42"})).is_err());
        assert!(row_to_record(json!({"id": "42", "Modified_Time": "2024-03-01 12:00:05"})).is_err());
        assert!(row_to_record(json!({"Modified_Time": "2024-03-01T17:30:05+05:30"})).is_err());
    }

    #[test]
    fn id_listing_pages_by_id() {
        assert_eq!(
            ids_query("Deals", None, 200),
            "select id from Deals where (id is not null) order by id asc limit 200"
        );
        assert_eq!(
            ids_query("Deals", Some("9"), 200),
            "select id from Deals where (id > 9) order by id asc limit 200"
        );
    }
}
