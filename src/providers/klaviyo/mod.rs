//! Klaviyo: pull profiles by `updated` with Klaviyo's cursor pages, find deletions with an id sweep (Klaviyo
//! keeps no deletion log and sends no deletion webhook), verify signed system webhooks, and push with
//! `profile-import`, an upsert on the profile's identifiers.

mod config;
mod paging;
mod quota;
pub mod webhook;
mod wire;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

pub use config::{KlaviyoConfig, PROFILES};
use paging::PageState;
pub use quota::KlaviyoQuota;
use wire::{ImportAnswer, ProfilePage};

use super::{
    CrmClient, CrmResponse, EventAction, Fetched, Page, PageToken, Provider, ProviderError, PushRequest, WebhookError,
    WebhookRequest,
};
use crate::auth::Credential;
use crate::config::{ConnectionConfig, ProviderKind, Secret};
use crate::store::NewWebhookEvent;

/// `any(id, [...])` takes at most this many ids, and a page holds at most this many profiles.
const MAX_BATCH: usize = 100;

/// A Klaviyo connection.
pub struct Klaviyo {
    config: KlaviyoConfig,
    base: String,
    client: CrmClient,
    credential: Credential,
}

impl Klaviyo {
    pub fn new(
        connection: &ConnectionConfig,
        config: KlaviyoConfig,
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

    /// A private key goes in `Klaviyo-API-Key`; an OAuth access token is a bearer token.
    fn authorization(&self, token: &Secret) -> String {
        match self.credential {
            Credential::Static(_) => format!("Klaviyo-API-Key {}", token.expose()),
            Credential::OAuth(_) => format!("Bearer {}", token.expose()),
        }
    }

    async fn get(&self, operation: &str, path: &str, query: &[(String, String)]) -> Result<CrmResponse, ProviderError> {
        let url = format!("{}{path}", self.base);
        self.client
            .send_authorized(operation, &self.credential, |http, token| {
                http.get(&url)
                    .query(query)
                    .header("authorization", self.authorization(token))
                    .header("revision", &self.config.revision)
                    .header("accept", "application/vnd.api+json")
            })
            .await
    }

    async fn post(&self, operation: &str, path: &str, body: &Value) -> Result<CrmResponse, ProviderError> {
        let url = format!("{}{path}", self.base);
        let body = serde_json::to_vec(body).expect("JSON values serialise");
        self.client
            .send_authorized(operation, &self.credential, |http, token| {
                http.post(&url)
                    .header("authorization", self.authorization(token))
                    .header("revision", &self.config.revision)
                    .header("accept", "application/vnd.api+json")
                    .header("content-type", "application/vnd.api+json")
                    .body(body.clone())
            })
            .await
    }

    fn check_object(object: &str) -> Result<(), ProviderError> {
        if object == PROFILES {
            Ok(())
        } else {
            Err(ProviderError::Permanent(format!(
                "Klaviyo has no object {object:?}; only profiles"
            )))
        }
    }
}

#[async_trait]
impl Provider for Klaviyo {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Klaviyo
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
        Self::check_object(object)?;
        let state = match page {
            Some(token) => serde_json::from_value::<PageState>(token)
                .map_err(|e| ProviderError::Permanent(format!("bad page token: {e}")))?,
            None => PageState::start(since),
        };
        let query = state.query(self.config.page_size.clamp(1, 100), &self.config.fields);
        let answer: ProfilePage = self.get("get_profiles", "/api/profiles/", &query).await?.json()?;
        let records = answer
            .data
            .into_iter()
            .map(wire::ApiProfile::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        let next = state
            .next(answer.links.next.as_deref())
            .map_err(|e| ProviderError::Transient(format!("unreadable page link: {e}")))?;
        Ok(Page {
            records,
            next: next.map(|s| serde_json::to_value(s).expect("page state serialises")),
        })
    }

    /// Reads the profiles a webhook named. Klaviyo's reads lag its writes, so a webhook about a profile created a
    /// moment ago can arrive before the profile is readable: not finding one proves nothing, and reporting it
    /// `missing` would leave a tombstone newer than the profile's first version, hiding it for good. So nothing is
    /// ever reported missing here; deletions are the id sweep's to find.
    async fn fetch(&self, object: &str, ids: &[String]) -> Result<Fetched, ProviderError> {
        Self::check_object(object)?;
        let mut fetched = Fetched::default();
        for chunk in ids.chunks(MAX_BATCH) {
            let quoted: Vec<String> = chunk
                .iter()
                .map(|id| serde_json::to_string(id).expect("strings serialise"))
                .collect();
            let mut query = vec![
                ("filter".to_string(), format!("any(id,[{}])", quoted.join(","))),
                ("page[size]".to_string(), MAX_BATCH.to_string()),
            ];
            if let Some(fields) = paging::sparse_fieldset(&self.config.fields) {
                query.push(("fields[profile]".to_string(), fields));
            }
            let answer: ProfilePage = self.get("get_profiles", "/api/profiles/", &query).await?.json()?;
            for profile in answer.data {
                fetched.found.push(profile.into_record()?);
            }
        }
        Ok(fetched)
    }

    fn sweep_interval(&self) -> Option<Duration> {
        Some(self.config.sweep_interval)
    }

    /// Every live profile id, sorted by id so the cursor walks a fixed order; only `updated` is asked for, to
    /// keep the pages small.
    async fn list_ids(&self, object: &str) -> Result<Vec<String>, ProviderError> {
        Self::check_object(object)?;
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![
                ("sort".to_string(), "id".to_string()),
                ("page[size]".to_string(), MAX_BATCH.to_string()),
                ("fields[profile]".to_string(), "updated".to_string()),
            ];
            if let Some(c) = &cursor {
                query.push(("page[cursor]".to_string(), c.clone()));
            }
            let answer: ProfilePage = self.get("list_profile_ids", "/api/profiles/", &query).await?.json()?;
            ids.extend(answer.data.into_iter().map(|p| p.id));
            match answer.links.next.as_deref() {
                None => return Ok(ids),
                Some(link) => {
                    let next = paging::cursor_of(link)
                        .map_err(|e| ProviderError::Transient(format!("unreadable page link: {e}")))?;
                    if cursor.as_deref() == Some(next.as_str()) {
                        return Err(ProviderError::Transient(
                            "Klaviyo returned the same id page again; no progress".into(),
                        ));
                    }
                    cursor = Some(next);
                }
            }
        }
    }

    async fn push(&self, write: &PushRequest) -> Result<String, ProviderError> {
        Self::check_object(&write.object)?;
        let document = wire::import_document(write)?;
        let answer: ImportAnswer = self
            .post("profile_import", "/api/profile-import/", &document)
            .await?
            .json()?;
        Ok(answer.data.id)
    }

    fn verify_webhook(&self, request: &WebhookRequest<'_>) -> Result<Vec<NewWebhookEvent>, WebhookError> {
        webhook::Verifier {
            secret: self.config.webhook_secret.as_ref(),
            webhook_id: self.config.webhook_id.as_deref(),
            tolerance: self.config.webhook_tolerance,
        }
        .verify(request)
    }

    fn interpret_event(&self, event: &Value) -> Vec<EventAction> {
        webhook::interpret(event, &self.config.objects)
    }
}
