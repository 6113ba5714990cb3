//! Pipedrive webhooks v2: verified by the HTTP Basic credentials configured on the webhook (Pipedrive signs
//! nothing), parsed from `{data, previous, meta}`, and turned into reads and deletes.
//!
//! The credentials are compared as SHA-256 digests in constant time, so neither their content nor their length
//! shows in the timing. There is no timestamp check: nothing binds `meta.timestamp` to the credentials, so it
//! would prove nothing, and Pipedrive retries a failed delivery minutes later with the same event id (the inbox
//! makes that redelivery a no-op).
//!
//! A merge is a `delete` of the merged record whose meta names the survivor in `merged_to_id` (v2 has no
//! `merged` action): it deletes one record and re-reads the other.

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::paging::parse_time;
use crate::config::Secret;
use crate::providers::{EventAction, WebhookError, WebhookRequest};
use crate::store::NewWebhookEvent;

/// `person` -> `persons`: the API path segment (the connection's object name) of a webhook entity.
pub fn object_of(entity: &str) -> String {
    match entity {
        "person" => "persons".into(),
        "organization" => "organizations".into(),
        "deal" => "deals".into(),
        other => match other.strip_suffix('y') {
            Some(stem) => format!("{stem}ies"),
            None => format!("{other}s"),
        },
    }
}

fn same(expected: &[u8], given: &[u8]) -> bool {
    Sha256::digest(expected).ct_eq(&Sha256::digest(given)).into()
}

/// Checks the request's `Authorization: Basic` credentials against the configured ones.
pub fn verify(request: &WebhookRequest<'_>, user: Option<&str>, password: Option<&Secret>) -> Result<(), WebhookError> {
    let (Some(user), Some(password)) = (user, password) else {
        return Err(WebhookError::Unauthorized(
            "webhooks are not configured for this connection",
        ));
    };
    let header = request
        .headers
        .get(http::header::AUTHORIZATION)
        .ok_or(WebhookError::Unauthorized("missing credentials"))?;
    let (scheme, encoded) = header
        .to_str()
        .ok()
        .and_then(|v| v.trim().split_once(' '))
        .ok_or(WebhookError::Unauthorized("bad credentials"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(WebhookError::Unauthorized("expected HTTP Basic credentials"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| WebhookError::Unauthorized("bad credentials"))?;
    let split = decoded.iter().position(|b| *b == b':');
    let (given_user, given_password) = match split {
        Some(at) => (&decoded[..at], &decoded[at + 1..]),
        None => return Err(WebhookError::Unauthorized("bad credentials")),
    };
    // Both compared every time: which half was wrong must not show in the timing either.
    let user_ok = same(user.as_bytes(), given_user);
    let password_ok = same(password.expose().as_bytes(), given_password);
    if user_ok & password_ok {
        Ok(())
    } else {
        Err(WebhookError::Unauthorized("bad credentials"))
    }
}

fn id_string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

/// Splits a verified body into its one event. Only `meta` is kept: the record is read from the API anyway (v2's
/// `data` holds only part of it), and the inbox need not hold personal data it never uses.
pub fn parse_event(body: &[u8]) -> Result<Vec<NewWebhookEvent>, WebhookError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(format!("expected a JSON object: {e}")))?;
    let meta = value
        .get("meta")
        .filter(|m| m.is_object())
        .ok_or_else(|| WebhookError::Malformed("expected a webhooks v2 body with a meta object".into()))?;
    if let Some(version) = meta.get("version").and_then(Value::as_str)
        && !version.starts_with('2')
    {
        return Err(WebhookError::Malformed(format!(
            "webhook version {version}; create the webhook with version 2.0"
        )));
    }
    let action = meta
        .get("action")
        .and_then(Value::as_str)
        .ok_or_else(|| WebhookError::Malformed("meta without action".into()))?;
    if !["create", "change", "delete"].contains(&action) {
        return Err(WebhookError::Malformed(format!(
            "unknown action {action:?} (webhooks v2 send create, change and delete)"
        )));
    }
    let entity = meta
        .get("entity")
        .and_then(Value::as_str)
        .ok_or_else(|| WebhookError::Malformed("meta without entity".into()))?;
    id_string(meta.get("entity_id")).ok_or_else(|| WebhookError::Malformed("meta without entity_id".into()))?;
    let event_id = id_string(meta.get("id")).ok_or_else(|| WebhookError::Malformed("meta without id".into()))?;
    Ok(vec![NewWebhookEvent {
        event_id,
        object: Some(object_of(entity)),
        headers: json!({"attempt": meta.get("attempt").cloned().unwrap_or(Value::Null)}),
        body: json!({"meta": meta}),
    }])
}

/// What one stored event asks for, given the objects the connection syncs.
pub fn interpret(event: &Value, objects: &[String]) -> Vec<EventAction> {
    let meta = &event["meta"];
    let (Some(action), Some(entity), Some(id)) = (
        meta.get("action").and_then(Value::as_str),
        meta.get("entity").and_then(Value::as_str),
        id_string(meta.get("entity_id")),
    ) else {
        return Vec::new();
    };
    let object = object_of(entity);
    if !objects.contains(&object) {
        return Vec::new();
    }
    match action {
        "create" | "change" => vec![EventAction::Fetch { object, ids: vec![id] }],
        "delete" => {
            let at = meta.get("timestamp").and_then(Value::as_str).and_then(parse_time);
            let survivor = id_string(meta.get("merged_to_id"));
            let mut actions = vec![EventAction::Delete {
                object: object.clone(),
                ids: vec![id],
                at,
            }];
            if let Some(survivor) = survivor {
                actions.push(EventAction::Fetch {
                    object,
                    ids: vec![survivor],
                });
            }
            actions
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::{TimeZone, Utc};
    use http::{HeaderMap, Method};

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    fn check(authorization: Option<&str>) -> Result<(), WebhookError> {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert("authorization", value.parse().unwrap());
        }
        let body = Bytes::from_static(b"{}");
        let request = WebhookRequest {
            method: &Method::POST,
            path_and_query: "/webhooks/pd",
            headers: &headers,
            body: &body,
            public_url: None,
            now: Utc::now(),
        };
        verify(&request, Some("hook"), Some(&Secret::new("s3cret:with colon")))
    }

    #[test]
    fn the_configured_basic_credentials_are_accepted() {
        assert_eq!(check(Some(&basic("hook", "s3cret:with colon"))), Ok(()));
        assert_eq!(
            check(
                Some(&basic("hook", "s3cret:with colon"))
                    .map(|s| s.replace("Basic", "basic"))
                    .as_deref()
            ),
            Ok(())
        );
    }

    #[test]
    fn missing_or_wrong_credentials_are_refused() {
        assert_eq!(check(None), Err(WebhookError::Unauthorized("missing credentials")));
        for wrong in [
            basic("hook", "s3cret"),
            basic("other", "s3cret:with colon"),
            basic("", ""),
            "Basic not-base64!".to_string(),
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("no-colon")),
            "Basic".to_string(),
        ] {
            assert_eq!(
                check(Some(&wrong)),
                Err(WebhookError::Unauthorized("bad credentials")),
                "{wrong}"
            );
        }
        assert_eq!(
            check(Some("Bearer abc")),
            Err(WebhookError::Unauthorized("expected HTTP Basic credentials"))
        );
    }

    #[test]
    fn unconfigured_credentials_refuse_everything() {
        let headers = HeaderMap::new();
        let body = Bytes::new();
        let request = WebhookRequest {
            method: &Method::POST,
            path_and_query: "/webhooks/pd",
            headers: &headers,
            body: &body,
            public_url: None,
            now: Utc::now(),
        };
        assert!(matches!(
            verify(&request, None, None),
            Err(WebhookError::Unauthorized(_))
        ));
    }

    fn event(meta: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"data": {"id": 1}, "previous": null, "meta": meta})).unwrap()
    }

    #[test]
    fn a_v2_event_is_stored_by_its_id_with_only_its_meta() {
        let body = event(
            json!({"action": "change", "entity": "person", "entity_id": "7", "id": "e-1", "attempt": 2, "version": "2.0"}),
        );
        let events = parse_event(&body).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_id, "e-1");
        assert_eq!(events[0].object.as_deref(), Some("persons"));
        assert!(events[0].body.get("data").is_none(), "the record itself is not kept");
        assert_eq!(events[0].headers["attempt"], 2);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [
            b"not json".to_vec(),
            b"[]".to_vec(),
            br#"{"current": {}, "meta": {"action": "updated", "object": "person", "id": 1, "v": 1}}"#.to_vec(),
            event(json!({"action": "change", "entity": "person", "entity_id": "7", "id": "e", "version": "1.0"})),
            event(json!({"action": "merged", "entity": "person", "entity_id": "7", "id": "e"})),
            event(json!({"action": "change", "entity": "person", "id": "e"})),
            event(json!({"action": "change", "entity_id": "7", "id": "e"})),
            event(json!({"action": "change", "entity": "person", "entity_id": "7"})),
        ] {
            assert!(
                matches!(parse_event(&body), Err(WebhookError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn changes_read_the_record_deletes_delete_it_and_a_merge_does_both() {
        let objects = vec!["persons".to_string(), "deals".to_string()];
        let change = json!({"meta": {"action": "create", "entity": "deal", "entity_id": 3}});
        assert_eq!(
            interpret(&change, &objects),
            vec![EventAction::Fetch {
                object: "deals".into(),
                ids: vec!["3".into()]
            }]
        );
        let at = Utc.with_ymd_and_hms(2025, 5, 15, 18, 0, 0).unwrap();
        let delete = json!({"meta": {"action": "delete", "entity": "person", "entity_id": "7", "timestamp": "2025-05-15T18:00:00.000Z"}});
        assert_eq!(
            interpret(&delete, &objects),
            vec![EventAction::Delete {
                object: "persons".into(),
                ids: vec!["7".into()],
                at: Some(at)
            }]
        );
        let merge = json!({"meta": {"action": "delete", "entity": "person", "entity_id": "7", "merged_to_id": "9"}});
        assert_eq!(
            interpret(&merge, &objects),
            vec![
                EventAction::Delete {
                    object: "persons".into(),
                    ids: vec!["7".into()],
                    at: None
                },
                EventAction::Fetch {
                    object: "persons".into(),
                    ids: vec!["9".into()]
                }
            ]
        );
        let other = json!({"meta": {"action": "change", "entity": "organization", "entity_id": "1"}});
        assert_eq!(
            interpret(&other, &objects),
            vec![],
            "not an object this connection syncs"
        );
    }
}
