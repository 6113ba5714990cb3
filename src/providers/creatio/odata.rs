//! OData 4 as Creatio speaks it: literals for `$filter` (unquoted date-times and GUIDs, quoted strings with the
//! quote doubled), Creatio's `ModifiedOn` times, collection answers, and the one status Creatio's hosting adds a
//! meaning to (503 with `Retry-After` while an app pool recycles).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::model::RemoteRecord;
use crate::providers::client::retry_after;
use crate::providers::{ProviderError, ResponsePolicy};

/// A collection answer: `{"@odata.context": ..., "value": [...]}`.
#[derive(Debug, Deserialize)]
pub struct Collection {
    pub value: Vec<Map<String, Value>>,
}

/// Whether `name` is an OData identifier (an entity or column name): letters, digits and `_`, not starting with a
/// digit. Everything the daemon puts into a URL path or a `$filter` as a name is checked with this first.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A GUID in Creatio's lowercase form, or None when `s` is not one.
pub fn guid(s: &str) -> Option<String> {
    let groups: Vec<&str> = s.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| s.to_ascii_lowercase())
}

/// A string literal: `'O''Brien'`.
pub fn string_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A date-time literal for "at or after `t`": floored to the millisecond, so that a comparison never excludes a
/// row stored with Creatio's (millisecond) precision.
pub fn time_literal(t: DateTime<Utc>) -> String {
    t.trunc_subsecs(3).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Creatio's `ModifiedOn` (`2024-01-01T10:00:00.123Z`; any fraction, any offset) in UTC.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// One entity of an answer as a record: `Id` (lowercased), `ModifiedOn`, and every column except OData's own
/// `@odata.*` annotations.
pub fn to_record(mut entity: Map<String, Value>) -> Result<RemoteRecord, ProviderError> {
    entity.retain(|k, _| !k.starts_with('@'));
    let id = entity
        .get("Id")
        .and_then(Value::as_str)
        .and_then(guid)
        .ok_or_else(|| ProviderError::Transient("an entity without a GUID Id".into()))?;
    let modified = entity
        .get("ModifiedOn")
        .and_then(Value::as_str)
        .and_then(parse_time)
        .ok_or_else(|| ProviderError::Transient(format!("entity {id} has no readable ModifiedOn")))?;
    Ok(RemoteRecord {
        remote_id: id,
        updated_at: modified,
        data: Value::Object(entity),
    })
}

/// What Creatio's answers mean beyond their status.
#[derive(Debug, Clone, Copy, Default)]
pub struct CreatioPolicy;

impl ResponsePolicy for CreatioPolicy {
    /// Creatio sends no quota headers, but IIS answers 503 with `Retry-After` while the application restarts (a
    /// deployment, an app-pool recycle): wait as long as it asks rather than back off blindly. A 503 without it is
    /// an ordinary transient failure.
    fn classify(&self, status: StatusCode, headers: &HeaderMap, _body: &[u8]) -> Option<ProviderError> {
        if status != StatusCode::SERVICE_UNAVAILABLE {
            return None;
        }
        retry_after(headers).map(|wait| ProviderError::RateLimited {
            wait: wait.max(Duration::from_millis(100)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identifiers_allow_only_odata_names() {
        assert!(is_identifier("Contact") && is_identifier("UsrCrmsyncdKey") && is_identifier("_x1"));
        for bad in ["", "1Contact", "Contact(1)", "Name eq 'x'", "a/b", "Nämé"] {
            assert!(!is_identifier(bad), "{bad:?}");
        }
    }

    #[test]
    fn guids_are_checked_and_lowercased() {
        assert_eq!(
            guid("410006E1-CA4E-4502-A9EC-E54D922D2C00").as_deref(),
            Some("410006e1-ca4e-4502-a9ec-e54d922d2c00")
        );
        assert_eq!(guid("410006e1-ca4e-4502-a9ec-e54d922d2c0"), None);
        assert_eq!(guid("410006e1ca4e4502a9ece54d922d2c00"), None);
        assert_eq!(guid("x10006e1-ca4e-4502-a9ec-e54d922d2c00"), None);
    }

    #[test]
    fn string_literals_double_their_quotes() {
        assert_eq!(string_literal("O'Brien"), "'O''Brien'");
        assert_eq!(string_literal(""), "''");
    }

    #[test]
    fn time_literals_are_floored_to_the_millisecond() {
        let t = parse_time("2024-01-01T10:00:00.1239999Z").unwrap();
        assert_eq!(time_literal(t), "2024-01-01T10:00:00.123Z");
        assert_eq!(
            time_literal(parse_time("2024-01-01T10:00:00Z").unwrap()),
            "2024-01-01T10:00:00.000Z"
        );
    }

    #[test]
    fn creatio_times_parse_with_any_fraction_and_offset() {
        let a = parse_time("2024-01-01T10:00:00.123Z").unwrap();
        assert_eq!(parse_time("2024-01-01T12:00:00.123+02:00").unwrap(), a);
        assert_eq!(
            parse_time("2024-01-01T10:00:00.1234567Z")
                .unwrap()
                .timestamp_nanos_opt(),
            Some(a.timestamp_nanos_opt().unwrap() + 456_700)
        );
        assert!(parse_time("2024-01-01 10:00:00").is_none());
    }

    #[test]
    fn entities_become_records_without_annotations() {
        let entity = json!({
            "@odata.etag": "W/\"1\"",
            "Id": "410006E1-CA4E-4502-A9EC-E54D922D2C00",
            "Name": "Ada",
            "ModifiedOn": "2024-01-01T10:00:00.123Z",
        });
        let record = to_record(entity.as_object().unwrap().clone()).unwrap();
        assert_eq!(record.remote_id, "410006e1-ca4e-4502-a9ec-e54d922d2c00");
        assert_eq!(record.updated_at, parse_time("2024-01-01T10:00:00.123Z").unwrap());
        assert!(record.data.get("@odata.etag").is_none());
        assert!(
            to_record(
                json!({"Id": "x", "ModifiedOn": "2024-01-01T10:00:00Z"})
                    .as_object()
                    .unwrap()
                    .clone()
            )
            .is_err()
        );
        let no_time = json!({"Id": "410006e1-ca4e-4502-a9ec-e54d922d2c00"});
        assert!(to_record(no_time.as_object().unwrap().clone()).is_err());
    }

    #[test]
    fn a_503_with_retry_after_waits_and_other_statuses_keep_their_meaning() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            CreatioPolicy.classify(StatusCode::SERVICE_UNAVAILABLE, &headers, b""),
            None
        );
        headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(
            CreatioPolicy.classify(StatusCode::SERVICE_UNAVAILABLE, &headers, b""),
            Some(ProviderError::RateLimited {
                wait: Duration::from_secs(7)
            })
        );
        assert_eq!(CreatioPolicy.classify(StatusCode::BAD_GATEWAY, &headers, b""), None);
    }
}
