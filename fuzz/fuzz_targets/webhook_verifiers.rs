//! Every webhook verifier on arbitrary headers, path and body: none may panic, and none may accept (the secrets
//! here are never in the input's reach except by chance, which libFuzzer would report as a crash).
#![no_main]

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use crmsyncd::config::Secret;
use crmsyncd::providers::hubspot::{SignatureVersion, webhook as hubspot};
use crmsyncd::providers::klaviyo::webhook::Verifier;
use crmsyncd::providers::{WebhookRequest, odoo, pipedrive, salesforce, zoho};
use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

const WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

fuzz_target!(|data: &[u8]| {
    // Layout: up to 4 header values and a path, separated by 0x00; the rest is the body.
    let mut parts = data.splitn(6, |b| *b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (sig, ts, id, auth, path) = (next(), next(), next(), next(), next());
    let body = Bytes::copy_from_slice(next());
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("x-hubspot-signature-v3", sig),
        ("x-hubspot-signature", sig),
        ("klaviyo-signature", sig),
        ("x-hubspot-request-timestamp", ts),
        ("klaviyo-timestamp", ts),
        ("klaviyo-webhook-id", id),
        ("authorization", auth),
    ] {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
    }
    let path = String::from_utf8_lossy(path);
    let url = url::Url::parse("https://hooks.example.com").unwrap();
    let request = WebhookRequest {
        method: &Method::POST,
        path_and_query: &path,
        headers: &headers,
        body: &body,
        public_url: Some(&url),
        now: Utc.timestamp_millis_opt(1_700_000_000_000).unwrap(),
    };
    let secret = Secret::new("fuzz-secret-that-is-long-enough-not-to-be-guessed");
    for version in [SignatureVersion::V1, SignatureVersion::V2, SignatureVersion::V3] {
        assert!(hubspot::verify(&request, Some(&secret), version, WINDOW).is_err());
    }
    let klaviyo = Verifier {
        secret: Some(&secret),
        webhook_id: None,
        tolerance: WINDOW,
    };
    assert!(klaviyo.verify(&request).is_err());
    assert!(odoo::verify_webhook(Some(&secret), &request).is_err());
    assert!(zoho::webhook::verify(&request, Some(&secret), WINDOW).is_err());
    assert!(pipedrive::webhook::verify(&request, Some("fuzz-user"), Some(&secret)).is_err());
    assert!(salesforce::outbound::verify_token(Some(&secret), &path).is_err());
});
