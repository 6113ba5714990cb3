//! HubSpot webhook verification (signatures v1, v2 and v3) and event parsing.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::SignatureVersion;
use crate::config::Secret;
use crate::providers::{EventAction, WebhookError, WebhookRequest};
use crate::store::NewWebhookEvent;

/// The encoded characters HubSpot decodes in the URI before signing (v3).
const DECODED_IN_URI: &[(&str, &str)] = &[
    ("%3A", ":"),
    ("%2F", "/"),
    ("%3F", "?"),
    ("%40", "@"),
    ("%21", "!"),
    ("%24", "$"),
    ("%27", "'"),
    ("%28", "("),
    ("%29", ")"),
    ("%2A", "*"),
    ("%2C", ","),
    ("%3B", ";"),
];

/// The URI HubSpot signed: the public URL it called, rebuilt from our `public_url` and the received path.
pub fn signed_uri(request: &WebhookRequest<'_>) -> String {
    let base = request
        .public_url
        .map(|u| u.as_str().trim_end_matches('/').to_string())
        .unwrap_or_default();
    let mut uri = format!("{base}{}", request.path_and_query);
    for (encoded, plain) in DECODED_IN_URI {
        uri = uri.replace(encoded, plain).replace(&encoded.to_lowercase(), plain);
    }
    uri
}

/// Checks the request's signature; returns the header values worth keeping with the events.
pub fn verify(
    request: &WebhookRequest<'_>,
    secret: Option<&Secret>,
    version: SignatureVersion,
    tolerance: std::time::Duration,
) -> Result<Value, WebhookError> {
    let secret = secret.ok_or(WebhookError::Unauthorized(
        "webhooks are not configured for this connection",
    ))?;
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    match version {
        SignatureVersion::V3 => {
            let signature = header("x-hubspot-signature-v3").ok_or(WebhookError::Unauthorized("missing signature"))?;
            let timestamp =
                header("x-hubspot-request-timestamp").ok_or(WebhookError::Unauthorized("missing timestamp"))?;
            let ts_ms: i64 = timestamp
                .trim()
                .parse()
                .map_err(|_| WebhookError::Unauthorized("invalid timestamp"))?;
            // The timestamp is the sender's, unverified yet: `now - i64::MIN` overflows, so an age that does not
            // fit is simply outside the window.
            let age_ms = request.now.timestamp_millis().checked_sub(ts_ms).map(i64::unsigned_abs);
            if age_ms.is_none_or(|age| u128::from(age) > tolerance.as_millis()) {
                return Err(WebhookError::Stale);
            }
            let expected = base64::engine::general_purpose::STANDARD
                .decode(signature.trim())
                .map_err(|_| WebhookError::Unauthorized("bad signature"))?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key");
            mac.update(request.method.as_str().as_bytes());
            mac.update(signed_uri(request).as_bytes());
            mac.update(request.body);
            mac.update(timestamp.as_bytes());
            mac.verify_slice(&expected)
                .map_err(|_| WebhookError::Unauthorized("bad signature"))?;
            Ok(json!({"signature_version": "v3", "timestamp": ts_ms}))
        }
        SignatureVersion::V1 | SignatureVersion::V2 => {
            let signature = header("x-hubspot-signature").ok_or(WebhookError::Unauthorized("missing signature"))?;
            let mut hasher = Sha256::new();
            hasher.update(secret.expose().as_bytes());
            if version == SignatureVersion::V2 {
                hasher.update(request.method.as_str().as_bytes());
                hasher.update(signed_uri(request).as_bytes());
            }
            hasher.update(request.body);
            let expected = hex::encode(hasher.finalize());
            if !bool::from(
                expected
                    .as_bytes()
                    .ct_eq(signature.trim().to_ascii_lowercase().as_bytes()),
            ) {
                return Err(WebhookError::Unauthorized("bad signature"));
            }
            let label = if version == SignatureVersion::V2 { "v2" } else { "v1" };
            Ok(json!({ "signature_version": label }))
        }
    }
}

/// Splits a verified body into events (HubSpot batches them in a JSON array).
pub fn parse_events(body: &[u8], headers: Value) -> Result<Vec<NewWebhookEvent>, WebhookError> {
    let events: Vec<Value> = serde_json::from_slice(body)
        .map_err(|e| WebhookError::Malformed(format!("expected a JSON array of events: {e}")))?;
    if events.is_empty() {
        return Err(WebhookError::Malformed("empty event batch".into()));
    }
    events
        .into_iter()
        .map(|event| {
            let event_id = id_string(event.get("eventId"))
                .ok_or_else(|| WebhookError::Malformed("event without eventId".into()))?;
            let kind = event
                .get("subscriptionType")
                .and_then(Value::as_str)
                .ok_or_else(|| WebhookError::Malformed("event without subscriptionType".into()))?;
            id_string(event.get("objectId")).ok_or_else(|| WebhookError::Malformed("event without objectId".into()))?;
            Ok(NewWebhookEvent {
                event_id,
                object: Some(object_for(kind)),
                headers: headers.clone(),
                body: event,
            })
        })
        .collect()
}

/// What one stored event asks for, given the objects the connection syncs.
pub fn interpret(event: &Value, objects: &[String]) -> Vec<EventAction> {
    let (Some(kind), Some(id)) = (
        event.get("subscriptionType").and_then(Value::as_str),
        id_string(event.get("objectId")),
    ) else {
        return Vec::new();
    };
    let object = object_for(kind);
    if !objects.contains(&object) {
        return Vec::new();
    }
    let action = kind.split_once('.').map(|(_, a)| a).unwrap_or("");
    vec![match action {
        "deletion" | "privacyDeletion" => EventAction::Delete {
            object,
            ids: vec![id],
            at: event
                .get("occurredAt")
                .and_then(Value::as_i64)
                .and_then(chrono::DateTime::from_timestamp_millis),
        },
        _ => EventAction::Fetch { object, ids: vec![id] },
    }]
}

/// "contact.propertyChange" → "contacts", "company.creation" → "companies".
fn object_for(subscription_type: &str) -> String {
    let singular = subscription_type.split('.').next().unwrap_or(subscription_type);
    match singular {
        "company" => "companies".to_string(),
        s if s.ends_with('s') => s.to_string(),
        s => format!("{s}s"),
    }
}

fn id_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::{TimeZone, Utc};
    use http::{HeaderMap, Method};
    use std::time::Duration;

    fn sign_v3(secret: &str, method: &str, uri: &str, body: &[u8], ts: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{method}{uri}").as_bytes());
        mac.update(body);
        mac.update(ts.to_string().as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    struct Fixture {
        headers: HeaderMap,
        body: Bytes,
        url: url::Url,
        method: Method,
    }

    impl Fixture {
        fn new(path: &str, ts: i64, secret: &str) -> Self {
            let url = url::Url::parse("https://hooks.example.com").unwrap();
            let body =
                Bytes::from_static(br#"[{"eventId":1,"subscriptionType":"contact.propertyChange","objectId":7}]"#);
            let uri = format!("https://hooks.example.com{path}");
            let mut headers = HeaderMap::new();
            headers.insert(
                "x-hubspot-signature-v3",
                sign_v3(secret, "POST", &uri, &body, ts).parse().unwrap(),
            );
            headers.insert("x-hubspot-request-timestamp", ts.to_string().parse().unwrap());
            Self {
                headers,
                body,
                url,
                method: Method::POST,
            }
        }

        fn request<'a>(&'a self, path: &'a str, now_ms: i64) -> WebhookRequest<'a> {
            WebhookRequest {
                method: &self.method,
                path_and_query: path,
                headers: &self.headers,
                body: &self.body,
                public_url: Some(&self.url),
                now: Utc.timestamp_millis_opt(now_ms).unwrap(),
            }
        }
    }

    const NOW: i64 = 1_700_000_000_000;
    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn valid_v3_signature_is_accepted() {
        let f = Fixture::new("/webhooks/hs", NOW - 1000, "s3cret");
        let secret = Secret::new("s3cret");
        verify(
            &f.request("/webhooks/hs", NOW),
            Some(&secret),
            SignatureVersion::V3,
            FIVE_MIN,
        )
        .unwrap();
    }

    #[test]
    fn v3_with_wrong_secret_or_path_is_rejected() {
        let f = Fixture::new("/webhooks/hs", NOW, "s3cret");
        let wrong = Secret::new("other");
        let right = Secret::new("s3cret");
        assert_eq!(
            verify(
                &f.request("/webhooks/hs", NOW),
                Some(&wrong),
                SignatureVersion::V3,
                FIVE_MIN
            ),
            Err(WebhookError::Unauthorized("bad signature"))
        );
        assert_eq!(
            verify(
                &f.request("/webhooks/other", NOW),
                Some(&right),
                SignatureVersion::V3,
                FIVE_MIN
            ),
            Err(WebhookError::Unauthorized("bad signature"))
        );
    }

    #[test]
    fn webhook_with_stale_timestamp_is_rejected() {
        let f = Fixture::new("/webhooks/hs", NOW - 301_000, "s3cret");
        let secret = Secret::new("s3cret");
        assert_eq!(
            verify(
                &f.request("/webhooks/hs", NOW),
                Some(&secret),
                SignatureVersion::V3,
                FIVE_MIN
            ),
            Err(WebhookError::Stale)
        );
    }

    #[test]
    fn v3_timestamps_at_the_ends_of_i64_are_stale_not_a_panic() {
        let secret = Secret::new("s3cret");
        for ts in [i64::MIN, i64::MIN + 1, i64::MAX, -1, 0] {
            let f = Fixture::new("/webhooks/hs", NOW, "s3cret");
            let mut headers = f.headers.clone();
            headers.insert("x-hubspot-request-timestamp", ts.to_string().parse().unwrap());
            let request = WebhookRequest {
                headers: &headers,
                ..f.request("/webhooks/hs", NOW)
            };
            assert_eq!(
                verify(&request, Some(&secret), SignatureVersion::V3, FIVE_MIN),
                Err(WebhookError::Stale),
                "{ts}"
            );
        }
        // A tolerance too large for any timestamp to leave still refuses i64::MIN.
        let f = Fixture::new("/webhooks/hs", NOW, "s3cret");
        let mut headers = f.headers.clone();
        headers.insert("x-hubspot-request-timestamp", i64::MIN.to_string().parse().unwrap());
        let request = WebhookRequest {
            headers: &headers,
            ..f.request("/webhooks/hs", NOW)
        };
        assert_eq!(
            verify(&request, Some(&secret), SignatureVersion::V3, Duration::MAX),
            Err(WebhookError::Stale)
        );
    }

    #[test]
    fn uri_encodings_hubspot_decodes_are_decoded_before_verifying() {
        // HubSpot signs "...?a=b:c" even when the request line carries "a=b%3Ac".
        let f = Fixture::new("/webhooks/hs?a=b:c", NOW, "s3cret");
        let secret = Secret::new("s3cret");
        verify(
            &f.request("/webhooks/hs?a=b%3Ac", NOW),
            Some(&secret),
            SignatureVersion::V3,
            FIVE_MIN,
        )
        .unwrap();
    }

    #[test]
    fn v1_and_v2_signatures_verify() {
        let url = url::Url::parse("https://hooks.example.com/").unwrap();
        let body = Bytes::from_static(b"[]");
        let v1 = hex::encode(Sha256::digest(b"s3cret[]"));
        let v2 = hex::encode(Sha256::digest(b"s3cretPOSThttps://hooks.example.com/webhooks/hs[]"));
        let secret = Secret::new("s3cret");
        for (version, sig) in [(SignatureVersion::V1, v1), (SignatureVersion::V2, v2)] {
            let mut headers = HeaderMap::new();
            headers.insert("x-hubspot-signature", sig.parse().unwrap());
            let req = WebhookRequest {
                method: &Method::POST,
                path_and_query: "/webhooks/hs",
                headers: &headers,
                body: &body,
                public_url: Some(&url),
                now: Utc::now(),
            };
            verify(&req, Some(&secret), version, FIVE_MIN).unwrap();
            let other = Secret::new("nope");
            assert!(verify(&req, Some(&other), version, FIVE_MIN).is_err());
        }
    }

    #[test]
    fn unconfigured_secret_refuses_everything() {
        let f = Fixture::new("/webhooks/hs", NOW, "s3cret");
        assert!(matches!(
            verify(&f.request("/webhooks/hs", NOW), None, SignatureVersion::V3, FIVE_MIN),
            Err(WebhookError::Unauthorized(_))
        ));
    }

    #[test]
    fn events_parse_and_map_to_objects() {
        let events = parse_events(
            br#"[{"eventId":1,"subscriptionType":"company.creation","objectId":5},{"eventId":"2","subscriptionType":"contact.deletion","objectId":6}]"#,
            json!({}),
        )
        .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].object.as_deref(), Some("companies"));
        let objects = vec!["contacts".to_string(), "companies".to_string()];
        assert_eq!(
            interpret(&events[1].body, &objects),
            vec![EventAction::Delete {
                object: "contacts".into(),
                ids: vec!["6".into()],
                at: None
            }]
        );
        assert_eq!(
            interpret(&json!({"subscriptionType":"deal.creation","objectId":1}), &objects),
            vec![]
        );
    }

    #[test]
    fn malformed_bodies_are_rejected() {
        for body in [
            &b"{}"[..],
            b"[]",
            b"not json",
            br#"[{"subscriptionType":"contact.creation","objectId":1}]"#,
        ] {
            assert!(
                matches!(parse_events(body, json!({})), Err(WebhookError::Malformed(_))),
                "{body:?}"
            );
        }
    }
}
