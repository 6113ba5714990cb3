//! Pipedrive: pull through API v2 lists (`updated_since` / a fixed `updated_until`, sorted by `update_time`,
//! cursor-paged), deletes from webhooks and an id sweep, webhooks v2 verified by HTTP Basic credentials, and
//! push by search-then-write on an idempotency key kept in a custom field.

mod config;
mod paging;
mod push;
mod quota;
pub mod webhook;
mod wire;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use http::Method;

pub use config::{MAX_PAGE_SIZE, OBJECTS, PipedriveConfig};
pub use paging::{PassToken, format_time, parse_time};
pub use quota::QuotaHeaders;

use super::{
    CrmClient, EventAction, Fetched, Page, PageToken, Provider, ProviderError, PushRequest, WebhookError,
    WebhookRequest,
};
use crate::config::{ConnectionConfig, ProviderKind};
use crate::ratelimit::RateGate;
use crate::store::NewWebhookEvent;
use wire::{ListAnswer, SearchAnswer};

/// Most ids one `ids=` filter may name.
const MAX_IDS: usize = 100;

/// A Pipedrive connection.
pub struct Pipedrive {
    config: PipedriveConfig,
    base: String,
    client: CrmClient,
    /// The search endpoints' own, smaller budget, taken before the connection's gate.
    search_gate: RateGate,
}

impl Pipedrive {
    pub fn new(connection: &ConnectionConfig, config: PipedriveConfig, client: CrmClient) -> Self {
        Self {
            search_gate: RateGate::single(config.search_rate_limit),
            base: connection.base_url.as_str().trim_end_matches('/').to_string(),
            config,
            client,
        }
    }

    /// A request to `/api/v2/{path}` with the API token.
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .http()
            .request(method, format!("{}/api/v2/{path}", self.base))
            .header("x-api-token", self.config.api_token.expose())
    }

    /// `GET /api/v2/{object}?...`.
    async fn list(&self, operation: &str, object: &str, query: &[(&str, String)]) -> Result<ListAnswer, ProviderError> {
        self.client
            .send(operation, self.request(Method::GET, object).query(query))
            .await?
            .json()
    }

    /// `GET /api/v2/{object}/search?term=...&fields=...&exact_match=true`: the ids found (first page; exact
    /// matches of a unique value fit in it).
    async fn search(&self, object: &str, term: &str, fields: &str) -> Result<Vec<u64>, ProviderError> {
        let _slot = self.search_gate.acquire().await;
        let query = [
            ("term", term.to_string()),
            ("fields", fields.to_string()),
            ("exact_match", "true".to_string()),
            ("limit", "100".to_string()),
        ];
        let request = self.request(Method::GET, &format!("{object}/search")).query(&query);
        let answer: SearchAnswer = self.client.send("search", request).await?.json()?;
        Ok(answer.ids())
    }

    /// The records with these ids that exist and are not deleted (at most [`MAX_IDS`]).
    async fn by_ids(
        &self,
        object: &str,
        ids: &[String],
        custom_fields: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, ProviderError> {
        let mut query = vec![("ids", ids.join(",")), ("limit", MAX_IDS.to_string())];
        if let Some(keys) = custom_fields {
            query.push(("custom_fields", keys.to_string()));
        }
        Ok(self.list("get_by_ids", object, &query).await?.records())
    }
}

#[async_trait]
impl Provider for Pipedrive {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Pipedrive
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
        let token = match page {
            Some(token) => PassToken::from_token(token)?,
            None => PassToken::start(since, Utc::now()),
        };
        if token.is_empty() {
            return Ok(Page::default());
        }
        let mut query = vec![
            ("updated_since", token.since.clone()),
            ("updated_until", token.until.clone()),
            ("sort_by", "update_time".to_string()),
            ("sort_direction", "asc".to_string()),
            ("limit", self.config.page_size.clamp(1, MAX_PAGE_SIZE).to_string()),
        ];
        if let Some(cursor) = &token.cursor {
            query.push(("cursor", cursor.clone()));
        }
        let answer = self.list("list", object, &query).await?;
        let next = answer.next_cursor().map(|cursor| token.next(cursor));
        let mut records = Vec::new();
        for record in answer.records() {
            // A record flagged deleted is left out; the sweep or its delete webhook marks it.
            records.extend(wire::into_record(record)?);
        }
        Ok(Page { records, next })
    }

    async fn fetch(&self, object: &str, ids: &[String]) -> Result<Fetched, ProviderError> {
        let mut fetched = Fetched::default();
        // Pipedrive ids are integers: anything else cannot exist there.
        let (numeric, other): (Vec<String>, Vec<String>) =
            ids.iter().cloned().partition(|id| id.parse::<u64>().is_ok());
        fetched.missing.extend(other);
        for chunk in numeric.chunks(MAX_IDS) {
            let mut found = HashSet::new();
            for record in self.by_ids(object, chunk, None).await? {
                if let Some(record) = wire::into_record(record)? {
                    found.insert(record.remote_id.clone());
                    fetched.found.push(record);
                }
            }
            // `ids=` leaves out records that are deleted or gone.
            fetched
                .missing
                .extend(chunk.iter().filter(|id| !found.contains(*id)).cloned());
        }
        Ok(fetched)
    }

    fn sweep_interval(&self) -> Option<Duration> {
        Some(self.config.sweep_interval)
    }

    async fn list_ids(&self, object: &str) -> Result<Vec<String>, ProviderError> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![
                ("sort_by", "id".to_string()),
                ("sort_direction", "asc".to_string()),
                ("limit", MAX_PAGE_SIZE.to_string()),
            ];
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let answer = self.list("list_ids", object, &query).await?;
            let next = answer.next_cursor();
            for record in answer.records() {
                if !wire::is_deleted(&record)
                    && let Some(id) = wire::id_of(&record)
                {
                    ids.push(id.to_string());
                }
            }
            match next {
                Some(next) if cursor.as_ref() == Some(&next) => {
                    return Err(ProviderError::Transient(format!(
                        "{object}: the id listing returned the same cursor again"
                    )));
                }
                Some(next) => cursor = Some(next),
                None => return Ok(ids),
            }
        }
    }

    async fn push(&self, write: &PushRequest) -> Result<String, ProviderError> {
        push::push(self, write).await
    }

    fn verify_webhook(&self, request: &WebhookRequest<'_>) -> Result<Vec<NewWebhookEvent>, WebhookError> {
        webhook::verify(
            request,
            self.config.webhook_user.as_deref(),
            self.config.webhook_password.as_ref(),
        )?;
        webhook::parse_event(request.body)
    }

    fn interpret_event(&self, event: &serde_json::Value) -> Vec<EventAction> {
        webhook::interpret(event, &self.config.objects)
    }
}
