//! HubSpot's webhooks as the sender sees them: the event objects, and the three signature schemes (v1, v2, v3)
//! with the headers that carry them.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The portal (account) id every simulated event comes from.
pub const PORTAL_ID: u64 = 62515;
/// The app id every simulated event is sent for.
pub const APP_ID: u64 = 1_160_452;

/// Which of HubSpot's signature schemes a webhook request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVersion {
    /// `X-HubSpot-Signature: hex(sha256(secret + body))`, `X-HubSpot-Signature-Version: v1`.
    V1,
    /// `X-HubSpot-Signature: hex(sha256(secret + method + uri + body))`, `X-HubSpot-Signature-Version: v2`.
    V2,
    /// `X-HubSpot-Signature-v3: base64(hmac_sha256(secret, method + uri + body + timestamp))` with
    /// `X-HubSpot-Request-Timestamp`.
    V3,
}

/// v1: lowercase hex of SHA-256 over `secret + body`.
pub fn sign_v1(secret: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(secret.as_bytes());
    hash.update(body);
    hex::encode(hash.finalize())
}

/// v2: lowercase hex of SHA-256 over `secret + method + uri + body`, where `uri` is the full URL HubSpot called,
/// exactly as called.
pub fn sign_v2(secret: &str, method: &str, uri: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(secret.as_bytes());
    hash.update(method.as_bytes());
    hash.update(uri.as_bytes());
    hash.update(body);
    hex::encode(hash.finalize())
}

/// v3: base64 of HMAC-SHA256 keyed with the secret over `method + uri + body + timestamp_ms`.
///
/// `uri` is the full URL HubSpot called. HubSpot signs it with the escapes `%3A %2F %3F %40 %21 %24 %27 %28 %29
/// %2A %2C %3B` decoded, so this function decodes them too: a receiver has to do the same to verify a request
/// whose URL contains them.
pub fn sign_v3(secret: &str, method: &str, uri: &str, body: &[u8], timestamp_ms: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(method.as_bytes());
    mac.update(decode_v3_uri(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp_ms.to_string().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Decodes exactly the percent-escapes that HubSpot decodes before signing v3 (in either hex case).
fn decode_v3_uri(uri: &str) -> String {
    const DECODED: &[(&str, char)] = &[
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let escape = rest.get(pos + 1..pos + 3).map(str::to_ascii_uppercase);
        match escape.and_then(|e| DECODED.iter().find(|(code, _)| *code == e)) {
            Some((_, c)) => {
                out.push(*c);
                rest = &rest[pos + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The headers (name, value) that sign a POST of `body` to `uri`.
pub(crate) fn signature_headers(
    secret: &str,
    uri: &str,
    body: &[u8],
    version: SignatureVersion,
    timestamp_ms: i64,
) -> Vec<(&'static str, String)> {
    match version {
        SignatureVersion::V1 => vec![
            ("X-HubSpot-Signature", sign_v1(secret, body)),
            ("X-HubSpot-Signature-Version", "v1".into()),
        ],
        SignatureVersion::V2 => vec![
            ("X-HubSpot-Signature", sign_v2(secret, "POST", uri, body)),
            ("X-HubSpot-Signature-Version", "v2".into()),
        ],
        SignatureVersion::V3 => vec![
            (
                "X-HubSpot-Signature-v3",
                sign_v3(secret, "POST", uri, body, timestamp_ms),
            ),
            ("X-HubSpot-Request-Timestamp", timestamp_ms.to_string()),
        ],
    }
}

/// The object type a subscription type's prefix refers to (`contact.creation` -> `contacts`).
pub(crate) fn object_of_subscription(subscription_type: &str) -> String {
    match subscription_type.split('.').next().unwrap_or_default() {
        "contact" => "contacts".into(),
        "company" => "companies".into(),
        "deal" => "deals".into(),
        "ticket" => "tickets".into(),
        other => format!("{other}s"),
    }
}

/// The prefix of the subscription types for an object type (`contacts` -> `contact`).
pub(crate) fn subscription_prefix(object: &str) -> &str {
    match object {
        "contacts" => "contact",
        "companies" => "company",
        "deals" => "deal",
        "tickets" => "ticket",
        other => other.strip_suffix('s').unwrap_or(other),
    }
}

/// A stable subscription id per subscription type, as each subscription in an app has its own.
fn subscription_id(subscription_type: &str) -> u64 {
    // FNV-1a: stable across runs, unlike the standard library's hasher.
    let hash = subscription_type.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    100_000 + hash % 900_000
}

/// One event object as HubSpot sends it. `property` is the changed property's name and new value, for
/// `*.propertyChange` events.
pub(crate) fn event_json(
    event_id: u64,
    subscription_type: &str,
    object_id: &str,
    occurred_at_ms: i64,
    property: Option<(&str, &str)>,
) -> Value {
    let object_id: Value = object_id.parse::<u64>().map_or_else(|_| json!(object_id), |n| json!(n));
    let mut event = json!({
        "eventId": event_id,
        "subscriptionId": subscription_id(subscription_type),
        "portalId": PORTAL_ID,
        "appId": APP_ID,
        "occurredAt": occurred_at_ms,
        "subscriptionType": subscription_type,
        "attemptNumber": 0,
        "objectId": object_id,
        "changeSource": "CRM",
    });
    if subscription_type.ends_with(".propertyChange") {
        let (name, value) = property.unwrap_or(("", ""));
        event["propertyName"] = json!(name);
        event["propertyValue"] = json!(value);
    } else if subscription_type.ends_with(".creation") {
        event["changeFlag"] = json!("CREATED");
    } else if subscription_type.ends_with(".deletion") {
        event["changeFlag"] = json!("DELETED");
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_uri_decodes_only_the_listed_escapes() {
        assert_eq!(
            decode_v3_uri("https://a.io/hook%3Fx%3ay%2C%20z%"),
            "https://a.io/hook?x:y,%20z%"
        );
    }

    #[test]
    fn v3_signature_is_the_same_for_encoded_and_decoded_uris() {
        let encoded = sign_v3("s", "POST", "https://a.io/h%40x", b"[]", 1);
        let decoded = sign_v3("s", "POST", "https://a.io/h@x", b"[]", 1);
        assert_eq!(encoded, decoded);
    }

    #[test]
    fn subscription_types_map_to_object_types_and_back() {
        for object in ["contacts", "companies", "deals", "tickets"] {
            let prefix = subscription_prefix(object);
            assert_eq!(object_of_subscription(&format!("{prefix}.creation")), object);
        }
    }

    #[test]
    fn property_change_events_name_the_property() {
        let event = event_json(7, "contact.propertyChange", "42", 1_000, Some(("email", "a@b.c")));
        assert_eq!(event["objectId"], 42);
        assert_eq!(event["propertyName"], "email");
        assert_eq!(event["propertyValue"], "a@b.c");
        assert_eq!(event["attemptNumber"], 0);
        let creation = event_json(8, "contact.creation", "42", 1_000, None);
        assert!(creation.get("propertyName").is_none());
        assert_eq!(creation["changeFlag"], "CREATED");
    }
}
