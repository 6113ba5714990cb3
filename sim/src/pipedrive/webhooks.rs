//! Pipedrive's webhooks v2 as the sender sees them: one event per POST, a body of `{data, previous, meta}`,
//! authenticated only by the HTTP Basic credentials configured on the webhook, and retried after a failure with
//! the same `meta.id` and a growing `meta.attempt`.
//!
//! A merge is not an action of its own in v2: the merged-away record gets a `delete` whose meta carries
//! `merged_to_id`, and the surviving record gets a `change`.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

/// The company (account) every simulated event comes from.
pub const COMPANY_ID: u64 = 13_923_453;
/// The user whose changes the events report and who owns the webhook.
pub const USER_ID: u64 = 23_836_724;
/// The webhook's id.
pub const WEBHOOK_ID: u64 = 3_046_302;

/// What happened to the record (`meta.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookAction {
    Create,
    Change,
    Delete,
}

impl WebhookAction {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookAction::Create => "create",
            WebhookAction::Change => "change",
            WebhookAction::Delete => "delete",
        }
    }
}

/// `person` for `persons`: the entity name webhooks use.
pub fn singular(entity: &str) -> &str {
    match entity {
        "persons" => "person",
        "organizations" => "organization",
        "deals" => "deal",
        other => other.strip_suffix('s').unwrap_or(other),
    }
}

/// What one event says, before it becomes a body.
#[derive(Debug, Clone)]
pub(crate) struct EventParts {
    pub action: WebhookAction,
    pub entity: String,
    pub id: u64,
    pub data: Option<Value>,
    pub previous: Option<Value>,
    pub merged_to: Option<u64>,
    pub bulk: bool,
    pub at: DateTime<Utc>,
}

/// The v2 body of one event, first attempt.
pub(crate) fn event_body(parts: EventParts) -> Value {
    let event_id = uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string();
    let correlation_id = uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string();
    let mut meta = json!({
        "action": parts.action.as_str(),
        "company_id": COMPANY_ID.to_string(),
        "correlation_id": correlation_id,
        "entity_id": parts.id.to_string(),
        "entity": singular(&parts.entity),
        "id": event_id,
        "is_bulk_edit": parts.bulk,
        "timestamp": parts.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "type": "general",
        "user_id": USER_ID.to_string(),
        "version": "2.0",
        "webhook_id": WEBHOOK_ID.to_string(),
        "webhook_owner_id": USER_ID.to_string(),
        "change_source": "app",
        "permitted_user_ids": [USER_ID.to_string()],
        "attempt": 1,
        "host": "company.pipedrive.com",
    });
    if let Some(into) = parts.merged_to {
        meta["merged_to_id"] = json!(into.to_string());
    }
    json!({"data": parts.data, "previous": parts.previous, "meta": meta})
}

/// POSTs one body with Basic credentials; the receiver's status, or the transport error.
pub(crate) async fn post(
    http: &reqwest::Client,
    url: &str,
    credentials: &(String, String),
    body: &Value,
) -> reqwest::Result<reqwest::StatusCode> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", credentials.0, credentials.1));
    let response = http
        .post(url)
        .header("authorization", format!("Basic {token}"))
        .header("content-type", "application/json")
        .header("user-agent", "Pipedrive Webhooks")
        .body(serde_json::to_vec(body).expect("JSON values serialise"))
        .send()
        .await?;
    Ok(response.status())
}

/// Delivers one body the way Pipedrive does: now, and again after each of `retry_delays` while the receiver
/// fails (an error or a non-2xx answer), with `meta.attempt` counting up and `meta.id` unchanged.
pub(crate) async fn deliver(
    http: reqwest::Client,
    url: String,
    credentials: (String, String),
    mut body: Value,
    retry_delays: Vec<Duration>,
) {
    let mut delays = retry_delays.into_iter();
    loop {
        match post(&http, &url, &credentials, &body).await {
            Ok(status) if status.is_success() => return,
            Ok(status) => tracing::debug!(%status, "Webhook delivery refused; Pipedrive retries."),
            Err(error) => tracing::debug!(%error, "Webhook delivery failed; Pipedrive retries."),
        }
        let Some(delay) = delays.next() else { return };
        tokio::time::sleep(delay).await;
        let attempt = body["meta"]["attempt"].as_u64().unwrap_or(1) + 1;
        body["meta"]["attempt"] = json!(attempt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_is_a_delete_naming_the_survivor() {
        let body = event_body(EventParts {
            action: WebhookAction::Delete,
            entity: "persons".into(),
            id: 7,
            data: None,
            previous: Some(json!({"id": 7})),
            merged_to: Some(9),
            bulk: false,
            at: Utc::now(),
        });
        assert_eq!(body["meta"]["action"], "delete");
        assert_eq!(body["meta"]["entity"], "person");
        assert_eq!(body["meta"]["entity_id"], "7");
        assert_eq!(body["meta"]["merged_to_id"], "9");
        assert_eq!(body["meta"]["version"], "2.0");
        assert!(body["data"].is_null());
    }
}
