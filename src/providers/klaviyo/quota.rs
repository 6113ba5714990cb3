//! What Klaviyo's answers say beyond their status: the `RateLimit-*` headers of a success (the steady window's
//! state), the 429 that carries only `Retry-After` (and says the wait again in its `detail`), and the JSON:API
//! error document whose `code` and `detail` become the error's message.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::providers::client::{header_number, retry_after};
use crate::providers::{ProviderError, ResponsePolicy};

/// The wait after a 429 that names none: Klaviyo's burst window.
const BURST_WINDOW: Duration = Duration::from_secs(1);

/// Klaviyo's response policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct KlaviyoQuota;

impl ResponsePolicy for KlaviyoQuota {
    /// A success that spent the steady window (another integration shares the account's quota): hold the gate
    /// until the window resets, so the next request does not meet a 429.
    fn pause_after_success(&self, headers: &HeaderMap) -> Option<Duration> {
        if header_number(headers, "ratelimit-remaining") != Some(0) {
            return None;
        }
        let reset = header_number(headers, "ratelimit-reset").unwrap_or(60);
        Some(Duration::from_secs(reset.max(1)))
    }

    fn throttle_wait(&self, headers: &HeaderMap) -> Option<Duration> {
        header_number(headers, "ratelimit-reset").map(Duration::from_secs)
    }

    /// Every non-2xx answer, with Klaviyo's own `code: detail` as the message.
    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<ProviderError> {
        let message = format!("{status}: {}", error_message(body));
        Some(match status {
            StatusCode::TOO_MANY_REQUESTS => ProviderError::RateLimited {
                wait: retry_after(headers)
                    .or_else(|| wait_in_detail(body))
                    .or_else(|| self.throttle_wait(headers))
                    .unwrap_or(BURST_WINDOW),
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ProviderError::Auth(message),
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => ProviderError::Transient(message),
            _ => ProviderError::Permanent(message),
        })
    }
}

/// `code: detail` of the first error of a JSON:API error document; the start of the body otherwise.
pub fn error_message(body: &[u8]) -> String {
    let first = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("errors")?.get(0).cloned());
    match first {
        Some(error) => {
            let text = |k: &str| error.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let (code, detail) = (text("code"), text("detail"));
            let detail = if detail.is_empty() { text("title") } else { detail };
            if code.is_empty() {
                detail
            } else {
                format!("{code}: {detail}")
            }
        }
        None => crate::providers::client::error_message(body),
    }
}

/// "Request was throttled. Expected available in 7 seconds." → 7 s.
fn wait_in_detail(body: &[u8]) -> Option<Duration> {
    let detail = serde_json::from_slice::<Value>(body).ok()?["errors"][0]["detail"]
        .as_str()?
        .to_string();
    let (_, rest) = detail.split_once("available in ")?;
    let seconds: u64 = rest.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_secs(seconds.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const THROTTLED: &[u8] = br#"{"errors":[{"id":"x","status":429,"code":"throttled","title":"Request was throttled.","detail":"Request was throttled. Expected available in 7 seconds.","source":{}}]}"#;

    #[test]
    fn a_spent_steady_window_pauses_until_it_resets() {
        let p = KlaviyoQuota;
        let spent = headers(&[
            ("ratelimit-limit", "700"),
            ("ratelimit-remaining", "0"),
            ("ratelimit-reset", "42"),
        ]);
        assert_eq!(p.pause_after_success(&spent), Some(Duration::from_secs(42)));
        let room = headers(&[("ratelimit-remaining", "3"), ("ratelimit-reset", "42")]);
        assert_eq!(p.pause_after_success(&room), None);
        assert_eq!(p.pause_after_success(&HeaderMap::new()), None);
    }

    #[test]
    fn a_429_waits_for_retry_after_else_the_detail_else_a_second() {
        let p = KlaviyoQuota;
        let with_header = p.classify(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "3")]),
            THROTTLED,
        );
        assert_eq!(
            with_header,
            Some(ProviderError::RateLimited {
                wait: Duration::from_secs(3)
            })
        );
        let from_detail = p.classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), THROTTLED);
        assert_eq!(
            from_detail,
            Some(ProviderError::RateLimited {
                wait: Duration::from_secs(7)
            })
        );
        let bare = p.classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), b"");
        assert_eq!(bare, Some(ProviderError::RateLimited { wait: BURST_WINDOW }));
    }

    #[test]
    fn every_status_is_classified_with_klaviyos_message() {
        let p = KlaviyoQuota;
        let body = br#"{"errors":[{"status":409,"code":"duplicate_profile","title":"Conflict.","detail":"A profile already exists with one of these identifiers."}]}"#;
        match p.classify(StatusCode::CONFLICT, &HeaderMap::new(), body) {
            Some(ProviderError::Permanent(m)) => {
                assert!(m.contains("duplicate_profile: A profile already exists"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        let h = HeaderMap::new();
        assert!(matches!(
            p.classify(StatusCode::UNAUTHORIZED, &h, b"{}"),
            Some(ProviderError::Auth(_))
        ));
        assert!(matches!(
            p.classify(StatusCode::FORBIDDEN, &h, b"{}"),
            Some(ProviderError::Auth(_))
        ));
        assert!(matches!(
            p.classify(StatusCode::BAD_GATEWAY, &h, b"<html>"),
            Some(ProviderError::Transient(_))
        ));
        assert!(matches!(
            p.classify(StatusCode::BAD_REQUEST, &h, b"{}"),
            Some(ProviderError::Permanent(_))
        ));
        assert!(matches!(
            p.classify(StatusCode::NOT_FOUND, &h, b"{}"),
            Some(ProviderError::Permanent(_))
        ));
    }
}
