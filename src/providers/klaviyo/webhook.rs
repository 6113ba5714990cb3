//! Klaviyo system webhooks: verification and event parsing.
//!
//! Klaviyo signs each delivery with `Klaviyo-Signature` = lowercase hex of HMAC-SHA256, keyed with the webhook's
//! secret, over the raw body followed by the `Klaviyo-Timestamp` header exactly as sent (an HTTP date such as
//! `Thu, 04 Jan 2024 18:05:25 GMT`). `Klaviyo-Webhook-Id` names the webhook (the subscription), not the event,
//! and must equal the signed `meta.klaviyo_webhook_id`. Each item of `data` is one event with its own
//! `external_id`, which is the event id the inbox deduplicates on.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::config::PROFILES;
use crate::config::Secret;
use crate::providers::{EventAction, WebhookError, WebhookRequest};
use crate::store::NewWebhookEvent;

/// What a connection checks a delivery against.
pub struct Verifier<'a> {
    pub secret: Option<&'a Secret>,
    /// When set, only this webhook's deliveries are accepted.
    pub webhook_id: Option<&'a str>,
    pub tolerance: std::time::Duration,
}

impl Verifier<'_> {
    /// Verifies the signature on the raw bytes (constant time), then the timestamp window, then the envelope;
    /// returns the events. Refuses with exactly one [`WebhookError`] class per failure.
    pub fn verify(&self, request: &WebhookRequest<'_>) -> Result<Vec<NewWebhookEvent>, WebhookError> {
        let secret = self.secret.ok_or(WebhookError::Unauthorized(
            "webhooks are not configured for this connection",
        ))?;
        let header = |name: &str| request.headers.get(name).map(|v| v.to_str());
        let signature = match header("klaviyo-signature") {
            None => return Err(WebhookError::Unauthorized("missing signature")),
            Some(Err(_)) => return Err(WebhookError::Unauthorized("bad signature")),
            Some(Ok(s)) => s.trim(),
        };
        let timestamp = match header("klaviyo-timestamp") {
            None => return Err(WebhookError::Unauthorized("missing timestamp")),
            Some(Err(_)) => return Err(WebhookError::Unauthorized("invalid timestamp")),
            Some(Ok(t)) => t,
        };
        let expected = hex::decode(signature).map_err(|_| WebhookError::Unauthorized("bad signature"))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key");
        mac.update(request.body);
        mac.update(timestamp.as_bytes());
        mac.verify_slice(&expected)
            .map_err(|_| WebhookError::Unauthorized("bad signature"))?;
        // Signed, so the timestamp is Klaviyo's: only its age is left to judge (a replay).
        let sent = parse_http_date(timestamp).ok_or(WebhookError::Unauthorized("invalid timestamp"))?;
        let age = (request.now - sent).num_milliseconds().unsigned_abs();
        if age > self.tolerance.as_millis() as u64 {
            return Err(WebhookError::Stale);
        }
        let envelope: Value = serde_json::from_slice(request.body)
            .map_err(|e| WebhookError::Malformed(format!("expected a JSON object: {e}")))?;
        let meta_id = envelope
            .pointer("/meta/klaviyo_webhook_id")
            .and_then(Value::as_str)
            .ok_or_else(|| WebhookError::Malformed("no meta.klaviyo_webhook_id".into()))?;
        // The header is not signed; the body is. A mismatch is what Klaviyo calls potential malicious activity.
        let header_id = request
            .headers
            .get("klaviyo-webhook-id")
            .and_then(|v| v.to_str().ok())
            .ok_or(WebhookError::Unauthorized("missing Klaviyo-Webhook-Id"))?;
        if header_id.trim() != meta_id {
            return Err(WebhookError::Unauthorized(
                "Klaviyo-Webhook-Id does not match the signed body",
            ));
        }
        if self.webhook_id.is_some_and(|expected| expected != meta_id) {
            return Err(WebhookError::Unauthorized("delivery from another Klaviyo webhook"));
        }
        parse_events(&envelope, meta_id, timestamp)
    }
}

/// `Klaviyo-Timestamp`: an HTTP date (IMF-fixdate; RFC 2822 parsing accepts it).
pub fn parse_http_date(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Splits a verified envelope into one event per `data` item.
fn parse_events(envelope: &Value, webhook_id: &str, timestamp: &str) -> Result<Vec<NewWebhookEvent>, WebhookError> {
    let items = envelope
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| WebhookError::Malformed("expected `data`, an array of events".into()))?;
    if items.is_empty() {
        return Err(WebhookError::Malformed("empty event batch".into()));
    }
    items
        .iter()
        .map(|item| {
            let event_id = item
                .get("external_id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| WebhookError::Malformed("event without external_id".into()))?;
            item.get("topic")
                .and_then(Value::as_str)
                .ok_or_else(|| WebhookError::Malformed("event without topic".into()))?;
            if !item.get("payload").is_some_and(Value::is_object) {
                return Err(WebhookError::Malformed("event without payload".into()));
            }
            Ok(NewWebhookEvent {
                event_id: event_id.to_string(),
                object: Some(PROFILES.to_string()),
                headers: json!({"webhook_id": webhook_id, "timestamp": timestamp}),
                body: item.clone(),
            })
        })
        .collect()
}

/// The profile an event is about: its payload is a Get Event answer (`data.relationships.profile.data.id`);
/// the bare resource form is accepted too.
fn profile_of(event: &Value) -> Option<String> {
    let payload = event.get("payload")?;
    let resource = payload.get("data").unwrap_or(payload);
    resource
        .pointer("/relationships/profile/data/id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Every system-webhook topic is an event on a profile (a consent change, a message received, ...); the event
/// does not carry the profile's attributes, so the profile is read. A profile gone by then is marked deleted.
pub fn interpret(event: &Value, objects: &[String]) -> Vec<EventAction> {
    if !objects.iter().any(|o| o == PROFILES) {
        return Vec::new();
    }
    match profile_of(event) {
        Some(id) => vec![EventAction::Fetch {
            object: PROFILES.to_string(),
            ids: vec![id],
        }],
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::TimeZone;
    use http::{HeaderMap, Method};
    use std::time::Duration;

    const SECRET: &str = "a-webhook-secret-of-16+";
    const HOOK: &str = "01HWEBHOOK";

    fn sign(body: &[u8], timestamp: &str, secret: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        mac.update(timestamp.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn body(hook: &str) -> Bytes {
        Bytes::from(
            json!({
                "data": [{
                    "external_id": "ev-1",
                    "topic": "event:klaviyo.subscribed_to_email_marketing",
                    "payload": {"data": {"type": "event", "id": "ev-1", "relationships": {"profile": {"data": {"type": "profile", "id": "01HPROFILE"}}}}},
                }],
                "meta": {"klaviyo_account_id": "Acc", "klaviyo_webhook_id": hook, "timestamp": "2024-01-04T18:05:25+00:00"},
            })
            .to_string(),
        )
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 4, 18, 5, 30).unwrap()
    }

    const SENT: &str = "Thu, 04 Jan 2024 18:05:25 GMT";

    fn headers(body: &[u8], timestamp: &str, secret: &str, hook: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("klaviyo-signature", sign(body, timestamp, secret).parse().unwrap());
        h.insert("klaviyo-timestamp", timestamp.parse().unwrap());
        h.insert("klaviyo-webhook-id", hook.parse().unwrap());
        h
    }

    fn check(
        headers: &HeaderMap,
        body: &Bytes,
        now: DateTime<Utc>,
        pinned: Option<&str>,
    ) -> Result<Vec<NewWebhookEvent>, WebhookError> {
        let secret = Secret::new(SECRET);
        let verifier = Verifier {
            secret: Some(&secret),
            webhook_id: pinned,
            tolerance: Duration::from_secs(300),
        };
        verifier.verify(&WebhookRequest {
            method: &Method::POST,
            path_and_query: "/webhooks/klaviyo",
            headers,
            body,
            public_url: None,
            now,
        })
    }

    #[test]
    fn a_signed_delivery_yields_one_event_per_item_keyed_by_external_id() {
        let b = body(HOOK);
        let events = check(&headers(&b, SENT, SECRET, HOOK), &b, now(), Some(HOOK)).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_id, "ev-1");
        assert_eq!(events[0].headers["webhook_id"], HOOK);
        let objects = vec![PROFILES.to_string()];
        assert_eq!(
            interpret(&events[0].body, &objects),
            vec![EventAction::Fetch {
                object: PROFILES.into(),
                ids: vec!["01HPROFILE".into()]
            }]
        );
    }

    #[test]
    fn a_wrong_secret_a_changed_body_or_a_changed_timestamp_is_unauthorized() {
        let b = body(HOOK);
        let wrong = headers(&b, SENT, "another-secret-entirely", HOOK);
        assert_eq!(
            check(&wrong, &b, now(), None).unwrap_err(),
            WebhookError::Unauthorized("bad signature")
        );
        let good = headers(&b, SENT, SECRET, HOOK);
        let tampered = Bytes::from(b.iter().copied().chain(*b" ").collect::<Vec<u8>>());
        assert_eq!(
            check(&good, &tampered, now(), None).unwrap_err(),
            WebhookError::Unauthorized("bad signature")
        );
        let mut moved = good.clone();
        moved.insert("klaviyo-timestamp", "Thu, 04 Jan 2024 18:05:26 GMT".parse().unwrap());
        assert_eq!(
            check(&moved, &b, now(), None).unwrap_err(),
            WebhookError::Unauthorized("bad signature")
        );
        let mut not_hex = good.clone();
        not_hex.insert("klaviyo-signature", "zz".parse().unwrap());
        assert_eq!(
            check(&not_hex, &b, now(), None).unwrap_err(),
            WebhookError::Unauthorized("bad signature")
        );
    }

    #[test]
    fn missing_headers_are_unauthorized() {
        let b = body(HOOK);
        for name in ["klaviyo-signature", "klaviyo-timestamp", "klaviyo-webhook-id"] {
            let mut h = headers(&b, SENT, SECRET, HOOK);
            h.remove(name);
            assert!(
                matches!(check(&h, &b, now(), None), Err(WebhookError::Unauthorized(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn webhook_with_stale_timestamp_is_rejected() {
        let b = body(HOOK);
        let h = headers(&b, SENT, SECRET, HOOK);
        assert_eq!(
            check(&h, &b, now() + chrono::Duration::minutes(6), None).unwrap_err(),
            WebhookError::Stale
        );
        assert_eq!(
            check(&h, &b, now() - chrono::Duration::minutes(6), None).unwrap_err(),
            WebhookError::Stale
        );
        // A signed but unreadable timestamp.
        let h = headers(&b, "yesterday", SECRET, HOOK);
        assert_eq!(
            check(&h, &b, now(), None).unwrap_err(),
            WebhookError::Unauthorized("invalid timestamp")
        );
    }

    #[test]
    fn the_webhook_id_header_must_match_the_signed_body_and_the_pinned_id() {
        let b = body(HOOK);
        let h = headers(&b, SENT, SECRET, "01HOTHER");
        assert!(matches!(check(&h, &b, now(), None), Err(WebhookError::Unauthorized(_))));
        let h = headers(&b, SENT, SECRET, HOOK);
        assert!(matches!(
            check(&h, &b, now(), Some("01HOTHER")),
            Err(WebhookError::Unauthorized(_))
        ));
    }

    #[test]
    fn verified_but_malformed_bodies_are_malformed() {
        for text in [
            "not json".to_string(),
            json!({"data": [], "meta": {"klaviyo_webhook_id": HOOK}}).to_string(),
            json!({"meta": {"klaviyo_webhook_id": HOOK}}).to_string(),
            json!({"data": [{"topic": "t", "payload": {}}], "meta": {"klaviyo_webhook_id": HOOK}}).to_string(),
            json!({"data": [{"external_id": "e", "payload": {}}], "meta": {"klaviyo_webhook_id": HOOK}}).to_string(),
            json!({"data": [{"external_id": "e", "topic": "t"}]}).to_string(),
        ] {
            let b = Bytes::from(text.clone());
            let h = headers(&b, SENT, SECRET, HOOK);
            assert!(
                matches!(check(&h, &b, now(), None), Err(WebhookError::Malformed(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn no_secret_refuses_everything() {
        let b = body(HOOK);
        let verifier = Verifier {
            secret: None,
            webhook_id: None,
            tolerance: Duration::from_secs(300),
        };
        let h = headers(&b, SENT, SECRET, HOOK);
        let r = verifier.verify(&WebhookRequest {
            method: &Method::POST,
            path_and_query: "/webhooks/k",
            headers: &h,
            body: &b,
            public_url: None,
            now: now(),
        });
        assert!(matches!(r, Err(WebhookError::Unauthorized(_))));
    }

    #[test]
    fn events_without_a_profile_ask_for_nothing() {
        let objects = vec![PROFILES.to_string()];
        assert!(interpret(&json!({"external_id": "e", "topic": "t", "payload": {}}), &objects).is_empty());
        let bare = json!({"payload": {"relationships": {"profile": {"data": {"id": "P"}}}}});
        assert_eq!(
            interpret(&bare, &objects).len(),
            1,
            "the bare resource form is read too"
        );
        assert!(interpret(&bare, &[]).is_empty());
    }
}
