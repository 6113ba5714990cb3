//! Domain types shared by the providers, the sync engine and the store: a record as a CRM reports it and the
//! composite cursor that orders them.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One CRM record as a provider returned it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteRecord {
    /// The CRM's id for the record (HubSpot's numeric id, Odoo's integer id), as a string.
    pub remote_id: String,
    /// The CRM's "modified" timestamp for this version of the record.
    pub updated_at: DateTime<Utc>,
    /// The record's fields as JSON (an object).
    pub data: serde_json::Value,
}

impl RemoteRecord {
    /// The record's position in the (timestamp, id) order that cursors use.
    pub fn position(&self) -> Cursor {
        Cursor {
            ts: self.updated_at,
            id: self.remote_id.clone(),
        }
    }
}

/// A composite cursor: the (modified timestamp, id) of the last record committed locally. Timestamps alone are not
/// enough: CRMs write thousands of rows with one timestamp, and a page boundary can fall inside such a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub ts: DateTime<Utc>,
    pub id: String,
}

impl Cursor {
    pub fn new(ts: DateTime<Utc>, id: impl Into<String>) -> Self {
        Self { ts, id: id.into() }
    }
}

impl Ord for Cursor {
    fn cmp(&self, other: &Self) -> Ordering {
        self.ts.cmp(&other.ts).then_with(|| compare_ids(&self.id, &other.id))
    }
}

impl PartialOrd for Cursor {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Orders CRM ids the way the CRM does: numerically when both are integers (HubSpot, Odoo, Pipedrive), otherwise
/// as strings (Salesforce, Zoho, Creatio).
pub fn compare_ids(a: &str, b: &str) -> Ordering {
    match (a.parse::<u128>(), b.parse::<u128>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn cursor_orders_by_timestamp_then_numeric_id() {
        let t = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let later = t + chrono::Duration::seconds(1);
        assert!(
            Cursor::new(t, "9") < Cursor::new(t, "10"),
            "ids compare as numbers, not strings"
        );
        assert!(
            Cursor::new(t, "999") < Cursor::new(later, "1"),
            "timestamp wins over id"
        );
        assert!(
            Cursor::new(t, "a0") < Cursor::new(t, "b0"),
            "non-numeric ids compare as strings"
        );
    }
}
