//! The one way a provider talks HTTP to its CRM: through the connection's rate gate, with timeouts, metrics and a
//! classification of every failure. What differs between CRMs (quota headers, odd status codes) is a
//! [`ResponsePolicy`]; how a request proves who sends it is a [`Credential`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::ProviderError;
use crate::auth::Credential;
use crate::config::{ConnectionConfig, ProviderKind, Secret};
use crate::metrics::{Metrics, RequestOutcome};
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

/// What one CRM's answers say beyond their status: quota headers, and statuses that mean something else there.
pub trait ResponsePolicy: Send + Sync + 'static {
    /// After a 2xx: how long to hold the gate because the CRM's quota headers say its budget is spent (another
    /// client shares it). None: go on.
    fn pause_after_success(&self, _headers: &HeaderMap) -> Option<Duration> {
        None
    }

    /// After a 429 without `Retry-After`: how long the CRM's own headers say to wait.
    fn throttle_wait(&self, _headers: &HeaderMap) -> Option<Duration> {
        None
    }

    /// A classification of a non-2xx answer that overrides the default one (Salesforce's 403
    /// `REQUEST_LIMIT_EXCEEDED` is a rate limit, not an auth failure). A `RateLimited` answer pauses the gate.
    fn classify(&self, _status: StatusCode, _headers: &HeaderMap, _body: &[u8]) -> Option<ProviderError> {
        None
    }
}

/// A policy that reads nothing beyond the status and `Retry-After`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainPolicy;

impl ResponsePolicy for PlainPolicy {}

/// A connection's HTTP client.
#[derive(Clone)]
pub struct CrmClient {
    http: reqwest::Client,
    gate: Arc<RateGate>,
    metrics: Arc<Metrics>,
    policy: Arc<dyn ResponsePolicy>,
    connection: String,
    provider: ProviderKind,
}

impl std::fmt::Debug for CrmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrmClient")
            .field("connection", &self.connection)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl CrmClient {
    pub fn new(
        config: &ConnectionConfig,
        gate: Arc<RateGate>,
        metrics: Arc<Metrics>,
        policy: Arc<dyn ResponsePolicy>,
    ) -> Result<Self, reqwest::Error> {
        // Shared with every connection of the same timeouts (`http_client`): one pool, one TLS setup.
        let http = super::http_client::shared(config.connect_timeout, config.request_timeout)?;
        Ok(Self {
            http,
            gate,
            metrics,
            policy,
            connection: config.id.clone(),
            provider: config.provider.kind(),
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The connection id, for log lines.
    pub fn connection(&self) -> &str {
        &self.connection
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Sends a request that `build` makes with the credential's current token. When the CRM refuses the token
    /// and the credential can be refreshed (OAuth), refreshes it once and sends again; a second refusal, or a
    /// refresh the CRM refuses, is an auth failure.
    pub async fn send_authorized<F>(
        &self,
        operation: &str,
        credential: &Credential,
        build: F,
    ) -> Result<CrmResponse, ProviderError>
    where
        F: Fn(&reqwest::Client, &Secret) -> reqwest::RequestBuilder,
    {
        let token = credential.token(self).await?;
        match self.send(operation, build(&self.http, &token)).await {
            Err(ProviderError::Auth(message)) if credential.is_refreshable() => {
                tracing::info!(connection = %self.connection, operation, "The CRM refused the access token; refreshing it once.");
                credential.rejected(&token).await;
                let fresh = credential.token(self).await?;
                self.send(operation, build(&self.http, &fresh))
                    .await
                    .map_err(|e| match e {
                        ProviderError::Auth(again) => {
                            ProviderError::Auth(format!("{again} (also before the token refresh: {message})"))
                        }
                        other => other,
                    })
            }
            other => other,
        }
    }

    /// Sends `request` through the rate gate. Returns the answer when it is 2xx; otherwise the classified error
    /// (the policy's classification first; then 401/403 auth, 429 rate limited — which also pauses the gate —,
    /// 5xx transient, other 4xx permanent with the CRM's message). After a 2xx the policy may pause the gate
    /// because the CRM's quota headers say the budget is spent.
    pub async fn send(&self, operation: &str, request: reqwest::RequestBuilder) -> Result<CrmResponse, ProviderError> {
        let permit = self.gate.acquire().await;
        self.metrics.rate_limit_waited(&self.connection, permit.waited);
        let started = Instant::now();
        let result = request.send().await;
        let provider = self.provider.as_str();
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                let outcome = if e.is_timeout() {
                    RequestOutcome::Timeout
                } else {
                    RequestOutcome::Error
                };
                self.metrics
                    .crm_request(&self.connection, provider, operation, outcome, started.elapsed());
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
            RequestOutcome::of_status(status),
            started.elapsed(),
        );
        drop(permit);
        let body = body.map_err(|e| ProviderError::Transient(describe_transport_error(&e)))?;

        if status.is_success() {
            if let Some(pause) = self.policy.pause_after_success(&headers) {
                self.gate.pause_for(pause.min(MAX_THROTTLE_WAIT));
            }
            return Ok(CrmResponse { status, headers, body });
        }
        if let Some(error) = self.policy.classify(status, &headers, &body) {
            if let ProviderError::RateLimited { wait } = &error {
                self.metrics.throttled(&self.connection);
                self.gate.pause_for((*wait).min(MAX_THROTTLE_WAIT));
            }
            return Err(error);
        }
        let message = error_message(&body);
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS => {
                // The CRM's own Retry-After is the precise wait; its quota headers are only a fallback.
                let wait = retry_after(&headers)
                    .or_else(|| self.policy.throttle_wait(&headers))
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
}

/// A header's value as an unsigned number.
pub fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `Retry-After` in seconds (the HTTP-date form is rare from CRMs and treated as absent).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let seconds: f64 = value.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds).min(MAX_THROTTLE_WAIT))
}

/// The CRM's own error message from a JSON error body (`message`, `error.message`), else the start of the body.
pub fn error_message(body: &[u8]) -> String {
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
        let gate = Arc::new(RateGate::new(&connection.rate_limit));
        let client = CrmClient::new(
            connection,
            gate.clone(),
            Arc::new(Metrics::new()),
            Arc::new(crate::providers::hubspot::QuotaHeaders),
        )
        .unwrap();
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
