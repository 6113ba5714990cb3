//! Creatio: pull over OData 4 keyset-paged on (`ModifiedOn`, `Id`), deletes found by id sweeps, push by
//! search-then-write on a stored idempotency key, forms or OAuth 2.0 authentication, and no webhooks (Creatio sends
//! no signed change notifications: polling is the only way in).

mod auth;
mod config;
pub mod keyset;
pub mod odata;
mod push;
mod session;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

pub use auth::CreatioAuth;
pub use config::{CreatioConfig, MAX_PAGE_SIZE};
use keyset::Position;
use odata::Collection;

use super::{
    CrmClient, CrmResponse, EventAction, Fetched, Page, PageToken, Provider, ProviderError, PushRequest, WebhookError,
    WebhookRequest,
};
use crate::config::ProviderKind;
use crate::store::NewWebhookEvent;

/// Ids per `Id eq ... or Id eq ...` read: keeps the URL well under IIS's default 4 KB query-string limit.
const FETCH_CHUNK: usize = 40;

/// The refusal every webhook gets.
pub const NO_WEBHOOKS: &str = "Creatio sends no webhooks; polling only";

/// A Creatio connection.
pub struct Creatio {
    config: CreatioConfig,
    /// `{base_url}/{odata_path}`.
    odata: String,
    client: CrmClient,
    auth: CreatioAuth,
}

impl Creatio {
    pub fn new(base: &str, config: CreatioConfig, client: CrmClient, auth: CreatioAuth) -> Self {
        Self {
            odata: format!("{base}/{}", config.odata_path.trim_matches('/')),
            config,
            client,
            auth,
        }
    }

    /// `{odata}/{resource}`.
    fn url(&self, resource: &str) -> String {
        format!("{}/{resource}", self.odata)
    }

    /// A GET of a collection with these query options.
    async fn query(
        &self,
        operation: &str,
        entity: &str,
        options: &[(&str, String)],
    ) -> Result<Collection, ProviderError> {
        let url = self.url(entity);
        self.auth
            .send(&self.client, operation, |http| {
                http.get(&url)
                    .query(options)
                    .header(http::header::ACCEPT, "application/json")
            })
            .await?
            .json()
    }

    /// A POST or PATCH with a JSON body.
    async fn write(
        &self,
        operation: &str,
        method: reqwest::Method,
        resource: &str,
        body: &Value,
    ) -> Result<CrmResponse, ProviderError> {
        let url = self.url(resource);
        let body = serde_json::to_vec(body).expect("JSON values serialise");
        self.auth
            .send(&self.client, operation, |http| {
                http.request(method.clone(), &url)
                    .header(http::header::ACCEPT, "application/json")
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/json; charset=utf-8; IEEE754Compatible=true",
                    )
                    .body(body.clone())
            })
            .await
    }

    fn page_size(&self) -> usize {
        self.config.page_size.clamp(1, MAX_PAGE_SIZE) as usize
    }
}

#[async_trait]
impl Provider for Creatio {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Creatio
    }

    fn objects(&self) -> &[String] {
        &self.config.objects
    }

    async fn pull_page(
        &self,
        entity: &str,
        since: DateTime<Utc>,
        page: Option<PageToken>,
    ) -> Result<Page, ProviderError> {
        let filter = match page {
            None => keyset::since_filter(since),
            Some(token) => Position::from_token(token)?.after_filter(),
        };
        let limit = self.page_size();
        let mut options = vec![
            ("$filter", filter),
            ("$orderby", keyset::ORDER.to_string()),
            ("$top", limit.to_string()),
        ];
        if let Some(select) = self.config.select_for(entity) {
            options.push(("$select", select));
        }
        let answer = self.query("list", entity, &options).await?;
        let next = keyset::next(answer.value.len(), limit, answer.value.last())?;
        let records = answer
            .value
            .into_iter()
            .map(odata::to_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            records,
            next: next.map(|p| p.to_token()),
        })
    }

    async fn fetch(&self, entity: &str, ids: &[String]) -> Result<Fetched, ProviderError> {
        let mut fetched = Fetched::default();
        let guids: Vec<String> = ids.iter().filter_map(|id| odata::guid(id)).collect();
        for chunk in guids.chunks(FETCH_CHUNK) {
            let filter = chunk
                .iter()
                .map(|id| format!("Id eq {id}"))
                .collect::<Vec<_>>()
                .join(" or ");
            let mut options = vec![("$filter", filter), ("$top", chunk.len().to_string())];
            if let Some(select) = self.config.select_for(entity) {
                options.push(("$select", select));
            }
            let answer = self.query("get", entity, &options).await?;
            for entity in answer.value {
                fetched.found.push(odata::to_record(entity)?);
            }
        }
        let found: HashSet<&str> = fetched.found.iter().map(|r| r.remote_id.as_str()).collect();
        let missing = ids
            .iter()
            .filter(|id| odata::guid(id).is_none_or(|g| !found.contains(g.as_str())))
            .cloned()
            .collect();
        fetched.missing = missing;
        Ok(fetched)
    }

    fn sweep_interval(&self) -> Option<Duration> {
        Some(self.config.sweep_interval)
    }

    /// Every id, paged by keyset on `Id` (`$select=Id`, `Id gt <last>`), so rows deleted or created during the
    /// listing cannot shift a page the way `$skip` would.
    async fn list_ids(&self, entity: &str) -> Result<Vec<String>, ProviderError> {
        let limit = self.page_size();
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut options = vec![
                ("$select", "Id".to_string()),
                ("$orderby", "Id asc".to_string()),
                ("$top", limit.to_string()),
            ];
            if let Some(last) = &after {
                options.push(("$filter", format!("Id gt {last}")));
            }
            let answer = self.query("list_ids", entity, &options).await?;
            let returned = answer.value.len();
            let page: Vec<String> = answer
                .value
                .iter()
                .map(|e| e.get("Id").and_then(Value::as_str).and_then(odata::guid))
                .collect::<Option<_>>()
                .ok_or_else(|| ProviderError::Transient("an id listing with a row that has no GUID Id".into()))?;
            // The server's last row, not the client's largest: the next page continues in the server's order.
            let last = page.last().cloned();
            ids.extend(page);
            match last {
                Some(last) if returned >= limit => {
                    if after.as_ref() == Some(&last) {
                        return Err(ProviderError::Transient(format!(
                            "{entity}: the id listing returned the same page again"
                        )));
                    }
                    after = Some(last);
                }
                _ => return Ok(ids),
            }
        }
    }

    async fn push(&self, write: &PushRequest) -> Result<String, ProviderError> {
        push::push(self, write).await
    }

    fn verify_webhook(&self, _request: &WebhookRequest<'_>) -> Result<Vec<NewWebhookEvent>, WebhookError> {
        Err(WebhookError::Unauthorized(NO_WEBHOOKS))
    }

    fn interpret_event(&self, _event: &Value) -> Vec<EventAction> {
        Vec::new()
    }
}
