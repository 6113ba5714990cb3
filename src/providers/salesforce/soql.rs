//! The SOQL a pull sends, Salesforce's datetime forms, and the page token that carries a pass from one batch to
//! the next: the query locator's `nextRecordsUrl` and, should the locator die, the keyset position
//! (SystemModstamp, Id) of the last row read, from which a fresh query resumes without skipping or repeating.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Parses Salesforce's datetimes: `2013-05-20T20:49:32.000+0000` (its JSON form), or RFC 3339.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A SOQL datetime literal, rounded down to the second (SystemModstamp's precision, so nothing is lost):
/// `2024-01-01T00:00:00Z`.
pub fn literal_time(t: DateTime<Utc>) -> String {
    let whole = DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t);
    whole.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A SOQL string literal, with quotes and backslashes escaped.
pub fn literal_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A position in SystemModstamp, Id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyset {
    pub modstamp: DateTime<Utc>,
    pub id: String,
}

/// Where a pull pass stands between two pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageState {
    /// The pass's lower bound (inclusive).
    pub since: DateTime<Utc>,
    /// The query locator's next batch (a path under the instance URL).
    pub next: String,
    /// The last row read, if any: a fresh query resumes after it when the locator is gone.
    pub after: Option<Keyset>,
}

/// The changes of `object` at or after `since`, or after `after` when resuming, in (SystemModstamp, Id) order.
pub fn changes_query(select: &str, object: &str, since: DateTime<Utc>, after: Option<&Keyset>) -> String {
    let filter = match after {
        None => format!("SystemModstamp >= {}", literal_time(since)),
        Some(k) => {
            let at = literal_time(k.modstamp);
            format!(
                "SystemModstamp > {at} OR (SystemModstamp = {at} AND Id > {})",
                literal_text(&k.id)
            )
        }
    };
    format!("SELECT {select} FROM {object} WHERE {filter} ORDER BY SystemModstamp ASC, Id ASC")
}

/// Specific records of `object`.
pub fn by_ids_query(select: &str, object: &str, ids: &[String]) -> String {
    let list: Vec<String> = ids.iter().map(|id| literal_text(id)).collect();
    format!("SELECT {select} FROM {object} WHERE Id IN ({})", list.join(", "))
}

/// Every live id of `object`, after `after` when resuming.
pub fn ids_query(object: &str, after: Option<&str>) -> String {
    match after {
        None => format!("SELECT Id FROM {object} ORDER BY Id ASC"),
        Some(id) => format!(
            "SELECT Id FROM {object} WHERE Id > {} ORDER BY Id ASC",
            literal_text(id)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salesforce_times_parse_and_literals_round_down_to_the_second() {
        let t = parse_time("2013-05-20T20:49:32.000+0000").unwrap();
        assert_eq!(parse_time("2013-05-20T20:49:32Z"), Some(t));
        assert_eq!(parse_time("2013-05-20T22:49:32.000+0200"), Some(t));
        assert!(parse_time("20/05/2013").is_none());
        let later = t + chrono::Duration::milliseconds(999);
        assert_eq!(literal_time(later), "2013-05-20T20:49:32Z");
    }

    #[test]
    fn text_literals_cannot_break_out_of_the_query() {
        assert_eq!(literal_text("a'b\\c"), r"'a\'b\\c'");
        assert_eq!(
            by_ids_query("Id", "Account", &["x') OR (Id != '".into()]),
            r"SELECT Id FROM Account WHERE Id IN ('x\') OR (Id != \'')"
        );
    }

    #[test]
    fn a_resumed_query_starts_right_after_the_last_row() {
        let t = parse_time("2024-01-01T00:00:00.000+0000").unwrap();
        assert_eq!(
            changes_query("FIELDS(STANDARD)", "Account", t, None),
            "SELECT FIELDS(STANDARD) FROM Account WHERE SystemModstamp >= 2024-01-01T00:00:00Z ORDER BY SystemModstamp ASC, Id ASC"
        );
        let after = Keyset {
            modstamp: t,
            id: "001Hu0000000001AAA".into(),
        };
        assert_eq!(
            changes_query("Id", "Account", t, Some(&after)),
            "SELECT Id FROM Account WHERE SystemModstamp > 2024-01-01T00:00:00Z OR (SystemModstamp = 2024-01-01T00:00:00Z AND Id > '001Hu0000000001AAA') ORDER BY SystemModstamp ASC, Id ASC"
        );
        assert_eq!(
            ids_query("Contact", Some("003")),
            "SELECT Id FROM Contact WHERE Id > '003' ORDER BY Id ASC"
        );
    }

    #[test]
    fn page_state_round_trips_through_json() {
        let state = PageState {
            since: Utc::now(),
            next: "/services/data/v62.0/query/01g-2000".into(),
            after: Some(Keyset {
                modstamp: Utc::now(),
                id: "001".into(),
            }),
        };
        let value = serde_json::to_value(&state).unwrap();
        assert_eq!(serde_json::from_value::<PageState>(value).unwrap(), state);
    }
}
