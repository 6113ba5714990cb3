//! One trait that every CRM implements, and one module per CRM. A provider turns CRM HTTP into records, cursors,
//! webhook events and push outcomes, and classifies every failure.

pub mod client;
pub mod creatio;
mod error;
pub mod http_client;
pub mod hubspot;
pub mod klaviyo;
pub mod odoo;
pub mod pipedrive;
pub mod salesforce;
pub mod zoho;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method};
use url::Url;

pub use client::{CrmClient, CrmResponse, ResponsePolicy};
pub use error::{ProviderError, WebhookError};

use crate::auth::CredentialVault;
use crate::config::{ConnectionConfig, Problem, ProviderKind, RateLimits};
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
}

/// A write to push to the CRM, from the outbox.
#[derive(Debug, Clone)]
pub struct PushRequest {
    pub idempotency_key: String,
    pub object: String,
    pub match_key: Option<String>,
    pub match_value: Option<String>,
    pub properties: serde_json::Value,
    /// When the write was queued: a record that an earlier attempt of it created cannot be older (Pipedrive's
    /// push looks for one there when its search index lags).
    pub queued_at: DateTime<Utc>,
}

/// What the CRM's delete log says about an object since some time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletions {
    /// Records deleted since then, each with the time of its deletion.
    Since(Vec<(String, DateTime<Utc>)>),
    /// The CRM no longer keeps deletions that far back (Salesforce's `earliestDateAvailable` is later): only a
    /// comparison of every id can find them.
    TooOld,
}

/// The answer to a verified, stored webhook, for a CRM that expects a particular one (Salesforce's SOAP ack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAck {
    pub content_type: &'static str,
    pub body: Bytes,
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

    /// Whether the CRM keeps a log of deletions ([`Provider::deleted_since`]), read after a pull pass.
    fn has_delete_log(&self) -> bool {
        false
    }

    /// How often to read the delete log: after every pass (zero, the default), or less often where reading it
    /// is costly (HubSpot lists every archived record).
    fn delete_log_interval(&self) -> Duration {
        Duration::ZERO
    }

    /// Records of `object` deleted at or after `since`, from the CRM's delete log (Zoho's `/deleted`,
    /// Salesforce's `getDeleted`).
    async fn deleted_since(&self, _object: &str, _since: DateTime<Utc>) -> Result<Deletions, ProviderError> {
        Err(ProviderError::Permanent("this CRM keeps no delete log".into()))
    }

    /// Keeps the CRM's webhook subscriptions alive (Zoho's notification channels expire); called on every cycle.
    /// Returns when it next needs to run, or None when the CRM has nothing to maintain.
    async fn maintain_subscriptions(&self) -> Result<Option<DateTime<Utc>>, ProviderError> {
        Ok(None)
    }

    /// Applies one write idempotently; returns the CRM's id of the record written.
    async fn push(&self, write: &PushRequest) -> Result<String, ProviderError>;

    /// Verifies a webhook request (raw bytes, constant time, timestamp window) and splits it into events. Does
    /// no I/O: nothing is stored unless this returns Ok.
    fn verify_webhook(&self, request: &WebhookRequest<'_>) -> Result<Vec<NewWebhookEvent>, WebhookError>;

    /// What a stored event asks for: usually one action; a merge, say, deletes one record and reads another.
    fn interpret_event(&self, event: &serde_json::Value) -> Vec<EventAction>;

    /// The body of the 200 that acknowledges a stored webhook, when the CRM expects a particular one. None: the
    /// default JSON answer.
    fn webhook_ack(&self) -> Option<WebhookAck> {
        None
    }
}

/// What a provider is built from.
pub struct BuildContext<'a> {
    pub connection: &'a ConnectionConfig,
    /// The connection's rate gate (its own, or its group's).
    pub gate: Arc<RateGate>,
    pub metrics: Arc<Metrics>,
    /// `http.public_url`: HubSpot signs it, Zoho subscribes with it.
    pub public_url: Option<&'a Url>,
    /// Where OAuth connections keep rotated tokens (encrypted); None when no key is configured.
    pub vault: Option<CredentialVault>,
}

impl BuildContext<'_> {
    /// A client for the connection, behind its gate, reading quota headers with `policy`.
    pub fn client(&self, policy: Arc<dyn ResponsePolicy>) -> anyhow::Result<CrmClient> {
        Ok(CrmClient::new(
            self.connection,
            self.gate.clone(),
            self.metrics.clone(),
            policy,
        )?)
    }

    /// `{public_url}/webhooks/{id}`: where the CRM delivers this connection's webhooks.
    pub fn webhook_url(&self) -> Option<String> {
        self.public_url
            .map(|u| format!("{}/webhooks/{}", u.as_str().trim_end_matches('/'), self.connection.id))
    }
}

/// A CRM's config struct: what the shared config code needs to know about it, and how to build its provider.
/// Each `providers/<crm>/config.rs` implements it; `config::connection` lists the CRMs.
pub trait ProviderSettings: Send + Sync {
    /// The key that lists what to sync (`objects`, `models`, `modules`), for error messages.
    fn objects_key(&self) -> &'static str;

    /// What this connection syncs.
    fn objects(&self) -> &[String];

    /// The budget when the connection sets no `rate_limit`: the CRM's documented limit.
    fn default_rate_limit(&self) -> RateLimits;

    /// How far behind its cursor each pull re-reads, when `overlap` is not set.
    fn default_overlap(&self) -> Duration;

    /// Whether the provider needs `http.public_url`.
    fn needs_public_url(&self) -> bool {
        false
    }

    /// Whether the connection authenticates with OAuth2 (and so needs the credential key to keep tokens).
    fn uses_oauth(&self) -> bool {
        false
    }

    /// Problems that span the provider's own keys; each key is relative to the connection (`webhook_token`).
    fn problems(&self) -> Vec<Problem> {
        Vec::new()
    }

    /// Builds the provider.
    fn build(&self, ctx: BuildContext<'_>) -> anyhow::Result<Arc<dyn Provider>>;
}

/// Builds the provider of a connection.
pub fn build(ctx: BuildContext<'_>) -> anyhow::Result<Arc<dyn Provider>> {
    ctx.connection.provider.settings().build(ctx)
}
