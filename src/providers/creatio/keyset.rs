//! Incremental pull paged by keyset on (`ModifiedOn`, `Id`), never by `$skip`.
//!
//! `$skip` is an offset into the current result: when a row earlier in the order is saved between two pages it
//! leaves its place, every later row shifts back by one, and the next page silently skips a row. So each page is
//! a fresh query for the rows strictly after the last one read, in the server's own order:
//! `ModifiedOn gt T or (ModifiedOn eq T and Id gt G)`, ordered `ModifiedOn asc,Id asc`. One query form covers an
//! equal-timestamp block of any size, and no query pages deep.
//!
//! The position is the last row *as the server ordered it*, with `ModifiedOn` kept exactly as the server wrote
//! it: the client never re-orders GUIDs or re-formats times itself, so the next page starts where the server's
//! `Id gt` and `ModifiedOn eq` say, whatever collation the server's database uses for GUIDs (Creatio's simulator
//! orders them as lowercase strings, as [`crate::model::compare_ids`] does).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::odata::{guid, parse_time, time_literal};
use crate::providers::{PageToken, ProviderError};

/// The last row a page returned: where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// `ModifiedOn` exactly as the server sent it (a valid OData date-time literal).
    pub modified_on: String,
    /// Its lowercase GUID.
    pub id: String,
}

impl Position {
    /// The position of an entity as the server returned it.
    pub fn of(entity: &Map<String, Value>) -> Result<Position, ProviderError> {
        let modified_on = entity
            .get("ModifiedOn")
            .and_then(Value::as_str)
            .filter(|s| parse_time(s).is_some())
            .ok_or_else(|| ProviderError::Transient("an entity without a readable ModifiedOn".into()))?;
        let id = entity
            .get("Id")
            .and_then(Value::as_str)
            .and_then(guid)
            .ok_or_else(|| ProviderError::Transient("an entity without a GUID Id".into()))?;
        Ok(Position {
            modified_on: modified_on.to_string(),
            id,
        })
    }

    /// Reads a page token back, refusing one that could smuggle anything but a date-time and a GUID into a
    /// filter.
    pub fn from_token(token: PageToken) -> Result<Position, ProviderError> {
        let position: Position =
            serde_json::from_value(token).map_err(|e| ProviderError::Permanent(format!("bad page token: {e}")))?;
        if parse_time(&position.modified_on).is_none() || guid(&position.id).as_deref() != Some(&position.id) {
            return Err(ProviderError::Permanent(
                "bad page token: not a date-time and a GUID".into(),
            ));
        }
        Ok(position)
    }

    pub fn to_token(&self) -> PageToken {
        serde_json::to_value(self).expect("a position serialises")
    }

    /// Every row strictly after this position in (ModifiedOn, Id) order.
    pub fn after_filter(&self) -> String {
        let (t, id) = (&self.modified_on, &self.id);
        format!("ModifiedOn gt {t} or (ModifiedOn eq {t} and Id gt {id})")
    }
}

/// The first page's filter: every row modified at or after `since`.
pub fn since_filter(since: DateTime<Utc>) -> String {
    format!("ModifiedOn ge {}", time_literal(since))
}

/// The order every page asks for; [`Position::after_filter`] continues it.
pub const ORDER: &str = "ModifiedOn asc,Id asc";

/// Where the next page starts, given a page of `returned` rows out of `limit` asked whose last entity is `last`.
/// A short page ends the pass.
pub fn next(
    returned: usize,
    limit: usize,
    last: Option<&Map<String, Value>>,
) -> Result<Option<Position>, ProviderError> {
    match last {
        Some(last) if returned >= limit => Position::of(last).map(Some),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entity(modified: &str, id: &str) -> Map<String, Value> {
        json!({"Id": id, "ModifiedOn": modified}).as_object().unwrap().clone()
    }

    #[test]
    fn a_full_page_continues_strictly_after_its_last_row_as_the_server_wrote_it() {
        let last = entity("2024-01-01T10:00:00.1234567Z", "410006E1-CA4E-4502-A9EC-E54D922D2C00");
        let next = next(200, 200, Some(&last)).unwrap().unwrap();
        assert_eq!(next.modified_on, "2024-01-01T10:00:00.1234567Z", "no precision is lost");
        assert_eq!(
            next.after_filter(),
            "ModifiedOn gt 2024-01-01T10:00:00.1234567Z or (ModifiedOn eq 2024-01-01T10:00:00.1234567Z and Id gt 410006e1-ca4e-4502-a9ec-e54d922d2c00)"
        );
        assert!(!next.after_filter().contains("skip"));
    }

    #[test]
    fn a_short_page_ends_the_pass() {
        let last = entity("2024-01-01T10:00:00Z", "410006e1-ca4e-4502-a9ec-e54d922d2c00");
        assert_eq!(next(10, 200, Some(&last)).unwrap(), None);
        assert_eq!(next(0, 200, None).unwrap(), None);
    }

    #[test]
    fn the_first_page_is_inclusive_of_since() {
        let since = parse_time("2024-01-01T10:00:00.5009Z").unwrap();
        assert_eq!(since_filter(since), "ModifiedOn ge 2024-01-01T10:00:00.500Z");
    }

    #[test]
    fn tokens_round_trip_and_forged_ones_are_refused() {
        let p = Position {
            modified_on: "2024-01-01T10:00:00.000Z".into(),
            id: "410006e1-ca4e-4502-a9ec-e54d922d2c00".into(),
        };
        assert_eq!(Position::from_token(p.to_token()).unwrap(), p);
        for bad in [
            json!({"modified_on": "2024-01-01T10:00:00Z) or (1 eq 1", "id": p.id}),
            json!({"modified_on": "2024-01-01T10:00:00Z", "id": "1 or 1 eq 1"}),
            json!({"modified_on": "2024-01-01T10:00:00Z", "id": "410006E1-CA4E-4502-A9EC-E54D922D2C00"}),
            json!("garbage"),
        ] {
            assert!(matches!(Position::from_token(bad), Err(ProviderError::Permanent(_))));
        }
    }

    #[test]
    fn a_full_page_whose_last_row_is_unreadable_is_transient() {
        let last = entity("yesterday", "410006e1-ca4e-4502-a9ec-e54d922d2c00");
        assert!(matches!(next(1, 1, Some(&last)), Err(ProviderError::Transient(_))));
    }
}
