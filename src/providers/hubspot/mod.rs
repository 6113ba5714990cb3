//! HubSpot: pull through the search API, webhooks signed with the app's client secret, push with batch upsert
//! on a unique property.

mod config;
pub mod search;
pub mod webhook;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

pub use config::{HubSpotConfig, SignatureVersion};
use search::SearchState;

use super::client::header_number;
use super::{
    CrmClient, Deletions, EventAction, Fetched, Page, PageToken, Provider, ProviderError, PushRequest, ResponsePolicy,
    WebhookError, WebhookRequest,
};
use crate::auth::Credential;
use crate::config::{ConnectionConfig, ProviderKind};
use crate::model::RemoteRecord;
use crate::store::NewWebhookEvent;

/// Batch read and batch upsert take at most this many inputs.
const BATCH_LIMIT: usize = 100;

/// A HubSpot connection.
pub struct HubSpot {
    config: HubSpotConfig,
    base: String,
    client: CrmClient,
    credential: Credential,
}

/// HubSpot's quota headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuotaHeaders;

impl ResponsePolicy for QuotaHeaders {
    /// A success that spent the last request of the window (another client shares the token): hold back for one
    /// request's share of the window, so the next request is unlikely to meet a 429.
    fn pause_after_success(&self, headers: &http::HeaderMap) -> Option<Duration> {
        if header_number(headers, "x-hubspot-ratelimit-remaining") != Some(0) {
            return None;
        }
        let interval = header_number(headers, "x-hubspot-ratelimit-interval-milliseconds").unwrap_or(10_000);
        let max = header_number(headers, "x-hubspot-ratelimit-max").unwrap_or(1).max(1);
        Some(Duration::from_millis(interval / max))
    }

    /// A 429 without Retry-After: the window's length.
    fn throttle_wait(&self, headers: &http::HeaderMap) -> Option<Duration> {
        header_number(headers, "x-hubspot-ratelimit-interval-milliseconds").map(Duration::from_millis)
    }
}

impl HubSpot {
    pub fn new(
        connection: &ConnectionConfig,
        config: HubSpotConfig,
        client: CrmClient,
        credential: Credential,
    ) -> Self {
        Self {
            config,
            base: connection.base_url.as_str().trim_end_matches('/').to_string(),
            client,
            credential,
        }
    }

    fn url(&self, object: &str, tail: &str) -> String {
        format!("{}/crm/v3/objects/{object}/{tail}", self.base)
    }

    async fn get(&self, operation: &str, url: String) -> Result<super::CrmResponse, ProviderError> {
        self.client
            .send_authorized(operation, &self.credential, |http, token| {
                http.get(&url).bearer_auth(token.expose())
            })
            .await
    }

    async fn post(&self, operation: &str, url: String, body: &Value) -> Result<super::CrmResponse, ProviderError> {
        self.client
            .send_authorized(operation, &self.credential, |http, token| {
                http.post(&url).bearer_auth(token.expose()).json(body)
            })
            .await
    }
}

/// The property that holds an object's last-modified time.
pub fn modified_property(object: &str) -> &'static str {
    if object == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    }
}

#[derive(Debug, Deserialize)]
struct SearchAnswer {
    #[serde(default)]
    results: Vec<ApiRecord>,
}

#[derive(Debug, Deserialize)]
struct ApiRecord {
    id: String,
    #[serde(default)]
    properties: serde_json::Map<String, Value>,
    #[serde(rename = "updatedAt")]
    updated_at: Option<String>,
}

/// `GET /crm/v3/objects/{type}?archived=true`: archived records in id order, with `archivedAt`.
#[derive(Debug, Deserialize)]
struct ArchivedAnswer {
    #[serde(default)]
    results: Vec<ArchivedRecord>,
    paging: Option<Paging>,
}

#[derive(Debug, Deserialize)]
struct ArchivedRecord {
    id: String,
    #[serde(rename = "archivedAt")]
    archived_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Paging {
    next: Option<NextPage>,
}

#[derive(Debug, Deserialize)]
struct NextPage {
    after: String,
}

#[derive(Debug, Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    results: Vec<ApiRecord>,
}

impl ApiRecord {
    fn into_record(self, object: &str) -> Result<RemoteRecord, ProviderError> {
        let modified = self
            .properties
            .get(modified_property(object))
            .and_then(Value::as_str)
            .or(self.updated_at.as_deref())
            .and_then(parse_time)
            .ok_or_else(|| ProviderError::Transient(format!("record {} has no readable modified time", self.id)))?;
        Ok(RemoteRecord {
            remote_id: self.id,
            updated_at: modified,
            data: Value::Object(self.properties),
        })
    }
}

/// HubSpot times: ISO-8601 (`2024-01-01T00:00:00.000Z`) or epoch milliseconds.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(ms) = s.parse::<i64>() {
        return DateTime::from_timestamp_millis(ms);
    }
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

#[async_trait]
impl Provider for HubSpot {
    fn kind(&self) -> ProviderKind {
        ProviderKind::HubSpot
    }

    fn objects(&self) -> &[String] {
        &self.config.objects
    }

    async fn pull_page(
        &self,
        object: &str,
        since: DateTime<Utc>,
        page: Option<PageToken>,
    ) -> Result<Page, ProviderError> {
        let state = match page {
            Some(token) => {
                serde_json::from_value(token).map_err(|e| ProviderError::Permanent(format!("bad page token: {e}")))?
            }
            None => SearchState::start(since.timestamp_millis()),
        };
        let limit = self.config.page_size.clamp(1, 200);
        let body = state.request(modified_property(object), &self.config.properties_for(object), limit);
        let answer: SearchAnswer = self.post("search", self.url(object, "search"), &body).await?.json()?;
        let records = answer
            .results
            .into_iter()
            .map(|r| r.into_record(object))
            .collect::<Result<Vec<_>, _>>()?;
        let last_ms = records.iter().map(|r| r.updated_at.timestamp_millis()).max();
        let last_id = records.iter().filter_map(|r| r.remote_id.parse::<u64>().ok()).max();
        let next = state.next(records.len() as u32, limit, last_ms, last_id);
        Ok(Page {
            records,
            next: next.map(|s| serde_json::to_value(s).expect("search state serialises")),
        })
    }

    async fn fetch(&self, object: &str, ids: &[String]) -> Result<Fetched, ProviderError> {
        let mut fetched = Fetched::default();
        let properties = self.config.properties_for(object);
        for chunk in ids.chunks(BATCH_LIMIT) {
            let mut props = properties.clone();
            props.push(modified_property(object).to_string());
            let body = json!({
                "properties": props,
                "inputs": chunk.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            });
            let answer: BatchAnswer = self
                .post("batch_read", self.url(object, "batch/read"), &body)
                .await?
                .json()?;
            let mut found_ids = HashSet::new();
            for r in answer.results {
                found_ids.insert(r.id.clone());
                fetched.found.push(r.into_record(object)?);
            }
            fetched
                .missing
                .extend(chunk.iter().filter(|id| !found_ids.contains(*id)).cloned());
        }
        Ok(fetched)
    }

    fn has_delete_log(&self) -> bool {
        true
    }

    fn delete_log_interval(&self) -> Duration {
        self.config.archived_poll_interval
    }

    /// HubSpot keeps archived records (90 days) and lists them in id order, not by when they were archived: the
    /// whole list is read and filtered on `archivedAt`.
    async fn deleted_since(&self, object: &str, since: DateTime<Utc>) -> Result<Deletions, ProviderError> {
        let mut deleted = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/crm/v3/objects/{object}?archived=true&limit=100&properties=hs_object_id",
                self.base
            );
            if let Some(after) = &after {
                url.push_str("&after=");
                url.push_str(
                    &percent_encoding::utf8_percent_encode(after, percent_encoding::NON_ALPHANUMERIC).to_string(),
                );
            }
            let answer: ArchivedAnswer = self.get("list_archived", url).await?.json()?;
            for record in answer.results {
                if let Some(at) = record.archived_at.as_deref().and_then(parse_time)
                    && at >= since
                {
                    deleted.push((record.id, at));
                }
            }
            match answer.paging.and_then(|p| p.next).map(|n| n.after) {
                Some(next) if after.as_ref() != Some(&next) => after = Some(next),
                Some(_) => {
                    return Err(ProviderError::Transient(
                        "the archived list returned the same page again; no progress".into(),
                    ));
                }
                None => return Ok(Deletions::Since(deleted)),
            }
        }
    }

    async fn push(&self, write: &PushRequest) -> Result<String, ProviderError> {
        let (Some(key), Some(value)) = (&write.match_key, &write.match_value) else {
            return Err(ProviderError::Permanent(
                "HubSpot writes need a unique match property (e.g. \"match\": {\"email\": ...}) so a retry cannot create twice".into(),
            ));
        };
        let body = json!({"inputs": [{"id": value, "idProperty": key, "properties": write.properties}]});
        let answer: BatchAnswer = self
            .post("batch_upsert", self.url(&write.object, "batch/upsert"), &body)
            .await?
            .json()?;
        answer
            .results
            .into_iter()
            .next()
            .map(|r| r.id)
            .ok_or_else(|| ProviderError::Transient("batch upsert answered without a result".into()))
    }

    fn verify_webhook(&self, request: &WebhookRequest<'_>) -> Result<Vec<NewWebhookEvent>, WebhookError> {
        let headers = webhook::verify(
            request,
            self.config.webhook_secret.as_ref(),
            self.config.signature_version,
            self.config.webhook_tolerance,
        )?;
        webhook::parse_events(request.body, headers)
    }

    fn interpret_event(&self, event: &Value) -> Vec<EventAction> {
        webhook::interpret(event, &self.config.objects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_both_hubspot_forms() {
        let a = parse_time("2024-01-01T00:00:00.123Z").unwrap();
        let b = parse_time("1704067200123").unwrap();
        assert_eq!(a, b);
        assert!(parse_time("yesterday").is_none());
    }
}
