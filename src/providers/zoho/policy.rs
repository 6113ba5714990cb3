//! What Zoho's answers say beyond their status: the credit headers (`X-RATELIMIT-LIMIT`, `-REMAINING`,
//! `-RESET` in epoch milliseconds), a 429 `TOO_MANY_REQUESTS` that is either spent credits (with the headers) or
//! the concurrency limit (without), and the error body `{code, details, message, status}` of a 4xx.

use std::time::Duration;

use chrono::Utc;
use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::providers::client::header_number;
use crate::providers::{ProviderError, ResponsePolicy};

/// The wait after a 429 that names no reset: the concurrency limit, which frees as soon as a request in flight
/// finishes.
const CONCURRENCY_WAIT: Duration = Duration::from_secs(2);

/// Zoho's credit headers and error bodies.
#[derive(Debug, Clone, Copy, Default)]
pub struct CreditHeaders;

/// How long until `X-RATELIMIT-RESET` (epoch milliseconds), if the answer has one.
fn until_reset(headers: &HeaderMap) -> Option<Duration> {
    let reset_ms = header_number(headers, "x-ratelimit-reset")?;
    let now_ms = Utc::now().timestamp_millis().max(0) as u64;
    Some(Duration::from_millis(reset_ms.saturating_sub(now_ms)))
}

/// `CODE: message` from Zoho's error body, for a bare error or the first failed entry of `data` (upsert) or
/// `watch` (subscriptions).
pub fn describe_error(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let entry = ["data", "watch"]
        .iter()
        .find_map(|list| {
            value
                .get(list)?
                .as_array()?
                .iter()
                .find(|e| e.get("status").and_then(Value::as_str) == Some("error"))
        })
        .unwrap_or(&value);
    let code = entry.get("code").and_then(Value::as_str)?;
    let message = entry.get("message").and_then(Value::as_str).unwrap_or("");
    let details = entry
        .get("details")
        .filter(|d| d.as_object().is_some_and(|m| !m.is_empty()));
    Some(match details {
        Some(details) => format!("{code}: {message} ({details})"),
        None => format!("{code}: {message}"),
    })
}

impl ResponsePolicy for CreditHeaders {
    /// A success that spent the org's last credit (another client shares them): hold back until the oldest
    /// charge leaves the window.
    fn pause_after_success(&self, headers: &HeaderMap) -> Option<Duration> {
        if header_number(headers, "x-ratelimit-remaining") != Some(0) {
            return None;
        }
        until_reset(headers)
    }

    fn throttle_wait(&self, headers: &HeaderMap) -> Option<Duration> {
        until_reset(headers)
    }

    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<ProviderError> {
        if status == StatusCode::TOO_MANY_REQUESTS {
            // Zoho sends no Retry-After: spent credits say when they free up; the concurrency limit does not.
            let wait = until_reset(headers)
                .unwrap_or(CONCURRENCY_WAIT)
                .max(Duration::from_millis(50));
            return Some(ProviderError::RateLimited { wait });
        }
        let refused = status.is_client_error()
            && !matches!(
                status,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::REQUEST_TIMEOUT
            );
        if refused {
            return describe_error(body).map(|message| ProviderError::Permanent(format!("{status}: {message}")));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, value.parse().unwrap());
        }
        h
    }

    #[test]
    fn spent_credits_pause_until_the_reset() {
        let reset = (Utc::now().timestamp_millis() + 3_000).to_string();
        let spent = headers(&[
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", reset.clone()),
        ]);
        let pause = CreditHeaders.pause_after_success(&spent).unwrap();
        assert!(
            pause > Duration::from_millis(2_500) && pause <= Duration::from_secs(3),
            "{pause:?}"
        );
        let left = headers(&[("x-ratelimit-remaining", "7".into()), ("x-ratelimit-reset", reset)]);
        assert_eq!(CreditHeaders.pause_after_success(&left), None);
    }

    #[test]
    fn a_429_waits_for_the_reset_or_briefly_for_a_concurrency_slot() {
        let body = br#"{"code":"TOO_MANY_REQUESTS","details":{},"message":"m","status":"error"}"#;
        let reset = (Utc::now().timestamp_millis() + 5_000).to_string();
        let Some(ProviderError::RateLimited { wait }) = CreditHeaders.classify(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("x-ratelimit-reset", reset)]),
            body,
        ) else {
            panic!("a 429 is a rate limit");
        };
        assert!(wait > Duration::from_secs(4), "{wait:?}");
        assert_eq!(
            CreditHeaders.classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), body),
            Some(ProviderError::RateLimited { wait: CONCURRENCY_WAIT })
        );
    }

    #[test]
    fn refusals_carry_zohos_code_and_message_and_auth_is_left_alone() {
        let upsert = br#"{"data":[{"code":"MANDATORY_NOT_FOUND","details":{"api_name":"Last_Name"},"message":"required field not found","status":"error"}]}"#;
        assert_eq!(
            CreditHeaders.classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), upsert),
            Some(ProviderError::Permanent(
                "400 Bad Request: MANDATORY_NOT_FOUND: required field not found ({\"api_name\":\"Last_Name\"})".into()
            ))
        );
        let coql = br#"{"code":"SYNTAX_ERROR","details":{},"message":"bad","status":"error"}"#;
        assert_eq!(
            CreditHeaders.classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), coql),
            Some(ProviderError::Permanent("400 Bad Request: SYNTAX_ERROR: bad".into()))
        );
        let invalid = br#"{"code":"INVALID_TOKEN","details":{},"message":"invalid oauth token","status":"error"}"#;
        assert_eq!(
            CreditHeaders.classify(StatusCode::UNAUTHORIZED, &HeaderMap::new(), invalid),
            None
        );
        assert_eq!(
            CreditHeaders.classify(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>"),
            None
        );
    }
}
