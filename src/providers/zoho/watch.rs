//! Notification channels (`POST /crm/v8/actions/watch`): the subscription the connection keeps alive, and when
//! it next needs renewing. Zoho channels expire (and Zoho caps how far ahead they may be asked to), so each
//! subscription is renewed at half its remaining life, from the expiry Zoho answered, not the one asked for.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::coql::{literal, parse_time};
use super::policy::describe_error;
use crate::providers::ProviderError;

/// The subscription request: every module's `all` events on one channel.
pub fn subscribe_body(
    channel_id: u64,
    modules: &[String],
    expiry: DateTime<Utc>,
    token: &str,
    notify_url: &str,
) -> Value {
    let events: Vec<String> = modules.iter().map(|m| format!("{m}.all")).collect();
    json!({"watch": [{
        "channel_id": channel_id.to_string(),
        "events": events,
        "channel_expiry": literal(expiry),
        "token": token,
        "notify_url": notify_url,
    }]})
}

/// The expiry Zoho gave the channel (the earliest among its events), from a subscription answer.
pub fn granted_expiry(answer: &[u8]) -> Result<DateTime<Utc>, ProviderError> {
    let value: Value = serde_json::from_slice(answer)
        .map_err(|e| ProviderError::Transient(format!("unreadable subscription answer: {e}")))?;
    let entry = value
        .get("watch")
        .and_then(Value::as_array)
        .and_then(|w| w.first())
        .ok_or_else(|| ProviderError::Transient("subscription answer without a watch entry".into()))?;
    if entry.get("status").and_then(Value::as_str) != Some("success") {
        let why = describe_error(answer).unwrap_or_else(|| entry.to_string());
        return Err(ProviderError::Permanent(format!(
            "Zoho refused the subscription: {why}"
        )));
    }
    entry
        .pointer("/details/events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("channel_expiry").and_then(Value::as_str).and_then(parse_time))
        .min()
        .ok_or_else(|| ProviderError::Transient("subscription answer without a channel_expiry".into()))
}

/// When to renew a channel that expires at `expiry`: halfway there.
pub fn renew_at(now: DateTime<Utc>, expiry: DateTime<Utc>) -> DateTime<Utc> {
    now + (expiry - now) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subscription_names_every_module_and_the_token() {
        let at = parse_time("2024-03-02T00:00:00Z").unwrap();
        let body = subscribe_body(
            1_000_000_068_001,
            &["Leads".into(), "Deals".into()],
            at,
            "tok",
            "https://h/webhooks/z",
        );
        assert_eq!(body["watch"][0]["channel_id"], "1000000068001");
        assert_eq!(body["watch"][0]["events"], json!(["Leads.all", "Deals.all"]));
        assert_eq!(body["watch"][0]["channel_expiry"], "2024-03-02T00:00:00+00:00");
        assert_eq!(body["watch"][0]["token"], "tok");
    }

    #[test]
    fn the_granted_expiry_is_the_earliest_one_answered() {
        let answer = br#"{"watch":[{"code":"SUCCESS","details":{"events":[
            {"channel_expiry":"2024-03-01T18:00:00+05:30","resource_name":"Leads","channel_id":"1"},
            {"channel_expiry":"2024-03-01T17:30:00+05:30","resource_name":"Deals","channel_id":"1"}]},
            "message":"Successfully subscribed for actions-watch of the given module","status":"success"}]}"#;
        assert_eq!(
            granted_expiry(answer).unwrap(),
            parse_time("2024-03-01T12:00:00Z").unwrap()
        );
        let refused = br#"{"watch":[{"code":"INVALID_DATA","details":{"api_name":"token"},"message":"token too long","status":"error"}]}"#;
        assert!(matches!(granted_expiry(refused), Err(ProviderError::Permanent(m)) if m.contains("INVALID_DATA")));
        let now = parse_time("2024-03-01T00:00:00Z").unwrap();
        assert_eq!(
            renew_at(now, parse_time("2024-03-02T00:00:00Z").unwrap()),
            parse_time("2024-03-01T12:00:00Z").unwrap()
        );
    }
}
