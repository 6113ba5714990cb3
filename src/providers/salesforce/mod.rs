//! Salesforce: pull with SOQL ordered by (SystemModstamp, Id) through query locators, resuming by keyset when a
//! locator dies; deletes from the org's delete log (getDeleted), or by comparing ids when the log no longer
//! reaches back; Outbound Messages authenticated by a token in the URL and acknowledged in SOAP; pushes as
//! upserts on an External ID field that holds the idempotency key; OAuth2 against the org's `instance_url`; the
//! org's daily API allocation read from `Sforce-Limit-Info`.

mod config;
mod limits;
pub mod outbound;
mod soql;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::Value;

pub use config::SalesforceConfig;
pub use limits::{ApiUsage, api_error, api_usage};
use soql::{Keyset, PageState};

use super::{
    CrmClient, CrmResponse, Deletions, EventAction, Fetched, Page, PageToken, Provider, ProviderError, PushRequest,
    WebhookAck, WebhookError, WebhookRequest,
};
use crate::auth::Credential;
use crate::config::{ConnectionConfig, ProviderKind};
use crate::model::RemoteRecord;
use crate::store::NewWebhookEvent;

/// Ids per `Id IN (...)` query: 200 ids keep the query string near 4 KB, well inside URL limits, and the
/// answer inside one batch.
const IDS_PER_QUERY: usize = 200;

/// getDeleted works in whole minutes: its start and end are rounded down to one, so an end less than a minute
/// after the start covers nothing (and is refused).
const REPLICATION_STEP: chrono::Duration = chrono::Duration::minutes(1);

/// What may stay as it is in a URL path segment (RFC 3986's unreserved characters); an idempotency key is
/// percent-encoded around them.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A Salesforce connection.
pub struct Salesforce {
    config: SalesforceConfig,
    /// `base_url`: the API host until a token answer names the org's `instance_url`.
    base: String,
    client: CrmClient,
    credential: Credential,
    /// Per object, the `latestDateCovered` of the last getDeleted: the next read starts there at the latest, as
    /// Salesforce asks, so a deletion it had not covered yet is not skipped.
    covered: Mutex<HashMap<String, DateTime<Utc>>>,
}

/// A query answer.
#[derive(Debug, Deserialize)]
struct QueryAnswer {
    #[serde(default)]
    done: bool,
    #[serde(rename = "nextRecordsUrl")]
    next_records_url: Option<String>,
    #[serde(default)]
    records: Vec<serde_json::Map<String, Value>>,
}

/// A getDeleted answer.
#[derive(Debug, Deserialize)]
struct DeletedAnswer {
    #[serde(rename = "deletedRecords", default)]
    deleted_records: Vec<DeletedRecord>,
    #[serde(rename = "earliestDateAvailable")]
    earliest_date_available: Option<String>,
    #[serde(rename = "latestDateCovered")]
    latest_date_covered: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DeletedRecord {
    id: String,
    #[serde(rename = "deletedDate")]
    deleted_date: String,
}

/// An upsert answer (201, or 200 from API version 46.0 on).
#[derive(Debug, Deserialize)]
struct UpsertAnswer {
    id: String,
}

/// A query row as a record: `Id`, `SystemModstamp` and the fields, without Salesforce's `attributes`.
fn row_to_record(mut row: serde_json::Map<String, Value>) -> Result<RemoteRecord, ProviderError> {
    row.remove("attributes");
    let id = row
        .get("Id")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::Transient("a row without an Id".into()))?
        .to_string();
    let modified = row
        .get("SystemModstamp")
        .and_then(Value::as_str)
        .and_then(soql::parse_time)
        .ok_or_else(|| ProviderError::Transient(format!("row {id} has no readable SystemModstamp")))?;
    Ok(RemoteRecord {
        remote_id: id,
        updated_at: modified,
        data: Value::Object(row),
    })
}

impl Salesforce {
    pub fn new(
        connection: &ConnectionConfig,
        config: SalesforceConfig,
        client: CrmClient,
        credential: Credential,
    ) -> Self {
        Self {
            config,
            base: connection.base_url.as_str().trim_end_matches('/').to_string(),
            client,
            credential,
            covered: Mutex::new(HashMap::new()),
        }
    }

    /// The API host: the `instance_url` of the current token, else `base_url`. Gets a token first when there is
    /// none yet, since the token answer is what names the host.
    async fn instance(&self) -> Result<String, ProviderError> {
        self.credential.token(&self.client).await?;
        Ok(self
            .credential
            .instance_url()
            .await
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| self.base.clone()))
    }

    fn data_path(&self) -> String {
        format!("/services/data/v{}", self.config.api_version)
    }

    /// GETs `path` (absolute under the instance) with `query` parameters.
    async fn get(&self, operation: &str, path: &str, query: &[(&str, String)]) -> Result<CrmResponse, ProviderError> {
        let url = format!("{}{path}", self.instance().await?);
        let batch = format!("batchSize={}", self.config.batch_size);
        self.client
            .send_authorized(operation, &self.credential, |http, token| {
                http.get(&url)
                    .query(query)
                    .bearer_auth(token.expose())
                    .header("Sforce-Query-Options", &batch)
            })
            .await
    }

    /// Runs a SOQL query: its first batch.
    async fn query(&self, soql: &str) -> Result<QueryAnswer, ProviderError> {
        let path = format!("{}/query", self.data_path());
        self.get("query", &path, &[("q", soql.to_string())]).await?.json()
    }

    /// The next batch of a query locator; `Ok(None)` when Salesforce no longer has the locator.
    async fn query_more(&self, next: &str) -> Result<Option<QueryAnswer>, ProviderError> {
        if !next.starts_with("/services/data/") {
            return Err(ProviderError::Permanent(format!("unexpected nextRecordsUrl {next:?}")));
        }
        match self.get("query_more", next, &[]).await {
            Ok(response) => response.json().map(Some),
            Err(ProviderError::Permanent(message)) if message.contains(limits::INVALID_QUERY_LOCATOR) => {
                tracing::info!(connection = %self.client.connection(), "The query locator is gone; resuming from the last row read.");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Every row of a query, following its locator (a short one: used for fetches by id).
    async fn query_all(&self, soql: &str) -> Result<Vec<RemoteRecord>, ProviderError> {
        let mut answer = self.query(soql).await?;
        let mut records = Vec::new();
        loop {
            for row in answer.records {
                records.push(row_to_record(row)?);
            }
            match (answer.done, answer.next_records_url) {
                (false, Some(next)) => match self.query_more(&next).await? {
                    Some(more) => answer = more,
                    // Re-asking is safe: the ids are the same, and a fetch is idempotent.
                    None => return Err(ProviderError::Transient("the query locator expired mid-fetch".into())),
                },
                _ => return Ok(records),
            }
        }
    }

    /// The idempotent form of a write: PATCH on the external id.
    fn upsert_path(&self, object: &str, key: &str) -> String {
        format!(
            "{}/sobjects/{object}/{}/{}",
            self.data_path(),
            self.config.external_id_field,
            utf8_percent_encode(key, PATH_SEGMENT)
        )
    }

    /// The window getDeleted is asked for: from `since`, or from the last `latestDateCovered` when that is
    /// earlier, rounded down to the minute; to now, and at least a minute later than the start.
    fn deleted_window(&self, object: &str, since: DateTime<Utc>, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let covered = self.covered.lock().expect("covered lock").get(object).copied();
        let start = covered.map_or(since, |c| c.min(since));
        let minute = REPLICATION_STEP.num_seconds();
        let start =
            DateTime::from_timestamp(start.timestamp() - start.timestamp().rem_euclid(minute), 0).unwrap_or(start);
        (start, now.max(start + REPLICATION_STEP))
    }
}

#[async_trait]
impl Provider for Salesforce {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Salesforce
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
        let select = self.config.select_list(object);
        let (answer, since, after) = match page {
            None => (
                self.query(&soql::changes_query(&select, object, since, None)).await?,
                since,
                None,
            ),
            Some(token) => {
                let state: PageState = serde_json::from_value(token)
                    .map_err(|e| ProviderError::Permanent(format!("bad page token: {e}")))?;
                let answer = match self.query_more(&state.next).await? {
                    Some(answer) => answer,
                    None => {
                        let soql = soql::changes_query(&select, object, state.since, state.after.as_ref());
                        self.query(&soql).await?
                    }
                };
                (answer, state.since, state.after)
            }
        };
        if answer.records.is_empty() && !answer.done {
            // A batch with nothing in it that promises more would page forever: back off instead.
            return Err(ProviderError::Transient(format!(
                "{object}: Salesforce answered an empty batch that is not the last"
            )));
        }
        let records = answer
            .records
            .into_iter()
            .map(row_to_record)
            .collect::<Result<Vec<_>, _>>()?;
        let after = records
            .last()
            .map(|r| Keyset {
                modstamp: r.updated_at,
                id: r.remote_id.clone(),
            })
            .or(after);
        let next = match (answer.done, answer.next_records_url) {
            (false, Some(next)) => {
                Some(serde_json::to_value(PageState { since, next, after }).expect("page state serialises"))
            }
            _ => None,
        };
        Ok(Page { records, next })
    }

    async fn fetch(&self, object: &str, ids: &[String]) -> Result<Fetched, ProviderError> {
        let select = self.config.select_list(object);
        let mut fetched = Fetched::default();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let found = self.query_all(&soql::by_ids_query(&select, object, chunk)).await?;
            let present: HashSet<&str> = found.iter().map(|r| r.remote_id.as_str()).collect();
            // A deleted record is not returned by `query`: it is in the recycle bin, or gone.
            fetched
                .missing
                .extend(chunk.iter().filter(|id| !present.contains(id.as_str())).cloned());
            fetched.found.extend(found);
        }
        Ok(fetched)
    }

    async fn list_ids(&self, object: &str) -> Result<Vec<String>, ProviderError> {
        let mut ids: Vec<String> = Vec::new();
        let mut answer = self.query(&soql::ids_query(object, None)).await?;
        loop {
            for row in &answer.records {
                let id = row
                    .get("Id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ProviderError::Transient("a row without an Id".into()))?;
                ids.push(id.to_string());
            }
            match (answer.done, answer.next_records_url) {
                (false, Some(next)) => {
                    answer = match self.query_more(&next).await? {
                        Some(more) => more,
                        None => {
                            self.query(&soql::ids_query(object, ids.last().map(String::as_str)))
                                .await?
                        }
                    }
                }
                _ => return Ok(ids),
            }
        }
    }

    fn has_delete_log(&self) -> bool {
        true
    }

    async fn deleted_since(&self, object: &str, since: DateTime<Utc>) -> Result<Deletions, ProviderError> {
        let (start, end) = self.deleted_window(object, since, Utc::now());
        let path = format!("{}/sobjects/{object}/deleted/", self.data_path());
        let format = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, false);
        let response = self
            .get("get_deleted", &path, &[("start", format(start)), ("end", format(end))])
            .await;
        let answer: DeletedAnswer = match response {
            Ok(r) => r.json()?,
            // Salesforce refuses a start more than 30 days back outright.
            Err(ProviderError::Permanent(m)) if m.contains("INVALID_REPLICATION_DATE") => {
                tracing::info!(connection = %self.client.connection(), object, error = %m, "getDeleted refused the window.");
                return Ok(Deletions::TooOld);
            }
            Err(e) => return Err(e),
        };
        let read = |s: &Option<String>, what: &str| -> Result<Option<DateTime<Utc>>, ProviderError> {
            s.as_deref()
                .map(|t| {
                    soql::parse_time(t).ok_or_else(|| ProviderError::Transient(format!("unreadable {what} {t:?}")))
                })
                .transpose()
        };
        if let Some(covered) = read(&answer.latest_date_covered, "latestDateCovered")? {
            self.covered
                .lock()
                .expect("covered lock")
                .insert(object.to_string(), covered);
        }
        if read(&answer.earliest_date_available, "earliestDateAvailable")?.is_some_and(|earliest| earliest > start) {
            return Ok(Deletions::TooOld);
        }
        let deleted = answer
            .deleted_records
            .into_iter()
            .map(|d| {
                soql::parse_time(&d.deleted_date)
                    .map(|at| (d.id, at))
                    .ok_or_else(|| ProviderError::Transient(format!("unreadable deletedDate {:?}", d.deleted_date)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Deletions::Since(deleted))
    }

    async fn push(&self, write: &PushRequest) -> Result<String, ProviderError> {
        let mut body = write.properties.clone();
        let Some(map) = body.as_object_mut() else {
            return Err(ProviderError::Permanent("properties must be a JSON object".into()));
        };
        if let (Some(k), Some(v)) = (&write.match_key, &write.match_value) {
            map.entry(k.clone()).or_insert_with(|| Value::String(v.clone()));
        }
        // The key travels in the URL; Salesforce refuses a body that names the field with another value.
        map.remove(&self.config.external_id_field);
        let path = self.upsert_path(&write.object, &write.idempotency_key);
        let url = format!("{}{path}", self.instance().await?);
        let response = self
            .client
            .send_authorized("upsert", &self.credential, |http, token| {
                http.patch(&url).bearer_auth(token.expose()).json(&body)
            })
            .await?;
        if response.status == http::StatusCode::NO_CONTENT {
            // Before API version 46.0 an update answers 204 without the id: read it by the external id.
            let record: serde_json::Map<String, Value> = self.get("get_by_external_id", &path, &[]).await?.json()?;
            return record
                .get("Id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ProviderError::Transient("the record read by its external id has no Id".into()));
        }
        Ok(response.json::<UpsertAnswer>()?.id)
    }

    fn verify_webhook(&self, request: &WebhookRequest<'_>) -> Result<Vec<NewWebhookEvent>, WebhookError> {
        outbound::verify_token(self.config.webhook_token.as_ref(), request.path_and_query)?;
        let message = outbound::parse(request.body)?;
        outbound::events(message, self.config.organization_id.as_deref())
    }

    fn interpret_event(&self, event: &Value) -> Vec<EventAction> {
        let (Some(object), Some(id)) = (
            event.get("object").and_then(Value::as_str),
            event.get("id").and_then(Value::as_str),
        ) else {
            return Vec::new();
        };
        if !self.config.objects.iter().any(|o| o == object) {
            return Vec::new();
        }
        // The message's field values may be older than the record (messages come out of order and are retried
        // for a day): read the record as it is now.
        vec![EventAction::Fetch {
            object: object.to_string(),
            ids: vec![id.to_string()],
        }]
    }

    fn webhook_ack(&self) -> Option<WebhookAck> {
        Some(outbound::ack())
    }
}
