//! Instant notifications (`/actions/watch`): channels that a client subscribes with a `notify_url` and a `token`,
//! that expire, and the callbacks Zoho POSTs for every create, edit and delete in a watched module:
//! `{server_time, query_params, module, resource_uri, ids, affected_fields, operation, channel_id, token}`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// One subscribed channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub channel_id: String,
    /// `Leads.all`, `Contacts.create`, `Deals.edit`, `Accounts.delete`, ...
    pub events: Vec<String>,
    pub notify_url: String,
    pub token: Option<String>,
    pub expiry: DateTime<Utc>,
}

impl Channel {
    /// Whether this channel wants `operation` ("insert", "update", "delete") on `module` at `now`.
    pub fn wants(&self, module: &str, operation: &str, now: DateTime<Utc>) -> bool {
        if now >= self.expiry {
            return false;
        }
        let event = match operation {
            "insert" => "create",
            "update" => "edit",
            _ => "delete",
        };
        self.events.iter().any(|e| {
            e.split_once('.')
                .is_some_and(|(m, what)| m == module && (what == "all" || what == event))
        })
    }
}

/// One callback the simulator sent, and how the receiver answered (None: no answer, a connection error).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub channel_id: String,
    pub module: String,
    pub operation: String,
    pub ids: Vec<String>,
    pub status: Option<u16>,
}

/// The body of one callback, as Zoho sends it.
pub fn callback_body(
    channel: &Channel,
    module: &str,
    operation: &str,
    ids: &[String],
    server_time: DateTime<Utc>,
    api_base: &str,
) -> Value {
    let mut body = json!({
        "server_time": server_time.timestamp_millis(),
        "query_params": {},
        "module": module,
        "resource_uri": format!("{api_base}/crm/v8/{module}"),
        "ids": ids,
        "affected_fields": [],
        "operation": operation,
        "channel_id": channel.channel_id,
    });
    if let Some(token) = &channel.token {
        body["token"] = json!(token);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_match_events_until_they_expire() {
        let now = Utc::now();
        let channel = Channel {
            channel_id: "1000".into(),
            events: vec!["Leads.all".into(), "Deals.delete".into()],
            notify_url: "http://x".into(),
            token: Some("t".into()),
            expiry: now + chrono::Duration::seconds(5),
        };
        assert!(channel.wants("Leads", "update", now));
        assert!(channel.wants("Deals", "delete", now));
        assert!(!channel.wants("Deals", "insert", now));
        assert!(!channel.wants("Contacts", "insert", now));
        assert!(!channel.wants("Leads", "update", now + chrono::Duration::seconds(5)));
        let body = callback_body(&channel, "Leads", "update", &["1".into()], now, "http://sim");
        assert_eq!(body["token"], "t");
        assert_eq!(body["resource_uri"], "http://sim/crm/v8/Leads");
        assert_eq!(body["ids"][0], "1");
    }
}
