//! One trait that every CRM implements, and one module per CRM. A provider turns CRM HTTP into records, cursors,
//! webhook events and push outcomes, and classifies every failure.

pub mod client;
mod error;
pub mod hubspot;
pub mod odoo;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method};
use url::Url;

pub use client::{CrmClient, CrmResponse};
pub use error::{ProviderError, WebhookError};

use crate::config::{ConnectionConfig, ProviderConfig, ProviderKind};
use crate::metrics::Metrics;
use crate::model::RemoteRecord;
use crate::ratelimit::RateGate;
use crate::store::NewWebhookEvent;

/// An opaque position inside one pull pass, owned by the provider that made it.
pub type PageToken = serde_json::Value;

/// One page of a pull.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Records changed at or after the pass's start, in ascending (modified, id) order where the CRM allows.
    pub records: Vec<RemoteRecord>,
    /// Where the next page starts; None when the pass is complete.
    pub next: Option<PageToken>,
}

/// The answer to a fetch of specific ids.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    pub found: Vec<RemoteRecord>,
    /// Ids the CRM does not have (any more): deleted or archived.
    pub missing: Vec<String>,
}

/// A webhook request as it reached the endpoint, before any parsing.
#[derive(Debug, Clone)]
pub struct WebhookRequest<'a> {
    pub method: &'a Method,
    /// The path and query exactly as received (`/webhooks/hubspot-main?x=1`).
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
    /// The daemon's public URL, which HubSpot signs.
    pub public_url: Option<&'a Url>,
    pub now: DateTime<Utc>,
}

/// What a stored webhook event asks the connection to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    /// Read these records from the CRM and store them.
    Fetch { object: String, ids: Vec<String> },
    /// The CRM says these records are gone, as of `at` (the event's time; None when it gives none).
    Delete {
        object: String,
        ids: Vec<String>,
        at: Option<DateTime<Utc>>,
    },
    /// Nothing to do (an object this connection does not sync, an event kind it does not use).
    Ignore,
}

/// A write to push to the CRM, from the outbox.
#[derive(Debug, Clone)]
pub struct PushRequest {
    pub idempotency_key: String,
    pub object: String,
    pub match_key: Option<String>,
    pub match_value: Option<String>,
    pub properties: serde_json::Value,
}

/// A CRM.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    fn kind(&self) -> ProviderKind;

    /// The objects this connection syncs.
    fn objects(&self) -> &[String];

    /// One page of the records modified at or after `since`; `page` is None for a pass's first page.
    async fn pull_page(
        &self,
        object: &str,
        since: DateTime<Utc>,
        page: Option<PageToken>,
    ) -> Result<Page, ProviderError>;

    /// Reads specific records (after a webhook); ids the CRM no longer has come back in `missing`.
    async fn fetch(&self, object: &str, ids: &[String]) -> Result<Fetched, ProviderError>;

    /// How often to compare id sets to find deletes no event reports (Odoo's hard deletes); None if not needed.
    fn sweep_interval(&self) -> Option<Duration> {
        None
    }

    /// Every live id of `object`, for the delete sweep.
    async fn list_ids(&self, _object: &str) -> Result<Vec<String>, ProviderError> {
        Err(ProviderError::Permanent("this CRM does not list ids".into()))
    }

    /// Applies one write idempotently; returns the CRM's id of the record written.
    async fn push(&self, write: &PushRequest) -> Result<String, ProviderError>;

    /// Verifies a webhook request (raw bytes, constant time, timestamp window) and splits it into events. Does
    /// no I/O: nothing is stored unless this returns Ok.
    fn verify_webhook(&self, request: &WebhookRequest<'_>) -> Result<Vec<NewWebhookEvent>, WebhookError>;

    /// What a stored event asks for.
    fn interpret_event(&self, event: &serde_json::Value) -> EventAction;
}

/// Builds the provider for `config`, with its client behind `gate`.
pub fn build(
    config: &ConnectionConfig,
    gate: Arc<RateGate>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<dyn Provider>> {
    let client = CrmClient::new(config, gate, metrics)?;
    Ok(match &config.provider {
        ProviderConfig::Hubspot(h) => Arc::new(hubspot::HubSpot::new(config, h.clone(), client)),
        ProviderConfig::Odoo(o) => Arc::new(odoo::Odoo::new(config, o.clone(), client)),
    })
}
