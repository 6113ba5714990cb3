//! What Pipedrive's answers say beyond their status: the 2-second window in `x-ratelimit-limit`, `-remaining` and
//! `-reset` (seconds until the window frees), and its error bodies (`{"success": false, "error": "..."}`).
//!
//! A 429 normally means a window is full for a moment. A long run of them means something else, most likely a
//! spent daily token budget that resets at midnight, while the headers still name a 2-second window: after a few
//! in a row the waits grow from 30 s to 15 minutes, so a connection does not knock every 2 s all day. Any
//! success ends the run.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::providers::client::retry_after;
use crate::providers::{ProviderError, ResponsePolicy};

/// Pipedrive's rate-limit window, for when a header is missing.
const WINDOW: Duration = Duration::from_secs(2);
/// Never wait longer than this on a header's say-so (a broken header must not park a connection for days).
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// 429s in a row answered as the headers say before the waits start to grow.
const PATIENT_THROTTLES: u32 = 3;
/// The first grown wait, and the longest.
const GROWN_WAIT: Duration = Duration::from_secs(30);
const LONGEST_GROWN_WAIT: Duration = Duration::from_secs(15 * 60);

/// Pipedrive's quota headers and error bodies, and the count of 429s in a row.
#[derive(Debug, Default)]
pub struct QuotaHeaders {
    throttled_in_a_row: AtomicU32,
}

impl QuotaHeaders {
    /// The wait for one more 429 whose headers ask for `asked`: what they ask, or longer once 429s have kept
    /// coming.
    fn throttled(&self, asked: Duration) -> Duration {
        let run = self.throttled_in_a_row.fetch_add(1, Ordering::AcqRel) + 1;
        if run <= PATIENT_THROTTLES {
            return asked;
        }
        let doublings = (run - PATIENT_THROTTLES - 1).min(16);
        let grown = GROWN_WAIT.saturating_mul(1 << doublings).min(LONGEST_GROWN_WAIT);
        asked.max(grown)
    }
}

/// `x-ratelimit-reset`: how long until the window frees (whole seconds; fractions accepted).
fn reset(headers: &HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers.get("x-ratelimit-reset")?.to_str().ok()?.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds).min(MAX_WAIT))
}

fn remaining(headers: &HeaderMap) -> Option<u64> {
    headers.get("x-ratelimit-remaining")?.to_str().ok()?.trim().parse().ok()
}

/// The message and code of Pipedrive's JSON error body; None for anything else (a proxy's HTML page).
fn pipedrive_error(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    if value.get("success") != Some(&Value::Bool(false)) {
        return None;
    }
    let message = value.get("error").and_then(Value::as_str).unwrap_or("unknown error");
    Some(match value.get("code").and_then(Value::as_str) {
        Some(code) => format!("{message} ({code})"),
        None => message.to_string(),
    })
}

impl ResponsePolicy for QuotaHeaders {
    /// A success that spent the window (another client shares the token, or the plan allows less than the
    /// configured `rate_limit`): hold the gate until the window frees.
    fn pause_after_success(&self, headers: &HeaderMap) -> Option<Duration> {
        self.throttled_in_a_row.store(0, Ordering::Release);
        (remaining(headers) == Some(0)).then(|| reset(headers).unwrap_or(WINDOW))
    }

    /// A 429 that is not Pipedrive's JSON (a proxy's) without Retry-After: until the window frees.
    fn throttle_wait(&self, headers: &HeaderMap) -> Option<Duration> {
        Some(self.throttled(reset(headers).unwrap_or(WINDOW)))
    }

    /// Pipedrive's own error bodies, classified with their message; anything else gets the default treatment.
    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<ProviderError> {
        let message = pipedrive_error(body)?;
        let text = format!("{status}: {message}");
        Some(match status {
            StatusCode::TOO_MANY_REQUESTS => {
                let asked = retry_after(headers)
                    .or_else(|| reset(headers))
                    .unwrap_or(WINDOW)
                    .clamp(Duration::from_millis(100), MAX_WAIT);
                ProviderError::RateLimited {
                    wait: self.throttled(asked),
                }
            }
            // 402: the company's subscription lapsed; like a refused token, nothing works until a person acts.
            StatusCode::UNAUTHORIZED | StatusCode::PAYMENT_REQUIRED | StatusCode::FORBIDDEN => {
                ProviderError::Auth(text)
            }
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => ProviderError::Transient(text),
            _ => ProviderError::Permanent(text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, value.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_spent_window_pauses_until_its_reset() {
        let policy = QuotaHeaders::default();
        let spent = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "2")]);
        assert_eq!(policy.pause_after_success(&spent), Some(Duration::from_secs(2)));
        let no_reset = headers(&[("x-ratelimit-remaining", "0")]);
        assert_eq!(policy.pause_after_success(&no_reset), Some(WINDOW));
        let left = headers(&[("x-ratelimit-remaining", "3"), ("x-ratelimit-reset", "2")]);
        assert_eq!(policy.pause_after_success(&left), None);
        assert_eq!(policy.pause_after_success(&HeaderMap::new()), None);
    }

    #[test]
    fn a_long_run_of_429s_waits_longer_and_longer_until_a_success() {
        let policy = QuotaHeaders::default();
        let h = headers(&[("x-ratelimit-reset", "2")]);
        let waits: Vec<u64> = (0..8).map(|_| policy.throttle_wait(&h).unwrap().as_secs()).collect();
        assert_eq!(waits, [2, 2, 2, 30, 60, 120, 240, 480]);
        let many: Vec<u64> = (0..4).map(|_| policy.throttle_wait(&h).unwrap().as_secs()).collect();
        assert_eq!(many, [900, 900, 900, 900], "never longer than 15 minutes");
        policy.pause_after_success(&HeaderMap::new());
        assert_eq!(
            policy.throttle_wait(&h),
            Some(Duration::from_secs(2)),
            "a success ends the run"
        );
    }

    #[test]
    fn a_429_waits_for_retry_after_else_the_reset() {
        let body = br#"{"success":false,"error":"Request over limit","errorCode":429}"#;
        let policy = QuotaHeaders::default();
        let reset_only = headers(&[("x-ratelimit-reset", "1")]);
        assert_eq!(
            policy.classify(StatusCode::TOO_MANY_REQUESTS, &reset_only, body),
            Some(ProviderError::RateLimited {
                wait: Duration::from_secs(1)
            })
        );
        let both = headers(&[("x-ratelimit-reset", "1"), ("retry-after", "5")]);
        assert_eq!(
            policy.classify(StatusCode::TOO_MANY_REQUESTS, &both, body),
            Some(ProviderError::RateLimited {
                wait: Duration::from_secs(5)
            })
        );
        assert_eq!(policy.throttle_wait(&reset_only), Some(Duration::from_secs(1)));
        let absurd = headers(&[("x-ratelimit-reset", "99999999")]);
        assert_eq!(QuotaHeaders::default().throttle_wait(&absurd), Some(MAX_WAIT));
    }

    #[test]
    fn pipedrive_errors_are_classified_with_their_message() {
        let h = HeaderMap::new();
        let policy = QuotaHeaders::default();
        let body = |message: &str| format!(r#"{{"success":false,"error":"{message}","code":"ERR_X"}}"#);
        assert_eq!(
            policy.classify(StatusCode::UNAUTHORIZED, &h, body("unauthorized access").as_bytes()),
            Some(ProviderError::Auth(
                "401 Unauthorized: unauthorized access (ERR_X)".into()
            ))
        );
        assert!(matches!(
            policy.classify(StatusCode::BAD_REQUEST, &h, body("Unknown field: x").as_bytes()),
            Some(ProviderError::Permanent(m)) if m.contains("Unknown field: x")
        ));
        assert!(matches!(
            policy.classify(
                StatusCode::INTERNAL_SERVER_ERROR,
                &h,
                body("Internal server error").as_bytes()
            ),
            Some(ProviderError::Transient(_))
        ));
        assert!(matches!(
            policy.classify(StatusCode::PAYMENT_REQUIRED, &h, body("Payment required").as_bytes()),
            Some(ProviderError::Auth(_))
        ));
        assert_eq!(
            policy.classify(StatusCode::BAD_GATEWAY, &h, b"<html>502 Bad Gateway</html>"),
            None,
            "a proxy's page gets the default classification"
        );
    }
}
