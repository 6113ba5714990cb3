//! Pipedrive's answers: the `{success, data, additional_data: {next_cursor}}` envelope, records as API v2
//! returns them, and search results.

use serde::Deserialize;
use serde_json::Value;

use super::paging::parse_time;
use crate::model::RemoteRecord;
use crate::providers::ProviderError;

/// A list answer.
#[derive(Debug, Deserialize)]
pub struct ListAnswer {
    #[serde(default)]
    pub data: Option<Vec<Value>>,
    #[serde(default)]
    pub additional_data: Option<AdditionalData>,
}

#[derive(Debug, Deserialize)]
pub struct AdditionalData {
    #[serde(default)]
    pub next_cursor: Option<String>,
}

impl ListAnswer {
    pub fn next_cursor(&self) -> Option<String> {
        self.additional_data
            .as_ref()
            .and_then(|a| a.next_cursor.clone())
            .filter(|c| !c.is_empty())
    }

    pub fn records(self) -> Vec<Value> {
        self.data.unwrap_or_default()
    }
}

/// A search answer: `data.items[].item`.
#[derive(Debug, Deserialize)]
pub struct SearchAnswer {
    #[serde(default)]
    pub data: Option<SearchData>,
}

#[derive(Debug, Deserialize)]
pub struct SearchData {
    #[serde(default)]
    pub items: Vec<SearchItem>,
}

#[derive(Debug, Deserialize)]
pub struct SearchItem {
    pub item: Value,
}

impl SearchAnswer {
    /// The ids the search found.
    pub fn ids(&self) -> Vec<u64> {
        self.data
            .as_ref()
            .map(|d| d.items.iter().filter_map(|i| id_of(&i.item)).collect())
            .unwrap_or_default()
    }
}

/// A create or update answer: `data` is the record.
#[derive(Debug, Deserialize)]
pub struct OneAnswer {
    #[serde(default)]
    pub data: Option<Value>,
}

/// A record's id, numeric or (defensively) a numeric string.
pub fn id_of(record: &Value) -> Option<u64> {
    match record.get("id")? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Whether Pipedrive flags the record deleted (v2 `is_deleted`; v1 `active_flag = false`).
pub fn is_deleted(record: &Value) -> bool {
    record.get("is_deleted") == Some(&Value::Bool(true)) || record.get("active_flag") == Some(&Value::Bool(false))
}

/// A live record as the sync engine stores it; None for a record flagged deleted (the delete sweep or a webhook
/// marks it). A record without an id or a readable `update_time` is a broken answer: transient.
pub fn into_record(record: Value) -> Result<Option<RemoteRecord>, ProviderError> {
    let id = id_of(&record).ok_or_else(|| ProviderError::Transient("a record without an id".into()))?;
    if is_deleted(&record) {
        return Ok(None);
    }
    let updated_at = record
        .get("update_time")
        .and_then(Value::as_str)
        .and_then(parse_time)
        .ok_or_else(|| ProviderError::Transient(format!("record {id} has no readable update_time")))?;
    Ok(Some(RemoteRecord {
        remote_id: id.to_string(),
        updated_at,
        data: record,
    }))
}

/// The value of custom field `key` on a record, as text.
pub fn custom_field<'a>(record: &'a Value, key: &str) -> Option<&'a str> {
    record.get("custom_fields")?.get(key)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_become_remote_records_at_their_update_time() {
        let r = into_record(json!({"id": 7, "name": "A", "update_time": "2025-01-01T10:20:00Z", "is_deleted": false}))
            .unwrap()
            .unwrap();
        assert_eq!(r.remote_id, "7");
        assert_eq!(r.updated_at.to_rfc3339(), "2025-01-01T10:20:00+00:00");
        assert_eq!(r.data["name"], "A");
    }

    #[test]
    fn deleted_records_are_left_out_and_broken_ones_refused() {
        assert_eq!(
            into_record(json!({"id": 7, "update_time": "2025-01-01T10:20:00Z", "is_deleted": true})).unwrap(),
            None
        );
        assert!(into_record(json!({"name": "no id"})).is_err());
        assert!(into_record(json!({"id": 7, "update_time": "soon"})).is_err());
    }

    #[test]
    fn search_answers_yield_their_ids() {
        let answer: SearchAnswer = serde_json::from_value(json!({
            "success": true,
            "data": {"items": [{"result_score": 1.0, "item": {"id": 3, "type": "person"}}, {"item": {"id": "4"}}]},
            "additional_data": {"next_cursor": null}
        }))
        .unwrap();
        assert_eq!(answer.ids(), vec![3, 4]);
    }
}
