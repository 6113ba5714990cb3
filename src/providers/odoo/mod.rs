//! Odoo: pull with JSON-RPC `search_read` keyset-paged on (`write_date`, `id`), an id sweep for hard deletes,
//! webhooks authenticated by a token in the URL, and push by search-then-write on a stored idempotency key.

mod config;
mod rpc;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use config::OdooConfig;
use rpc::Rpc;

use super::{
    CrmClient, EventAction, Fetched, Page, PageToken, Provider, ProviderError, PushRequest, WebhookError,
    WebhookRequest,
};
use crate::config::{ConnectionConfig, ProviderKind, Secret};
use crate::model::RemoteRecord;
use crate::store::NewWebhookEvent;

const ODOO_TIME: &str = "%Y-%m-%d %H:%M:%S";

/// An Odoo connection.
pub struct Odoo {
    config: OdooConfig,
    rpc: Rpc,
}

/// The keyset position inside a pass: the last (write_date, id) read.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Keyset {
    write_date: String,
    id: i64,
}

impl Odoo {
    pub fn new(connection: &ConnectionConfig, config: OdooConfig, client: CrmClient) -> Self {
        let base = connection.base_url.as_str().trim_end_matches('/').to_string();
        Self {
            rpc: Rpc::new(&base, config.clone(), client),
            config,
        }
    }

    fn fields(&self, model: &str) -> Value {
        match self.config.fields.get(model) {
            Some(list) => {
                let mut list = list.clone();
                for always in ["id", "write_date"] {
                    if !list.iter().any(|f| f == always) {
                        list.push(always.to_string());
                    }
                }
                json!(list)
            }
            None => json!([]),
        }
    }

    async fn search_read(
        &self,
        model: &str,
        domain: Value,
        limit: Option<u32>,
    ) -> Result<Vec<RemoteRecord>, ProviderError> {
        let mut kwargs = json!({
            "fields": self.fields(model),
            "order": "write_date asc, id asc",
            "context": {"active_test": false},
        });
        if let Some(limit) = limit {
            kwargs["limit"] = json!(limit);
        }
        let rows = self
            .rpc
            .execute_kw(model, "search_read", json!([domain]), kwargs)
            .await?;
        let Value::Array(rows) = rows else {
            return Err(ProviderError::Transient("search_read did not answer a list".into()));
        };
        rows.into_iter().map(row_to_record).collect()
    }
}

fn row_to_record(row: Value) -> Result<RemoteRecord, ProviderError> {
    let id = row
        .get("id")
        .and_then(Value::as_i64)
        .ok_or_else(|| ProviderError::Transient("row without an integer id".into()))?;
    let write_date = row
        .get("write_date")
        .and_then(Value::as_str)
        .and_then(|s| NaiveDateTime::parse_from_str(s, ODOO_TIME).ok())
        .ok_or_else(|| ProviderError::Transient(format!("row {id} has no readable write_date")))?;
    Ok(RemoteRecord {
        remote_id: id.to_string(),
        updated_at: write_date.and_utc(),
        data: row,
    })
}

/// Odoo's naive-UTC form of a time, truncated to the second (`write_date` has second precision).
pub fn format_time(t: DateTime<Utc>) -> String {
    t.naive_utc().format(ODOO_TIME).to_string()
}

fn ids_of(value: &Value) -> Vec<i64> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

#[async_trait]
impl Provider for Odoo {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Odoo
    }

    fn objects(&self) -> &[String] {
        &self.config.models
    }

    async fn pull_page(
        &self,
        model: &str,
        since: DateTime<Utc>,
        page: Option<PageToken>,
    ) -> Result<Page, ProviderError> {
        let domain = match page {
            None => json!([["write_date", ">=", format_time(since)]]),
            Some(token) => {
                let k: Keyset = serde_json::from_value(token)
                    .map_err(|e| ProviderError::Permanent(format!("bad page token: {e}")))?;
                json!([
                    "|",
                    ["write_date", ">", k.write_date],
                    "&",
                    ["write_date", "=", k.write_date],
                    ["id", ">", k.id]
                ])
            }
        };
        let limit = self.config.page_size.max(1);
        let records = self.search_read(model, domain, Some(limit)).await?;
        let next = if records.len() as u32 >= limit {
            records.last().map(|r| {
                json!(Keyset {
                    write_date: format_time(r.updated_at),
                    id: r.remote_id.parse().unwrap_or(0),
                })
            })
        } else {
            None
        };
        Ok(Page { records, next })
    }

    async fn fetch(&self, model: &str, ids: &[String]) -> Result<Fetched, ProviderError> {
        let numeric: Vec<i64> = ids.iter().filter_map(|id| id.parse().ok()).collect();
        let found = self.search_read(model, json!([["id", "in", numeric]]), None).await?;
        let present: HashSet<&str> = found.iter().map(|r| r.remote_id.as_str()).collect();
        let missing = ids
            .iter()
            .filter(|id| !present.contains(id.as_str()))
            .cloned()
            .collect();
        Ok(Fetched { found, missing })
    }

    fn sweep_interval(&self) -> Option<Duration> {
        Some(self.config.sweep_interval)
    }

    async fn list_ids(&self, model: &str) -> Result<Vec<String>, ProviderError> {
        let ids = self
            .rpc
            .execute_kw(model, "search", json!([[]]), json!({"context": {"active_test": false}}))
            .await?;
        Ok(ids_of(&ids).into_iter().map(|id| id.to_string()).collect())
    }

    async fn push(&self, write: &PushRequest) -> Result<String, ProviderError> {
        let key_field = &self.config.push_key_field;
        let context = json!({"context": {"active_test": false}});
        let mut values = write.properties.clone();
        let Some(map) = values.as_object_mut() else {
            return Err(ProviderError::Permanent("properties must be a JSON object".into()));
        };
        map.insert(key_field.clone(), json!(write.idempotency_key));
        // The key field makes a retry find the record an earlier attempt created, even if that attempt's answer
        // was lost: create happens at most once per key.
        let by_key = self
            .rpc
            .execute_kw(
                &write.object,
                "search",
                json!([[[key_field, "=", write.idempotency_key]]]),
                context.clone(),
            )
            .await?;
        let mut target = ids_of(&by_key).first().copied();
        if target.is_none()
            && let (Some(k), Some(v)) = (&write.match_key, &write.match_value)
        {
            map.entry(k.clone()).or_insert_with(|| json!(v));
            let by_match = self
                .rpc
                .execute_kw(&write.object, "search", json!([[[k, "=", v]]]), context.clone())
                .await?;
            target = ids_of(&by_match).first().copied();
        }
        match target {
            Some(id) => {
                self.rpc
                    .execute_kw(&write.object, "write", json!([[id], values]), json!({}))
                    .await?;
                Ok(id.to_string())
            }
            None => {
                let created = self
                    .rpc
                    .execute_kw(&write.object, "create", json!([values]), json!({}))
                    .await?;
                let id = created
                    .as_i64()
                    .or_else(|| ids_of(&created).first().copied())
                    .ok_or_else(|| ProviderError::Transient("create answered without an id".into()))?;
                Ok(id.to_string())
            }
        }
    }

    fn verify_webhook(&self, request: &WebhookRequest<'_>) -> Result<Vec<NewWebhookEvent>, WebhookError> {
        verify_webhook(self.config.webhook_token.as_ref(), request)
    }

    fn interpret_event(&self, event: &Value) -> Vec<EventAction> {
        let (Some(model), Some(id)) = (
            event.get("_model").and_then(Value::as_str),
            event.get("_id").and_then(Value::as_i64),
        ) else {
            return Vec::new();
        };
        if !self.config.models.iter().any(|m| m == model) {
            return Vec::new();
        }
        vec![EventAction::Fetch {
            object: model.to_string(),
            ids: vec![id.to_string()],
        }]
    }
}

/// Verifies an Odoo webhook (its `?token=`, in constant time, before the body is read) and turns it into one event.
pub fn verify_webhook(
    token: Option<&Secret>,
    request: &WebhookRequest<'_>,
) -> Result<Vec<NewWebhookEvent>, WebhookError> {
    let expected = token.ok_or(WebhookError::Unauthorized(
        "webhooks are not configured for this connection",
    ))?;
    let query = request.path_and_query.split_once('?').map(|(_, q)| q).unwrap_or("");
    let token = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .ok_or(WebhookError::Unauthorized("missing token"))?;
    if !expected.matches(token.as_bytes()) {
        return Err(WebhookError::Unauthorized("bad token"));
    }
    let body: Value = serde_json::from_slice(request.body)
        .map_err(|e| WebhookError::Malformed(format!("expected a JSON object: {e}")))?;
    let model = body.get("_model").and_then(Value::as_str);
    let id = body.get("_id").and_then(Value::as_i64);
    let (Some(model), Some(_)) = (model, id) else {
        return Err(WebhookError::Malformed("expected _model and an integer _id".into()));
    };
    // Odoo sends no event id (and never retries): the body's hash makes an identical redelivery a no-op.
    let event_id = hex::encode(Sha256::digest(request.body));
    Ok(vec![NewWebhookEvent {
        event_id,
        object: Some(model.to_string()),
        headers: json!({}),
        body,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_records_with_utc_write_dates() {
        let r = row_to_record(json!({"id": 7, "write_date": "2024-03-01 12:00:05", "name": "A"})).unwrap();
        assert_eq!(r.remote_id, "7");
        assert_eq!(format_time(r.updated_at), "2024-03-01 12:00:05");
        assert!(row_to_record(json!({"id": 7})).is_err());
    }
}
