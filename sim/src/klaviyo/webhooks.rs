//! Klaviyo's system webhooks as the sender sees them: a batch `{"data": [{external_id, topic, payload}], "meta":
//! {klaviyo_account_id, klaviyo_webhook_id, timestamp, version}}`, where each payload has the shape of a Get Event
//! answer, signed with `Klaviyo-Signature: hex(HMAC-SHA256(secret, body ++ Klaviyo-Timestamp))` and sent with
//! `Klaviyo-Webhook-Id` and `Klaviyo-Timestamp` (an HTTP date).

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::wire::format_time;

/// Topics whose events change a profile (its consent), as the churn sends them.
pub const SUBSCRIBED_TOPIC: &str = "event:klaviyo.subscribed_to_email_marketing";
pub const UNSUBSCRIBED_TOPIC: &str = "event:klaviyo.unsubscribed_from_email_marketing";

/// The webhook API revision the envelope names.
const WEBHOOK_VERSION: &str = "2024-10-15";

/// `Klaviyo-Timestamp`: an IMF-fixdate (`Thu, 04 Jan 2024 18:05:25 GMT`).
pub fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// `Klaviyo-Signature`: lowercase hex of HMAC-SHA256 keyed with the webhook's secret over the raw body followed
/// by the `Klaviyo-Timestamp` value exactly as sent.
pub fn sign(secret: &str, body: &[u8], timestamp: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.update(timestamp.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// One item of `data`: an event about `profile_id` on `topic`, with the payload of a Get Event answer.
pub(crate) fn event_item(
    external_id: &str,
    topic: &str,
    profile_id: &str,
    metric_id: &str,
    at: DateTime<Utc>,
) -> Value {
    json!({
        "external_id": external_id,
        "topic": topic,
        "payload": {
            "data": {
                "type": "event",
                "id": external_id,
                "attributes": {
                    "timestamp": at.timestamp(),
                    "event_properties": {"$flow": "", "List": "Newsletter"},
                    "datetime": format_time(at),
                    "uuid": uuid_like(external_id),
                },
                "relationships": {
                    "profile": {"data": {"type": "profile", "id": profile_id}},
                    "metric": {"data": {"type": "metric", "id": metric_id}},
                },
            },
        },
    })
}

/// The whole request body for `items`.
pub(crate) fn envelope(items: &[Value], account_id: &str, webhook_id: &str, at: DateTime<Utc>) -> Value {
    json!({
        "data": items,
        "meta": {
            "klaviyo_account_id": account_id,
            "klaviyo_webhook_id": webhook_id,
            "timestamp": format_time(at),
            "version": WEBHOOK_VERSION,
        },
    })
}

/// A stable metric id per topic (Klaviyo's metric ids are six base62 characters).
pub(crate) fn metric_id(topic: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut hash = topic.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (0..6)
        .map(|_| {
            let c = ALPHABET[(hash % 62) as usize] as char;
            hash /= 62;
            c
        })
        .collect()
}

fn uuid_like(seed: &str) -> String {
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u128, |h, b| {
        (h ^ u128::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let h = format!("{hash:032x}");
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_timestamp_is_an_imf_fixdate() {
        let t = Utc.with_ymd_and_hms(2024, 1, 4, 18, 5, 25).unwrap();
        assert_eq!(http_date(t), "Thu, 04 Jan 2024 18:05:25 GMT");
    }

    #[test]
    fn the_signature_covers_body_then_timestamp() {
        let a = sign("secret-of-16-chars", b"{}", "Thu, 04 Jan 2024 18:05:25 GMT");
        let b = sign("secret-of-16-chars", b"{}Thu, 04 Jan 2024 18:05:25 GMT", "");
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(a, sign("secret-of-16-chars", b"{} ", "Thu, 04 Jan 2024 18:05:25 GMT"));
    }

    #[test]
    fn events_name_their_profile_like_a_get_event_answer() {
        let item = event_item(
            "ev1",
            SUBSCRIBED_TOPIC,
            "01HPROFILE",
            &metric_id(SUBSCRIBED_TOPIC),
            Utc::now(),
        );
        assert_eq!(
            item["payload"]["data"]["relationships"]["profile"]["data"]["id"],
            "01HPROFILE"
        );
        assert_eq!(metric_id(SUBSCRIBED_TOPIC).len(), 6);
    }
}
