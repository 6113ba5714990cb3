//! The position inside one pull pass, and Pipedrive's times.
//!
//! A pass lists `updated_since <= update_time < updated_until` sorted by `(update_time, id)` and follows
//! Pipedrive's cursor. `updated_until` is fixed when the pass starts and carried in every page token: a record
//! changed during the pass gets an `update_time` at or after it, so it leaves this pass's window (the next pass
//! reads it) instead of moving behind the cursor and making the pass chase every change. Pipedrive stamps
//! `update_time` to the second, so both bounds are whole seconds: `since` rounded down (inclusive, so nothing
//! is lost), `until` the pass's start rounded down (exclusive: the current second is left to the next pass,
//! which still gets writes made later in it).

use chrono::{DateTime, NaiveDateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::providers::{PageToken, ProviderError};

/// Where a pass is: its fixed window and Pipedrive's cursor for the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassToken {
    /// `updated_since`, RFC 3339.
    pub since: String,
    /// `updated_until`, RFC 3339, fixed for the whole pass.
    pub until: String,
    /// Pipedrive's `next_cursor`; None on the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl PassToken {
    /// The first page of a pass over records changed at or after `since`, started at `now`.
    pub fn start(since: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        Self {
            since: format_time(since.trunc_subsecs(0)),
            until: format_time(now.trunc_subsecs(0)),
            cursor: None,
        }
    }

    /// Reads a token this provider made.
    pub fn from_token(token: PageToken) -> Result<Self, ProviderError> {
        serde_json::from_value(token).map_err(|e| ProviderError::Permanent(format!("bad page token: {e}")))
    }

    /// The token of the next page of the same pass.
    pub fn next(&self, cursor: String) -> PageToken {
        let next = Self {
            cursor: Some(cursor),
            ..self.clone()
        };
        serde_json::to_value(next).expect("pass tokens serialise")
    }

    /// Whether the window holds no second at all (a clock that went backwards): nothing to ask.
    pub fn is_empty(&self) -> bool {
        match (parse_time(&self.since), parse_time(&self.until)) {
            (Some(since), Some(until)) => since >= until,
            _ => false,
        }
    }
}

/// `2025-01-01T10:20:00Z`: how API v2 takes and gives times.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A Pipedrive time: RFC 3339 (API v2, webhooks v2) or `YYYY-MM-DD HH:MM:SS` in UTC (API v1).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|t| t.and_utc())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32, ms: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, h, m, s).unwrap() + chrono::Duration::milliseconds(ms)
    }

    #[test]
    fn a_pass_window_rounds_both_bounds_down_to_the_second() {
        let token = PassToken::start(at(10, 0, 5, 900), at(10, 30, 0, 400));
        assert_eq!(
            token.since, "2025-01-01T10:00:05Z",
            "inclusive: rounding down loses nothing"
        );
        assert_eq!(
            token.until, "2025-01-01T10:30:00Z",
            "exclusive: the current second is left for the next pass"
        );
        assert_eq!(token.cursor, None);
        assert!(!token.is_empty());
    }

    #[test]
    fn later_pages_keep_the_window_and_carry_the_cursor() {
        let first = PassToken::start(at(10, 0, 0, 0), at(11, 0, 0, 0));
        let second = PassToken::from_token(first.next("abc".into())).unwrap();
        assert_eq!(second.since, first.since);
        assert_eq!(second.until, first.until, "until is fixed for the whole pass");
        assert_eq!(second.cursor.as_deref(), Some("abc"));
        let third = PassToken::from_token(second.next("def".into())).unwrap();
        assert_eq!(third.until, first.until);
        assert_eq!(third.cursor.as_deref(), Some("def"));
    }

    #[test]
    fn a_window_that_holds_no_second_is_empty() {
        assert!(PassToken::start(at(10, 0, 0, 500), at(10, 0, 0, 900)).is_empty());
        assert!(PassToken::start(at(10, 0, 1, 0), at(10, 0, 0, 0)).is_empty());
    }

    #[test]
    fn a_token_from_elsewhere_is_refused() {
        assert!(matches!(
            PassToken::from_token(serde_json::json!({"after": 3})),
            Err(ProviderError::Permanent(_))
        ));
    }

    #[test]
    fn both_pipedrive_time_formats_parse_as_utc() {
        assert_eq!(parse_time("2025-01-01T10:20:00Z"), Some(at(10, 20, 0, 0)));
        assert_eq!(parse_time("2025-01-01T12:20:00+02:00"), Some(at(10, 20, 0, 0)));
        assert_eq!(parse_time("2025-01-01 10:20:00"), Some(at(10, 20, 0, 0)));
        assert_eq!(parse_time("2025-01-01T10:20:00.250Z"), Some(at(10, 20, 0, 250)));
        assert_eq!(parse_time("yesterday"), None);
    }
}
