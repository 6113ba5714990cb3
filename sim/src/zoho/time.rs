//! Zoho's times: ISO-8601 at second precision, written in the org's time zone (`2024-03-01T17:30:05+05:30`).

use chrono::{DateTime, FixedOffset, SubsecRound, Utc};

/// `at` in the org's offset, at second precision, as Zoho writes every datetime field.
pub fn format_time(at: DateTime<Utc>, offset: FixedOffset) -> String {
    at.trunc_subsecs(0)
        .with_timezone(&offset)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// A datetime as Zoho accepts one (in COQL criteria, `If-Modified-Since`, `channel_expiry`): ISO-8601 with an
/// offset or `Z`.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Now, truncated to the second (Zoho keeps no finer precision).
pub fn now_s() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// An offset of `minutes` east of UTC (India, Zoho's home: +330).
pub fn offset(minutes: i32) -> FixedOffset {
    FixedOffset::east_opt(minutes * 60).expect("an offset within a day")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_the_org_offset_and_read_back_as_the_same_instant() {
        let at = parse_time("2024-03-01T12:00:05.900Z").unwrap();
        let text = format_time(at, offset(330));
        assert_eq!(text, "2024-03-01T17:30:05+05:30");
        assert_eq!(parse_time(&text).unwrap(), at.trunc_subsecs(0));
        assert_eq!(format_time(at, offset(-420)), "2024-03-01T05:00:05-07:00");
        assert!(parse_time("2024-03-01 12:00:05").is_none());
    }
}
