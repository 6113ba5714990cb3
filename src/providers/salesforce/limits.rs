//! What Salesforce's answers say beyond their status: the org's API usage in `Sforce-Limit-Info` on every
//! answer, and its error bodies (`[{"message", "errorCode"}]`), whose codes decide the class of a failure — a 403
//! `REQUEST_LIMIT_EXCEEDED` is a rate limit, a 400 `UNABLE_TO_LOCK_ROW` is worth retrying, a 300 is a duplicate
//! external id that no retry can fix.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use crate::providers::{ProviderError, ResponsePolicy};

/// The error code of a dead query locator; the provider re-queries from its keyset position on it.
pub const INVALID_QUERY_LOCATOR: &str = "INVALID_QUERY_LOCATOR";

/// The wait after a `REQUEST_LIMIT_EXCEEDED` that the org's usage does not explain (its concurrent-request
/// limit on long transactions), and the shortest wait after any.
const LIMIT_EXCEEDED_FLOOR: Duration = Duration::from_secs(1);

/// The longest wait after a `REQUEST_LIMIT_EXCEEDED`: the allocation refills continuously, so look again
/// within the hour rather than after a whole day.
const LIMIT_EXCEEDED_CEILING: Duration = Duration::from_secs(3600);

/// Salesforce's quota header and error bodies, with the org's allocation shared with its other integrations.
#[derive(Debug, Clone, Copy)]
pub struct ApiUsage {
    /// Percent of the allocation left to the org's other integrations.
    reserve_percent: u8,
    /// The allocation's rolling period (24 hours).
    window: Duration,
}

/// One entry of a Salesforce error body.
#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(rename = "errorCode")]
    error_code: String,
    #[serde(default)]
    message: String,
}

/// The first `errorCode` and message of a Salesforce error body, if it is one.
pub fn api_error(body: &[u8]) -> Option<(String, String)> {
    let errors: Vec<ApiError> = serde_json::from_slice(body).ok()?;
    errors.into_iter().next().map(|e| (e.error_code, e.message))
}

/// `api-usage=18/5000` from `Sforce-Limit-Info` (which may list per-app usage too): (used, allocation).
pub fn api_usage(headers: &HeaderMap) -> Option<(u64, u64)> {
    let value = headers.get("sforce-limit-info")?.to_str().ok()?;
    let usage = value
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("api-usage="))?;
    let (used, max) = usage.split_once('/')?;
    let max: u64 = max.trim().parse().ok()?;
    (max > 0).then_some((used.trim().parse().ok()?, max))
}

impl ApiUsage {
    pub fn new(reserve_percent: u8, window: Duration) -> Self {
        Self {
            reserve_percent: reserve_percent.min(100),
            window,
        }
    }

    /// The usage this connection may bring the org to: the allocation less the reserve.
    fn budget(&self, max: u64) -> u64 {
        max - max * u64::from(self.reserve_percent) / 100
    }

    /// How long to hold back when the org has used `used` of `max`: nothing below the budget; past it, the
    /// allocation's period divided by the requests left before it is spent. The reserve is spread over at
    /// least a whole period that way (the last request left waits a whole period), so even when every request
    /// in the window was recent, they age out before the connection could spend the reserve; and a connection
    /// at the budget slows to a crawl rather than stopping dead.
    fn hold_back(&self, used: u64, max: u64) -> Option<Duration> {
        if used < self.budget(max) {
            return None;
        }
        let left = u32::try_from(max.saturating_sub(used)).unwrap_or(u32::MAX);
        Some(if left == 0 { self.window } else { self.window / left })
    }
}

impl ResponsePolicy for ApiUsage {
    fn pause_after_success(&self, headers: &HeaderMap) -> Option<Duration> {
        let (used, max) = api_usage(headers)?;
        self.hold_back(used, max)
    }

    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<ProviderError> {
        if status == StatusCode::MULTIPLE_CHOICES {
            return Some(ProviderError::Permanent(
                "300: several records hold this external id; make the field unique".into(),
            ));
        }
        let (code, message) = api_error(body)?;
        let text = format!("{status} {code}: {message}");
        Some(match code.as_str() {
            "REQUEST_LIMIT_EXCEEDED" => {
                let wait = api_usage(headers)
                    .and_then(|(used, max)| self.hold_back(used, max))
                    .unwrap_or(LIMIT_EXCEEDED_FLOOR)
                    .clamp(LIMIT_EXCEEDED_FLOOR, LIMIT_EXCEEDED_CEILING);
                tracing::warn!(
                    code,
                    message,
                    ?wait,
                    "Salesforce refused a request for the org's API limit."
                );
                ProviderError::RateLimited { wait }
            }
            "INVALID_SESSION_ID" | "INVALID_AUTH_HEADER" | "API_DISABLED_FOR_ORG" | "API_CURRENTLY_DISABLED" => {
                ProviderError::Auth(text)
            }
            // Contention and races that a retry gets past: a locked row, two upserts creating one external id
            // at once (the retry finds the record), a query the server gave up on.
            "UNABLE_TO_LOCK_ROW" | "DUPLICATE_VALUE" | "QUERY_TIMEOUT" | "SERVER_UNAVAILABLE" => {
                ProviderError::Transient(text)
            }
            _ if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT => ProviderError::Transient(text),
            // The user lacks rights on a record or field: dead-letter the write, do not park the connection.
            c if c.starts_with("INSUFFICIENT_ACCESS") => ProviderError::Permanent(text),
            _ if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN => ProviderError::Auth(text),
            _ => ProviderError::Permanent(text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("sforce-limit-info", value.parse().unwrap());
        h
    }

    #[test]
    fn usage_is_read_from_the_header_even_beside_per_app_usage() {
        assert_eq!(api_usage(&usage("api-usage=18/5000")), Some((18, 5000)));
        assert_eq!(
            api_usage(&usage(
                "api-usage=25/15000, per-app-api-usage=17/250(appName=sample-app)"
            )),
            Some((25, 15000))
        );
        assert_eq!(api_usage(&usage("api-usage=x/5000")), None);
        assert_eq!(api_usage(&usage("api-usage=1/0")), None);
        assert_eq!(api_usage(&HeaderMap::new()), None);
    }

    #[test]
    fn the_gate_holds_back_only_past_the_budget_and_longer_as_the_reserve_runs_out() {
        let policy = ApiUsage::new(20, Duration::from_secs(100));
        assert_eq!(policy.pause_after_success(&usage("api-usage=79/100")), None);
        // At the budget (80 of 100): the period over the 20 requests left.
        assert_eq!(
            policy.pause_after_success(&usage("api-usage=80/100")),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            policy.pause_after_success(&usage("api-usage=99/100")),
            Some(Duration::from_secs(100))
        );
        assert_eq!(
            policy.pause_after_success(&usage("api-usage=130/100")),
            Some(Duration::from_secs(100))
        );
        // Spending the whole reserve takes longer than a period.
        let total: Duration = (80..100).map(|used| policy.hold_back(used, 100).unwrap()).sum();
        assert!(total > Duration::from_secs(100), "{total:?}");
    }

    #[test]
    fn salesforce_errors_are_classified_by_their_code() {
        let policy = ApiUsage::new(20, Duration::from_secs(100));
        let body = |code: &str| format!(r#"[{{"message":"m","errorCode":"{code}"}}]"#).into_bytes();
        let classify = |status: u16, code: &str, headers: &HeaderMap| {
            policy
                .classify(StatusCode::from_u16(status).unwrap(), headers, &body(code))
                .unwrap()
        };
        let none = HeaderMap::new();
        assert_eq!(
            classify(403, "REQUEST_LIMIT_EXCEEDED", &usage("api-usage=100/100")),
            ProviderError::RateLimited {
                wait: Duration::from_secs(100)
            }
        );
        assert_eq!(
            classify(403, "REQUEST_LIMIT_EXCEEDED", &none),
            ProviderError::RateLimited {
                wait: LIMIT_EXCEEDED_FLOOR
            }
        );
        assert!(matches!(
            classify(401, "INVALID_SESSION_ID", &none),
            ProviderError::Auth(_)
        ));
        assert!(matches!(
            classify(400, "UNABLE_TO_LOCK_ROW", &none),
            ProviderError::Transient(_)
        ));
        assert!(matches!(
            classify(503, "SERVER_UNAVAILABLE", &none),
            ProviderError::Transient(_)
        ));
        assert!(matches!(
            classify(500, "UNKNOWN_EXCEPTION", &none),
            ProviderError::Transient(_)
        ));
        assert!(matches!(
            classify(403, "INSUFFICIENT_ACCESS_OR_READONLY", &none),
            ProviderError::Permanent(_)
        ));
        assert!(
            matches!(classify(400, "INVALID_FIELD", &none), ProviderError::Permanent(m) if m.contains("INVALID_FIELD"))
        );
        assert!(matches!(
            policy.classify(StatusCode::MULTIPLE_CHOICES, &none, b"[\"/a\",\"/b\"]"),
            Some(ProviderError::Permanent(_))
        ));
        assert_eq!(
            policy.classify(StatusCode::BAD_GATEWAY, &none, b"<html>502</html>"),
            None,
            "a body that is not Salesforce's leaves the default classification"
        );
    }
}
