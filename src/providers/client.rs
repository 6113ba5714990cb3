//! The one way a provider talks HTTP to its CRM: through the connection's rate gate, with timeouts, metrics and a
//! classification of every failure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::ProviderError;
use crate::config::{ConnectionConfig, ProviderKind};
use crate::metrics::Metrics;
use crate::ratelimit::RateGate;

/// The wait when a 429 names none.
const DEFAULT_THROTTLE_WAIT: Duration = Duration::from_secs(10);
/// Never honour a Retry-After longer than this (a broken header must not park a connection for days).
const MAX_THROTTLE_WAIT: Duration = Duration::from_secs(3600);

/// A successful (2xx) answer.
#[derive(Debug, Clone)]
pub struct CrmResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl CrmResponse {
    /// Parses the body as JSON; an unreadable body (truncated, not JSON) is transient.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ProviderError::Transient(format!("unreadable answer ({} bytes): {e}", self.body.len())))
    }
}

/// A connection's HTTP client.
#[derive(Debug, Clone)]
pub struct CrmClient {
    http: reqwest::Client,
    gate: Arc<RateGate>,
    metrics: Arc<Metrics>,
    connection: String,
    provider: ProviderKind,
}

impl CrmClient {
    pub fn new(config: &ConnectionConfig, gate: Arc<RateGate>, metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("crmsyncd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            gate,
            metrics,
            connection: config.id.clone(),
            provider: config.provider.kind(),
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends `request` through the rate gate. Returns the answer when it is 2xx; otherwise the classified error
    /// (401/403 auth, 429 rate limited — which also pauses the gate —, 5xx transient, other 4xx permanent with
    /// the CRM's message). `X-HubSpot-RateLimit-Remaining: 0` pauses the gate for the interval it names.
    pub async fn send(&self, operation: &str, request: reqwest::RequestBuilder) -> Result<CrmResponse, ProviderError> {
        let waited = self.gate.acquire().await;
        self.metrics.rate_limit_waited(&self.connection, waited);
        let started = Instant::now();
        let result = request.send().await;
        let provider = self.provider.as_str();
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                let status = if e.is_timeout() { "timeout" } else { "error" };
                self.metrics
                    .crm_request(&self.connection, provider, operation, status, started.elapsed());
                return Err(ProviderError::Transient(describe_transport_error(&e)));
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await;
        self.metrics.crm_request(
            &self.connection,
            provider,
            operation,
            status.as_str(),
            started.elapsed(),
        );
        let body = body.map_err(|e| ProviderError::Transient(describe_transport_error(&e)))?;

        if status.is_success() {
            self.observe_quota_headers(&headers);
            return Ok(CrmResponse { status, headers, body });
        }
        let message = error_message(&body);
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS => {
                // The CRM's own Retry-After is the precise wait; the quota interval is only a fallback.
                let wait = retry_after(&headers)
                    .or_else(|| {
                        header_number(&headers, "x-hubspot-ratelimit-interval-milliseconds").map(Duration::from_millis)
                    })
                    .unwrap_or(DEFAULT_THROTTLE_WAIT)
                    .min(MAX_THROTTLE_WAIT);
                self.metrics.throttled(&self.connection);
                self.gate.pause_for(wait);
                ProviderError::RateLimited { wait }
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ProviderError::Auth(format!("{status}: {message}")),
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
                ProviderError::Transient(format!("{status}: {message}"))
            }
            s => ProviderError::Permanent(format!("{s}: {message}")),
        })
    }

    /// A success that spent the CRM's last request of its window (another client shares the token): hold back
    /// for one request's share of the window, so the next request is unlikely to meet a 429.
    fn observe_quota_headers(&self, headers: &HeaderMap) {
        if header_number(headers, "x-hubspot-ratelimit-remaining") == Some(0) {
            let interval = header_number(headers, "x-hubspot-ratelimit-interval-milliseconds").unwrap_or(10_000);
            let max = header_number(headers, "x-hubspot-ratelimit-max").unwrap_or(1).max(1);
            self.gate
                .pause_for(Duration::from_millis(interval / max).min(MAX_THROTTLE_WAIT));
        }
    }
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `Retry-After` in seconds (the HTTP-date form is rare from CRMs and treated as absent).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let seconds: f64 = value.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds).min(MAX_THROTTLE_WAIT))
}

/// The CRM's own error message from a JSON error body (`message`, `error.message`), else the start of the body.
fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        for path in [&["message"][..], &["error", "data", "message"], &["error", "message"]] {
            let mut cur = &v;
            let mut found = true;
            for key in path {
                match cur.get(key) {
                    Some(next) => cur = next,
                    None => {
                        found = false;
                        break;
                    }
                }
            }
            if found && let Some(s) = cur.as_str() {
                return s.to_string();
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    text.chars().take(300).collect()
}

/// A transport error without the URL (which could carry a token in a query string).
fn describe_transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "broken response body"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_caps_them() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after", "99999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_THROTTLE_WAIT));
        h.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[tokio::test]
    async fn spent_hubspot_quota_on_a_success_pauses_the_gate() {
        use crmsyncd_sim::server::{self, Handler, SimRequest, SimResponse};

        struct Spent;
        impl Handler for Spent {
            async fn handle(&self, _: SimRequest) -> SimResponse {
                SimResponse::json(StatusCode::OK, &serde_json::json!({}))
                    .with_header("x-hubspot-ratelimit-max", "10")
                    .with_header("x-hubspot-ratelimit-remaining", "0")
                    .with_header("x-hubspot-ratelimit-interval-milliseconds", "10000")
            }
        }
        let running = server::spawn(([127, 0, 0, 1], 0).into(), std::sync::Arc::new(Spent))
            .await
            .unwrap();
        let config: crate::config::Config = crate::config::Config::parse(
            &format!(
                "[[connection]]\nid = \"h\"\nprovider = \"hubspot\"\nbase_url = \"{}\"\naccess_token = \"t\"\nobjects = [\"contacts\"]\n",
                running.base_url()
            ),
            std::path::Path::new("t.toml"),
            &|_| None,
        )
        .unwrap();
        let connection = &config.connections[0];
        let gate = Arc::new(RateGate::new(connection.rate_limit));
        let client = CrmClient::new(connection, gate.clone(), Arc::new(Metrics::new())).unwrap();
        assert!(gate.pause_remaining().is_none());
        client
            .send("search", client.http().get(running.base_url()))
            .await
            .unwrap();
        let pause = gate.pause_remaining().expect("the gate paused");
        // One request's share of the window: 10 s / 10.
        assert!(
            pause > Duration::from_millis(900) && pause <= Duration::from_secs(1),
            "{pause:?}"
        );
        running.shutdown().await;
    }

    #[test]
    fn error_message_prefers_the_crms_message() {
        assert_eq!(
            error_message(br#"{"status":"error","message":"Property values were not valid"}"#),
            "Property values were not valid"
        );
        assert_eq!(
            error_message(br#"{"error":{"code":200,"data":{"message":"Access Denied"}}}"#),
            "Access Denied"
        );
        assert_eq!(
            error_message(b"<html>502 Bad Gateway</html>"),
            "<html>502 Bad Gateway</html>"
        );
    }
}
