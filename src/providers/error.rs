//! How a provider failure tells the caller what to do next. Messages often quote what the CRM answered, and a CRM
//! may echo our request (token included), so every message prints through [`redact`].

use std::time::Duration;

use crate::config::redact;
use crate::metrics::RetryReason;

/// A failed call to a CRM, classified by what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The CRM answered 429 or its quota headers say it is spent: wait, then retry.
    #[error("rate limited by the CRM; retry after {wait:?}")]
    RateLimited { wait: Duration },
    /// 5xx, timeout, connection error, unreadable answer: retry with backoff.
    #[error("transient CRM failure: {}", redact(.0))]
    Transient(String),
    /// 401/403 or a refused login: stop calling the CRM until the credentials change.
    #[error("the CRM refused the credentials: {}", redact(.0))]
    Auth(String),
    /// The CRM rejected the request itself (400, 422, a validation error): retrying cannot help.
    #[error("the CRM rejected the request: {}", redact(.0))]
    Permanent(String),
}

impl ProviderError {
    /// The `reason` label for `crmsyncd_retries_total`, or None when the error is not retried.
    pub fn retry_reason(&self) -> Option<RetryReason> {
        match self {
            ProviderError::RateLimited { .. } => Some(RetryReason::RateLimited),
            ProviderError::Transient(_) => Some(RetryReason::Transient),
            ProviderError::Auth(_) | ProviderError::Permanent(_) => None,
        }
    }
}

/// Why a webhook request was refused; each maps to exactly one HTTP status in `http::webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Missing or wrong signature or token, or webhooks not configured for the connection.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// The signed timestamp is outside the allowed window.
    #[error("stale or future timestamp")]
    Stale,
    /// Verified, but the body is not what the CRM sends.
    #[error("malformed body: {}", redact(.0))]
    Malformed(String),
}
