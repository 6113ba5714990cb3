//! Salesforce's wire details: its datetime format, its 15/18-character record ids, and its error bodies (a JSON
//! array of `{message, errorCode}`).

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use http::StatusCode;
use serde_json::json;

use crate::server::SimResponse;

/// `2013-05-20T20:49:32.000+0000`: how Salesforce writes every datetime in JSON.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Parses a SOQL datetime literal or a query parameter: `2024-01-01T00:00:00Z`, `...000+0000`, `...+00:00`,
/// with or without fractional seconds.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .ok()
        .map(|n| Utc.from_utc_datetime(&n))
}

/// Salesforce keeps datetimes to the second: everything written in one second shares its SystemModstamp.
pub fn truncate_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).expect("a whole second of a valid time is valid")
}

/// Rounds `t` down to a multiple of `step` since the epoch (getDeleted works in whole minutes).
pub fn floor_to(t: DateTime<Utc>, step: std::time::Duration) -> DateTime<Utc> {
    let step = step.as_millis().max(1) as i64;
    let ms = t.timestamp_millis();
    DateTime::from_timestamp_millis(ms - ms.rem_euclid(step)).expect("a floored valid time is valid")
}

/// The three-letter key prefix of an object's ids (Account `001`, Contact `003`, ...; custom objects `a0X`).
pub fn key_prefix(object: &str) -> &'static str {
    match object {
        "Account" => "001",
        "Contact" => "003",
        "Opportunity" => "006",
        "Lead" => "00Q",
        "Case" => "500",
        _ => "a00",
    }
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The 18-character id of the `n`th record with `prefix`: the prefix, a pod marker and a base-62 counter that
/// sorts in ASCII order (so id order is creation order, as in a real org), plus the case-safe suffix.
pub fn record_id(prefix: &str, n: u64) -> String {
    let mut digits = [b'0'; 10];
    let mut rest = n;
    for d in digits.iter_mut().rev() {
        *d = BASE62[(rest % 62) as usize];
        rest /= 62;
    }
    let id15 = format!(
        "{prefix}Hu{}",
        std::str::from_utf8(&digits).expect("base-62 digits are ASCII")
    );
    with_suffix(&id15)
}

/// The 18-character form of a 15-character id: for each block of five characters, a letter that encodes which
/// of them are upper case, so the id survives case-insensitive systems.
pub fn with_suffix(id15: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let mut id = id15.to_string();
    for chunk in id15.as_bytes().chunks(5) {
        let mut bits = 0usize;
        for (i, c) in chunk.iter().enumerate() {
            if c.is_ascii_uppercase() {
                bits |= 1 << i;
            }
        }
        id.push(ALPHABET[bits] as char);
    }
    id
}

/// Salesforce's error answer: `[{"message": ..., "errorCode": ...}]`.
pub fn error(status: StatusCode, code: &str, message: &str) -> SimResponse {
    SimResponse::json(status, &json!([{"message": message, "errorCode": code}]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_in_salesforce_form() {
        let t = parse_time("2013-05-20T20:49:32.000+0000").unwrap();
        assert_eq!(format_time(t), "2013-05-20T20:49:32.000+0000");
        assert_eq!(parse_time("2013-05-20T20:49:32Z"), Some(t));
        assert_eq!(parse_time("2013-05-20T22:49:32+02:00"), Some(t));
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn ids_sort_in_creation_order_and_carry_the_case_safe_suffix() {
        let a = record_id("001", 61);
        let b = record_id("001", 62);
        assert_eq!(a.len(), 18);
        assert!(a < b, "{a} < {b}");
        // Salesforce's documented example: 001A0000006Vm9r -> 001A0000006Vm9rIAC.
        assert_eq!(with_suffix("001A0000006Vm9r"), "001A0000006Vm9rIAC");
    }
}
