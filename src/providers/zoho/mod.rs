//! Zoho CRM (API v8): pull through COQL keyset-paged on (`Modified_Time`, `id`), deletes from the delete log
//! (`/{module}/deleted`), instant notifications on a channel the connection subscribes and renews,
//! authenticated by the token Zoho echoes, and push with upsert on duplicate-check fields. OAuth2 with
//! `Authorization: Zoho-oauthtoken`.

mod config;
mod coql;
mod policy;
mod watch;
pub mod webhook;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

pub use config::ZohoConfig;
pub use policy::CreditHeaders;

use super::{
    CrmClient, CrmResponse, Deletions, EventAction, Fetched, Page, PageToken, Provider, ProviderError, PushRequest,
    WebhookError, WebhookRequest,
};
use crate::auth::Credential;
use crate::config::{ConnectionConfig, ProviderKind, Secret};
use crate::model::RemoteRecord;
use crate::store::NewWebhookEvent;
use coql::Keyset;

/// Entries per `/deleted` page (Zoho's maximum).
const DELETED_PAGE: usize = 200;
/// Ids per `?ids=` read (Zoho's maximum).
const IDS_PER_READ: usize = 100;
/// Pages of the delete log read in one go before falling back to comparing every id: far more deletions than
/// one pass should ever see means something else is going on.
const MAX_DELETED_PAGES: usize = 200;

/// A Zoho CRM connection.
pub struct Zoho {
    config: ZohoConfig,
    connection: String,
    base: String,
    client: CrmClient,
    credential: Credential,
    notify_url: Option<String>,
    channel_id: u64,
    /// Whether the token answer's `api_domain` was compared with `base_url` yet.
    domain_checked: AtomicBool,
}

impl Zoho {
    pub fn new(
        connection: &ConnectionConfig,
        config: ZohoConfig,
        client: CrmClient,
        credential: Credential,
        notify_url: Option<String>,
    ) -> Self {
        Self {
            channel_id: config.channel_id_for(&connection.id),
            connection: connection.id.clone(),
            base: connection.base_url.as_str().trim_end_matches('/').to_string(),
            config,
            client,
            credential,
            notify_url,
            domain_checked: AtomicBool::new(false),
        }
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/crm/v8/{tail}", self.base)
    }

    /// Sends a request built by `build` with `Authorization: Zoho-oauthtoken <token>`.
    async fn send<F>(&self, operation: &str, build: F) -> Result<CrmResponse, ProviderError>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let response = self
            .client
            .send_authorized(operation, &self.credential, |http, token: &Secret| {
                build(http, &format!("Zoho-oauthtoken {}", token.expose()))
            })
            .await?;
        self.check_domain().await;
        Ok(response)
    }

    /// Zoho's token answer names the data centre's API domain. The daemon calls `base_url` (which may be a
    /// proxy), so a different domain is only worth one warning: it usually means the wrong data centre.
    async fn check_domain(&self) {
        if self.domain_checked.load(Ordering::Relaxed) {
            return;
        }
        let Some(domain) = self.credential.instance_url().await else {
            return;
        };
        self.domain_checked.store(true, Ordering::Relaxed);
        if domain.trim_end_matches('/') != self.base {
            tracing::warn!(connection = %self.connection, api_domain = %domain, base_url = %self.base, "Zoho's accounts server names another API domain than base_url; check the data centre.");
        }
    }

    async fn post(&self, operation: &str, url: &str, body: &Value) -> Result<CrmResponse, ProviderError> {
        self.send(operation, |http, auth| {
            http.post(url).header("authorization", auth).json(body)
        })
        .await
    }

    /// Runs a COQL query; None when it matched nothing (Zoho answers 204).
    async fn coql(&self, query: String) -> Result<Option<coql::Answer>, ProviderError> {
        let response = self
            .post("coql", &self.url("coql"), &json!({ "select_query": query }))
            .await?;
        if response.status == StatusCode::NO_CONTENT || response.body.is_empty() {
            return Ok(None);
        }
        response.json().map(Some)
    }
}

#[derive(Debug, Deserialize)]
struct DataAnswer {
    #[serde(default)]
    data: Vec<Value>,
    #[serde(default)]
    info: coql::Info,
}

#[async_trait]
impl Provider for Zoho {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Zoho
    }

    fn objects(&self) -> &[String] {
        &self.config.modules
    }

    async fn pull_page(
        &self,
        module: &str,
        since: DateTime<Utc>,
        page: Option<PageToken>,
    ) -> Result<Page, ProviderError> {
        let from: Option<Keyset> = page
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| ProviderError::Permanent(format!("bad page token: {e}")))?;
        let limit = self.config.page_size.clamp(1, config::MAX_PAGE_SIZE);
        let query = coql::page_query(module, &self.config.fields_for(module), since, from.as_ref(), limit);
        let Some(answer) = self.coql(query).await? else {
            return Ok(Page::default());
        };
        let records = answer
            .data
            .into_iter()
            .map(coql::row_to_record)
            .collect::<Result<Vec<_>, _>>()?;
        let full = answer.info.more_records || records.len() as u32 >= limit;
        let next = match records.iter().map(RemoteRecord::position).max() {
            Some(last) if full => Some(serde_json::to_value(Keyset::after(last)).expect("a keyset serialises")),
            _ => None,
        };
        Ok(Page { records, next })
    }

    async fn fetch(&self, module: &str, ids: &[String]) -> Result<Fetched, ProviderError> {
        let fields = self.config.fields_for(module).join(",");
        let mut fetched = Fetched::default();
        for chunk in ids.chunks(IDS_PER_READ) {
            let url = self.url(module);
            let query = [("fields", fields.clone()), ("ids", chunk.join(","))];
            let response = self
                .send("get_ids", |http, auth| {
                    http.get(&url).query(&query).header("authorization", auth)
                })
                .await?;
            let rows = if response.status == StatusCode::NO_CONTENT || response.body.is_empty() {
                Vec::new()
            } else {
                response.json::<DataAnswer>()?.data
            };
            let mut found = HashSet::new();
            for row in rows {
                let record = coql::row_to_record(row)?;
                found.insert(record.remote_id.clone());
                fetched.found.push(record);
            }
            fetched
                .missing
                .extend(chunk.iter().filter(|id| !found.contains(*id)).cloned());
        }
        Ok(fetched)
    }

    fn has_delete_log(&self) -> bool {
        true
    }

    async fn deleted_since(&self, module: &str, since: DateTime<Utc>) -> Result<Deletions, ProviderError> {
        let retention = chrono::Duration::from_std(self.config.delete_log_retention).unwrap_or(chrono::Duration::MAX);
        if Utc::now() - since > retention {
            return Ok(Deletions::TooOld);
        }
        let url = self.url(&format!("{module}/deleted"));
        let if_modified_since = coql::literal(since);
        let mut deleted = Vec::new();
        // Newest first: a deletion made while paging pushes older entries to later pages, which repeats some
        // (harmless) and skips none.
        for page in 1..=MAX_DELETED_PAGES {
            let query = [
                ("type", "all".to_string()),
                ("per_page", DELETED_PAGE.to_string()),
                ("page", page.to_string()),
            ];
            let response = self
                .send("deleted", |http, auth| {
                    http.get(&url)
                        .query(&query)
                        .header("authorization", auth)
                        .header("if-modified-since", &if_modified_since)
                })
                .await?;
            if response.status == StatusCode::NO_CONTENT || response.body.is_empty() {
                return Ok(Deletions::Since(deleted));
            }
            let answer: DataAnswer = response.json()?;
            for entry in &answer.data {
                let id = coql::row_id(entry)
                    .ok_or_else(|| ProviderError::Transient("a deleted entry without an id".into()))?;
                let at = entry
                    .get("deleted_time")
                    .and_then(Value::as_str)
                    .and_then(coql::parse_time)
                    .ok_or_else(|| ProviderError::Transient(format!("deleted entry {id} has no deleted_time")))?;
                deleted.push((id, at));
            }
            if !answer.info.more_records {
                return Ok(Deletions::Since(deleted));
            }
        }
        tracing::warn!(connection = %self.connection, module, "More deletions than expected in one read; comparing every id instead.");
        Ok(Deletions::TooOld)
    }

    async fn list_ids(&self, module: &str) -> Result<Vec<String>, ProviderError> {
        let limit = self.config.page_size.clamp(1, config::MAX_PAGE_SIZE);
        let mut ids: Vec<String> = Vec::new();
        loop {
            let query = coql::ids_query(module, ids.last().map(String::as_str), limit);
            let Some(answer) = self.coql(query).await? else {
                return Ok(ids);
            };
            let before = ids.len();
            ids.extend(answer.data.iter().filter_map(coql::row_id));
            if !answer.info.more_records || ids.len() == before {
                return Ok(ids);
            }
        }
    }

    async fn maintain_subscriptions(&self) -> Result<Option<DateTime<Utc>>, ProviderError> {
        let (Some(token), Some(notify_url)) = (&self.config.notify_token, &self.notify_url) else {
            return Ok(None);
        };
        let now = Utc::now();
        let asked = now + chrono::Duration::from_std(self.config.channel_ttl).unwrap_or(chrono::Duration::days(1));
        let body = watch::subscribe_body(self.channel_id, &self.config.modules, asked, token.expose(), notify_url);
        let response = self.post("watch", &self.url("actions/watch"), &body).await?;
        let expiry = watch::granted_expiry(&response.body)?;
        tracing::debug!(connection = %self.connection, channel = self.channel_id, %expiry, "Notification channel subscribed.");
        Ok(Some(watch::renew_at(now, expiry)))
    }

    async fn push(&self, write: &PushRequest) -> Result<String, ProviderError> {
        let Some(properties) = write.properties.as_object() else {
            return Err(ProviderError::Permanent("properties must be a JSON object".into()));
        };
        let key_field = &self.config.push_key_field;
        let mut record = properties.clone();
        record.insert(key_field.clone(), json!(write.idempotency_key));
        // The match key first (an existing record the application means), then the key field: a retry after a
        // lost answer finds the record its first attempt created, so a key creates at most once.
        let mut check = Vec::new();
        if let (Some(field), Some(value)) = (&write.match_key, &write.match_value) {
            record.entry(field.clone()).or_insert_with(|| json!(value));
            check.push(field.clone());
        }
        check.push(key_field.clone());
        let body = json!({"data": [record], "duplicate_check_fields": check});
        let response = self
            .post("upsert", &self.url(&format!("{}/upsert", write.object)), &body)
            .await?;
        let answer: DataAnswer = response.json()?;
        let entry = answer
            .data
            .first()
            .ok_or_else(|| ProviderError::Transient("upsert answered without a result".into()))?;
        if entry.get("status").and_then(Value::as_str) != Some("success") {
            let why = policy::describe_error(&response.body).unwrap_or_else(|| entry.to_string());
            return Err(ProviderError::Permanent(why));
        }
        entry
            .pointer("/details/id")
            .and_then(coql::id_text)
            .ok_or_else(|| ProviderError::Transient("upsert answered without the record's id".into()))
    }

    fn verify_webhook(&self, request: &WebhookRequest<'_>) -> Result<Vec<NewWebhookEvent>, WebhookError> {
        webhook::verify(request, self.config.notify_token.as_ref(), self.config.notify_tolerance)
    }

    fn interpret_event(&self, event: &Value) -> Vec<EventAction> {
        webhook::interpret(event, &self.config.modules)
    }
}
