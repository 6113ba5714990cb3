//! Zoho's notification callbacks: `{server_time, module, ids, operation, channel_id, token, ...}`. Zoho signs
//! nothing; it echoes the token the channel was subscribed with. So the body is read only far enough to find the
//! token, which is compared in constant time before anything else in it is looked at or stored, and the token is
//! stripped before the event is stored.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::coql::id_text;
use crate::config::Secret;
use crate::providers::{EventAction, WebhookError, WebhookRequest};
use crate::store::NewWebhookEvent;

/// The operations a callback reports.
const OPERATIONS: &[&str] = &["insert", "update", "delete"];

/// The one field read from a callback before it is authenticated; every other field is skipped unparsed.
#[derive(Deserialize)]
struct TokenOnly<'a> {
    #[serde(borrow, default)]
    token: Option<Cow<'a, str>>,
}

/// Verifies a callback and turns it into one stored event.
pub fn verify(
    request: &WebhookRequest<'_>,
    token: Option<&Secret>,
    tolerance: std::time::Duration,
) -> Result<Vec<NewWebhookEvent>, WebhookError> {
    let expected = token.ok_or(WebhookError::Unauthorized(
        "notifications are not configured for this connection",
    ))?;
    // Only the token is read before it is checked: the rest of the body is skipped without being built, so an
    // unauthenticated sender's huge array or deep nesting costs a scan, not a tree in memory. A body that is not
    // JSON carries no token we could check: unauthenticated, not merely malformed.
    let presented = serde_json::from_slice::<TokenOnly<'_>>(request.body)
        .ok()
        .and_then(|t| t.token)
        .ok_or(WebhookError::Unauthorized("missing token"))?;
    if !expected.matches(presented.as_bytes()) {
        return Err(WebhookError::Unauthorized("bad token"));
    }
    // Verified from here on.
    let mut body: Value = serde_json::from_slice(request.body)
        .map_err(|e| WebhookError::Malformed(format!("expected a JSON object: {e}")))?;
    let server_time = body
        .get("server_time")
        .and_then(Value::as_i64)
        .and_then(DateTime::from_timestamp_millis)
        .ok_or_else(|| WebhookError::Malformed("expected server_time in epoch milliseconds".into()))?;
    let age = request.now - server_time;
    if age.abs() > chrono::Duration::from_std(tolerance).unwrap_or(chrono::Duration::MAX) {
        return Err(WebhookError::Stale);
    }
    let module = body
        .get("module")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| WebhookError::Malformed("expected a module".into()))?
        .to_string();
    let operation = body.get("operation").and_then(Value::as_str).unwrap_or_default();
    if !OPERATIONS.contains(&operation) {
        return Err(WebhookError::Malformed(format!(
            "expected an operation of insert, update or delete, not {operation:?}"
        )));
    }
    let ids_ok = body
        .get("ids")
        .and_then(Value::as_array)
        .is_some_and(|ids| !ids.is_empty() && ids.iter().all(|id| id_text(id).is_some()));
    if !ids_ok {
        return Err(WebhookError::Malformed(
            "expected a non-empty list of record ids".into(),
        ));
    }
    // Zoho sends no event id and no retries: the body's hash makes an identical redelivery a duplicate.
    let event_id = hex::encode(Sha256::digest(request.body));
    if let Some(map) = body.as_object_mut() {
        map.remove("token");
    }
    Ok(vec![NewWebhookEvent {
        event_id,
        object: Some(module),
        headers: json!({}),
        body,
    }])
}

/// What a stored callback asks for: read the inserted or updated records, or mark the deleted ones deleted as of
/// the callback's time. Callbacks for modules this connection does not sync ask for nothing.
pub fn interpret(event: &Value, modules: &[String]) -> Vec<EventAction> {
    let Some(module) = event.get("module").and_then(Value::as_str) else {
        return Vec::new();
    };
    if !modules.iter().any(|m| m == module) {
        return Vec::new();
    }
    let ids: Vec<String> = event
        .get("ids")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(id_text).collect())
        .unwrap_or_default();
    if ids.is_empty() {
        return Vec::new();
    }
    let object = module.to_string();
    match event.get("operation").and_then(Value::as_str) {
        Some("delete") => vec![EventAction::Delete {
            object,
            ids,
            at: event
                .get("server_time")
                .and_then(Value::as_i64)
                .and_then(DateTime::<Utc>::from_timestamp_millis),
        }],
        Some("insert" | "update") => vec![EventAction::Fetch { object, ids }],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, Method};
    use std::time::Duration;

    const TOLERANCE: Duration = Duration::from_secs(300);

    fn body(token: &str, now: DateTime<Utc>) -> Value {
        json!({
            "server_time": now.timestamp_millis(),
            "query_params": {},
            "module": "Leads",
            "resource_uri": "https://www.zohoapis.com/crm/v8/Leads",
            "ids": ["5725767000000100001", "5725767000000100002"],
            "affected_fields": [],
            "operation": "update",
            "channel_id": "1000000068001",
            "token": token,
        })
    }

    fn check(raw: &[u8], now: DateTime<Utc>) -> Result<Vec<NewWebhookEvent>, WebhookError> {
        let bytes = Bytes::copy_from_slice(raw);
        let headers = HeaderMap::new();
        let request = WebhookRequest {
            method: &Method::POST,
            path_and_query: "/webhooks/zoho",
            headers: &headers,
            body: &bytes,
            public_url: None,
            now,
        };
        verify(&request, Some(&Secret::new("the-token")), TOLERANCE)
    }

    #[test]
    fn a_callback_with_the_token_becomes_one_event_without_the_token() {
        let now = Utc::now();
        let raw = serde_json::to_vec(&body("the-token", now)).unwrap();
        let events = check(&raw, now).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].object.as_deref(), Some("Leads"));
        assert!(events[0].body.get("token").is_none(), "the token is not stored");
        assert_eq!(
            events[0].event_id,
            check(&raw, now).unwrap()[0].event_id,
            "a redelivery has the same id"
        );
        let modules = vec!["Leads".to_string()];
        assert_eq!(
            interpret(&events[0].body, &modules),
            vec![EventAction::Fetch {
                object: "Leads".into(),
                ids: vec!["5725767000000100001".into(), "5725767000000100002".into()],
            }]
        );
    }

    #[test]
    fn callbacks_without_the_right_token_are_unauthorized() {
        let now = Utc::now();
        let wrong = serde_json::to_vec(&body("the-tokem", now)).unwrap();
        assert_eq!(check(&wrong, now).unwrap_err(), WebhookError::Unauthorized("bad token"));
        let mut missing = body("x", now);
        missing.as_object_mut().unwrap().remove("token");
        let missing = serde_json::to_vec(&missing).unwrap();
        assert_eq!(
            check(&missing, now).unwrap_err(),
            WebhookError::Unauthorized("missing token")
        );
        assert_eq!(
            check(b"not json", now).unwrap_err(),
            WebhookError::Unauthorized("missing token")
        );
        let headers = HeaderMap::new();
        let bytes = Bytes::from(serde_json::to_vec(&body("the-token", now)).unwrap());
        let request = WebhookRequest {
            method: &Method::POST,
            path_and_query: "/webhooks/zoho",
            headers: &headers,
            body: &bytes,
            public_url: None,
            now,
        };
        assert!(matches!(
            verify(&request, None, TOLERANCE),
            Err(WebhookError::Unauthorized(_))
        ));
    }

    #[test]
    fn verified_callbacks_that_are_old_or_malformed_are_refused_as_such() {
        let now = Utc::now();
        let old = serde_json::to_vec(&body("the-token", now - chrono::Duration::minutes(6))).unwrap();
        assert_eq!(check(&old, now).unwrap_err(), WebhookError::Stale);
        for (key, value) in [
            ("ids", json!([])),
            ("operation", json!("merge")),
            ("module", json!("")),
            ("server_time", json!("yesterday")),
        ] {
            let mut b = body("the-token", now);
            b[key] = value;
            let raw = serde_json::to_vec(&b).unwrap();
            assert!(matches!(check(&raw, now), Err(WebhookError::Malformed(_))), "{key}");
        }
    }

    #[test]
    fn deletes_carry_their_time_and_other_modules_are_ignored() {
        let now = Utc::now();
        let mut b = body("the-token", now);
        b["operation"] = json!("delete");
        let modules = vec!["Leads".to_string()];
        let actions = interpret(&b, &modules);
        assert!(matches!(&actions[..], [EventAction::Delete { at: Some(_), .. }]));
        b["module"] = json!("Tasks");
        assert!(interpret(&b, &modules).is_empty());
    }
}
