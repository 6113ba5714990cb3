//! Properties of every webhook verifier and payload parser: what was signed (or carries the right token or
//! credentials) is accepted, any change to it is refused, and no input whatever makes one panic.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use crmsyncd::config::Secret;
use crmsyncd::providers::hubspot::{SignatureVersion, webhook as hubspot};
use crmsyncd::providers::klaviyo::webhook::Verifier as KlaviyoVerifier;
use crmsyncd::providers::pipedrive::webhook as pipedrive;
use crmsyncd::providers::salesforce::outbound as salesforce;
use crmsyncd::providers::zoho::webhook as zoho;
use crmsyncd::providers::{WebhookError, WebhookRequest, odoo};
use crmsyncd_sim::hubspot::{sign_v1, sign_v2, sign_v3};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;
use serde_json::json;

/// Counts the bytes this thread allocates, so a test can show that refusing a body did not build it.
struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        // SAFETY: same layout, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    (out, ALLOCATED.with(Cell::get) - before)
}

const NOW_MS: i64 = 1_700_000_000_000;
const WINDOW: Duration = Duration::from_secs(300);

fn now() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(NOW_MS).unwrap()
}

fn public_url() -> url::Url {
    url::Url::parse("https://hooks.example.com").unwrap()
}

/// A request as the endpoint hands it to a verifier.
struct Req {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    url: url::Url,
}

impl Req {
    fn new(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Self {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Self {
            path: path.to_string(),
            headers: map,
            body: Bytes::copy_from_slice(body),
            url: public_url(),
        }
    }

    fn get(&self) -> WebhookRequest<'_> {
        WebhookRequest {
            method: &Method::POST,
            path_and_query: &self.path,
            headers: &self.headers,
            body: &self.body,
            public_url: Some(&self.url),
            now: now(),
        }
    }
}

fn secret() -> impl Strategy<Value = String> {
    "[ -~]{1,64}"
}

/// Printable values a header can carry.
fn header_text() -> impl Strategy<Value = String> {
    "[ -~]{0,80}"
}

/// A different byte string: `bytes` with one byte changed (at a position chosen by `at`).
fn mutate(bytes: &[u8], at: usize, xor: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.is_empty() {
        out.push(xor);
    } else {
        let i = at % out.len();
        out[i] ^= xor;
    }
    out
}

fn is_refusal(r: &Result<impl std::fmt::Debug, WebhookError>) -> bool {
    matches!(r, Err(WebhookError::Unauthorized(_) | WebhookError::Stale))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hubspot_v3_accepts_what_was_signed_and_refuses_any_change(
        secret in secret(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
        age_ms in -299_000i64..299_000,
        at in any::<usize>(),
        xor in 1u8..,
        part in 0u8..3,
    ) {
        let ts = NOW_MS - age_ms;
        let uri = "https://hooks.example.com/webhooks/hs";
        let sig = sign_v3(&secret, "POST", uri, &body, ts);
        let key = Secret::new(secret.clone());
        let ok = Req::new("/webhooks/hs", &[("x-hubspot-signature-v3", &sig), ("x-hubspot-request-timestamp", &ts.to_string())], &body);
        prop_assert!(hubspot::verify(&ok.get(), Some(&key), SignatureVersion::V3, WINDOW).is_ok());
        let changed = match part {
            0 => Req::new("/webhooks/hs", &[("x-hubspot-signature-v3", &sig), ("x-hubspot-request-timestamp", &ts.to_string())], &mutate(&body, at, xor)),
            1 => Req::new("/webhooks/hs", &[("x-hubspot-signature-v3", &sign_v3(&secret, "POST", "https://hooks.example.com/webhooks/other", &body, ts)), ("x-hubspot-request-timestamp", &ts.to_string())], &body),
            _ => Req::new("/webhooks/hs", &[("x-hubspot-signature-v3", &sig), ("x-hubspot-request-timestamp", &(ts + 1 + (at % 1000) as i64).to_string())], &body),
        };
        prop_assert!(is_refusal(&hubspot::verify(&changed.get(), Some(&key), SignatureVersion::V3, WINDOW)));
    }

    #[test]
    fn hubspot_v3_outside_the_window_is_stale_even_when_signed(
        secret in secret(),
        ts in prop_oneof![Just(i64::MIN), Just(i64::MAX), i64::MIN..NOW_MS - 301_000, NOW_MS + 301_000..i64::MAX],
    ) {
        let sig = sign_v3(&secret, "POST", "https://hooks.example.com/webhooks/hs", b"[]", ts);
        let r = Req::new("/webhooks/hs", &[("x-hubspot-signature-v3", &sig), ("x-hubspot-request-timestamp", &ts.to_string())], b"[]");
        prop_assert_eq!(hubspot::verify(&r.get(), Some(&Secret::new(secret)), SignatureVersion::V3, WINDOW), Err(WebhookError::Stale));
    }

    #[test]
    fn hubspot_v1_and_v2_accept_what_was_signed_and_refuse_any_change(
        secret in secret(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
        at in any::<usize>(),
        xor in 1u8..,
    ) {
        let key = Secret::new(secret.clone());
        let uri = "https://hooks.example.com/webhooks/hs";
        for (version, sig) in [(SignatureVersion::V1, sign_v1(&secret, &body)), (SignatureVersion::V2, sign_v2(&secret, "POST", uri, &body))] {
            let ok = Req::new("/webhooks/hs", &[("x-hubspot-signature", &sig)], &body);
            prop_assert!(hubspot::verify(&ok.get(), Some(&key), version, WINDOW).is_ok());
            let changed = Req::new("/webhooks/hs", &[("x-hubspot-signature", &sig)], &mutate(&body, at, xor));
            prop_assert!(is_refusal(&hubspot::verify(&changed.get(), Some(&key), version, WINDOW)));
            let cut = Req::new("/webhooks/hs", &[("x-hubspot-signature", &sig[..at % sig.len()])], &body);
            prop_assert!(is_refusal(&hubspot::verify(&cut.get(), Some(&key), version, WINDOW)));
        }
    }

    #[test]
    fn hubspot_verifier_and_parser_never_panic_on_arbitrary_input(
        signature in header_text(),
        timestamp in header_text(),
        path in "/[ -~]{0,60}",
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let key = Secret::new("s");
        let r = Req::new("/x", &[("x-hubspot-signature-v3", &signature), ("x-hubspot-signature", &signature), ("x-hubspot-request-timestamp", &timestamp)], &body);
        let r = Req { path, ..r };
        for version in [SignatureVersion::V1, SignatureVersion::V2, SignatureVersion::V3] {
            let _ = hubspot::verify(&r.get(), Some(&key), version, WINDOW);
        }
        let _ = hubspot::parse_events(&body, json!({}));
    }

    #[test]
    fn klaviyo_accepts_what_was_signed_and_refuses_any_change(
        secret in secret(),
        event in "[a-zA-Z0-9]{1,20}",
        age_s in -299i64..299,
        at in any::<usize>(),
        xor in 1u8..,
    ) {
        let body = serde_json::to_vec(&json!({"data": [{"external_id": event, "topic": "t", "payload": {}}], "meta": {"klaviyo_webhook_id": "wh"}})).unwrap();
        let date = crmsyncd_sim::klaviyo::http_date(now() - chrono::Duration::seconds(age_s));
        let sig = crmsyncd_sim::klaviyo::sign(&secret, &body, &date);
        let key = Secret::new(secret.clone());
        let verifier = KlaviyoVerifier { secret: Some(&key), webhook_id: None, tolerance: WINDOW };
        let ok = Req::new("/webhooks/kl", &[("klaviyo-signature", &sig), ("klaviyo-timestamp", &date), ("klaviyo-webhook-id", "wh")], &body);
        let events = verifier.verify(&ok.get()).unwrap();
        prop_assert_eq!(&events[0].event_id, &event);
        let changed = Req::new("/webhooks/kl", &[("klaviyo-signature", &sig), ("klaviyo-timestamp", &date), ("klaviyo-webhook-id", "wh")], &mutate(&body, at, xor));
        prop_assert!(is_refusal(&verifier.verify(&changed.get())));
        let cut = Req::new("/webhooks/kl", &[("klaviyo-signature", &sig[..at % sig.len()]), ("klaviyo-timestamp", &date), ("klaviyo-webhook-id", "wh")], &body);
        prop_assert!(is_refusal(&verifier.verify(&cut.get())));
    }

    #[test]
    fn klaviyo_verifier_never_panics_on_arbitrary_input(
        signature in header_text(),
        timestamp in header_text(),
        id in header_text(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let key = Secret::new("s");
        let verifier = KlaviyoVerifier { secret: Some(&key), webhook_id: Some("wh"), tolerance: WINDOW };
        let r = Req::new("/", &[("klaviyo-signature", &signature), ("klaviyo-timestamp", &timestamp), ("klaviyo-webhook-id", &id)], &body);
        let _ = verifier.verify(&r.get());
        // Signed arbitrary bytes get past the signature and reach the parser.
        let date = crmsyncd_sim::klaviyo::http_date(now());
        let sig = crmsyncd_sim::klaviyo::sign("s", &body, &date);
        let r = Req::new("/", &[("klaviyo-signature", &sig), ("klaviyo-timestamp", &date), ("klaviyo-webhook-id", &id)], &body);
        prop_assert!(!matches!(verifier.verify(&r.get()), Err(WebhookError::Unauthorized("bad signature"))));
    }

    #[test]
    fn odoo_and_salesforce_tokens_match_only_themselves(
        token in "[a-zA-Z0-9_-]{1,64}",
        other in "[a-zA-Z0-9_-]{0,64}",
    ) {
        prop_assume!(token != other);
        let key = Secret::new(token.clone());
        let body = br#"{"_model":"res.partner","_id":1}"#;
        let ok = Req::new(&format!("/webhooks/od?token={token}"), &[], body);
        prop_assert!(odoo::verify_webhook(Some(&key), &ok.get()).is_ok());
        let bad = Req::new(&format!("/webhooks/od?token={other}"), &[], body);
        prop_assert!(is_refusal(&odoo::verify_webhook(Some(&key), &bad.get())));
        let (good_path, bad_path) = (format!("/webhooks/sf?token={token}"), format!("/webhooks/sf?token={other}"));
        prop_assert!(salesforce::verify_token(Some(&key), &good_path).is_ok());
        prop_assert!(is_refusal(&salesforce::verify_token(Some(&key), &bad_path)));
        prop_assert!(is_refusal(&salesforce::verify_token(Some(&key), "/webhooks/sf")));
    }

    #[test]
    fn odoo_and_salesforce_never_panic_on_arbitrary_input(
        path in "/[ -~]{0,80}",
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let key = Secret::new("tok");
        let r = Req { path: path.clone(), ..Req::new("/", &[], &body) };
        let _ = odoo::verify_webhook(Some(&key), &r.get());
        let _ = salesforce::verify_token(Some(&key), &path);
        if let Ok(message) = salesforce::parse(&body) {
            let _ = salesforce::events(message, Some("00D000000000001"));
        }
        // With the token, arbitrary bytes reach the JSON parser and are at worst malformed.
        let r = Req::new("/w?token=tok", &[], &body);
        prop_assert!(!is_refusal(&odoo::verify_webhook(Some(&key), &r.get())));
    }

    #[test]
    fn salesforce_envelopes_round_trip_any_ids_and_field_text(
        ids in proptest::collection::vec("[a-zA-Z0-9]{15,18}", 1..5),
        text in "[ -~]{0,40}",
    ) {
        let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;");
        let mut xml = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>00D000000000001AAA</OrganizationId><ActionId>04k</ActionId>"#);
        for id in &ids {
            xml.push_str(&format!(r#"<Notification><Id>{id}</Id><sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>003{id}</sf:Id><sf:Name>{}</sf:Name></sObject></Notification>"#, escape(&text)));
        }
        xml.push_str("</notifications></soapenv:Body></soapenv:Envelope>");
        let message = salesforce::parse(xml.as_bytes()).unwrap();
        let got: Vec<&str> = message.notifications.iter().map(|n| n.id.as_str()).collect();
        prop_assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
        // The parser trims field text (it cannot tell pretty-printing from a value's own edge spaces).
        prop_assert_eq!(message.notifications[0].fields.get("Name").and_then(|v| v.as_str()).unwrap_or(""), text.trim());
        // Any one byte changed: parsed the same, parsed differently, or refused as malformed; never a panic,
        // never an authentication error (the token is checked elsewhere).
        for at in [0, xml.len() / 3, xml.len() / 2, xml.len() - 1] {
            let r = salesforce::parse(&mutate(xml.as_bytes(), at, 0x20));
            prop_assert!(!matches!(r, Err(WebhookError::Unauthorized(_) | WebhookError::Stale)));
        }
    }

    #[test]
    fn zoho_token_is_accepted_only_when_it_is_the_one(
        token in "[a-zA-Z0-9]{1,50}",
        other in "[a-zA-Z0-9]{0,50}",
        ids in proptest::collection::vec(1u64..u64::MAX, 1..5),
    ) {
        prop_assume!(token != other);
        let key = Secret::new(token.clone());
        let body = |t: &str| serde_json::to_vec(&json!({"server_time": NOW_MS, "module": "Leads", "ids": ids.iter().map(u64::to_string).collect::<Vec<_>>(), "operation": "update", "token": t})).unwrap();
        let ok = Req::new("/", &[], &body(&token));
        let events = zoho::verify(&ok.get(), Some(&key), WINDOW).unwrap();
        prop_assert!(events[0].body.get("token").is_none());
        let bad = Req::new("/", &[], &body(&other));
        prop_assert!(is_refusal(&zoho::verify(&bad.get(), Some(&key), WINDOW)));
    }

    #[test]
    fn zoho_never_panics_on_arbitrary_input(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let r = Req::new("/", &[], &body);
        let _ = zoho::verify(&r.get(), Some(&Secret::new("t")), WINDOW);
    }

    #[test]
    fn pipedrive_basic_credentials_match_only_themselves(
        user in "[a-zA-Z0-9._@-]{1,30}",
        password in "[ -~]{1,40}",
        at in any::<usize>(),
        xor in 1u8..0x20,
    ) {
        let key = Secret::new(password.clone());
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let creds = format!("{user}:{password}");
        let ok = Req::new("/", &[("authorization", &format!("Basic {}", b64(creds.as_bytes())))], b"");
        prop_assert!(pipedrive::verify(&ok.get(), Some(&user), Some(&key)).is_ok());
        let changed = mutate(creds.as_bytes(), at, xor);
        let bad = Req::new("/", &[("authorization", &format!("Basic {}", b64(&changed)))], b"");
        prop_assert!(is_refusal(&pipedrive::verify(&bad.get(), Some(&user), Some(&key))));
    }

    #[test]
    fn pipedrive_verifier_and_parser_never_panic_on_arbitrary_input(
        auth in header_text(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let r = Req::new("/", &[("authorization", &auth)], &body);
        let _ = pipedrive::verify(&r.get(), Some("u"), Some(&Secret::new("p")));
        let _ = pipedrive::parse_event(&body);
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_json(value in arbitrary_json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let _ = hubspot::parse_events(&bytes, json!({}));
        let _ = pipedrive::parse_event(&bytes);
        let _ = hubspot::interpret(&value, &["contacts".to_string()]);
        let _ = pipedrive::interpret(&value, &["persons".to_string()]);
        let _ = zoho::interpret(&value, &["Leads".to_string()]);
    }

    #[test]
    fn secret_matches_exactly_its_own_value(a in proptest::collection::vec(any::<u8>(), 1..64), b in proptest::collection::vec(any::<u8>(), 0..64)) {
        let a_text = String::from_utf8_lossy(&a).into_owned();
        let s = Secret::new(a_text.clone());
        prop_assert!(s.matches(a_text.as_bytes()));
        prop_assert_eq!(s.matches(&b), a_text.as_bytes() == b.as_slice());
    }
}

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "[ -~]{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("eventId"),
            Just("subscriptionType"),
            Just("objectId"),
            Just("meta"),
            Just("contact.deletion")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("eventId".to_string()),
                    Just("subscriptionType".to_string()),
                    Just("objectId".to_string()),
                    Just("meta".to_string()),
                    Just("action".to_string()),
                    Just("entity".to_string()),
                    Just("entity_id".to_string()),
                    Just("id".to_string()),
                    Just("module".to_string()),
                    Just("ids".to_string()),
                    Just("operation".to_string()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Regression: Zoho used to parse the whole callback into a JSON tree before it compared the token, so an
/// unauthenticated sender could make the daemon build whatever it sent. Now only the token is read first.
#[test]
fn zoho_refuses_a_wrong_token_without_building_the_body() {
    let mut body = br#"{"token":"wrong","ids":["#.to_vec();
    for i in 0..100_000 {
        body.extend_from_slice(format!("\"{i}\",").as_bytes());
    }
    body.extend_from_slice(br#""0"]}"#);
    let r = Req::new("/", &[], &body);
    let key = Secret::new("the-token");
    let (result, bytes) = allocated_by(|| zoho::verify(&r.get(), Some(&key), WINDOW));
    assert_eq!(result.unwrap_err(), WebhookError::Unauthorized("bad token"));
    assert!(
        bytes < 64 * 1024,
        "refusing a {} byte body allocated {bytes} bytes",
        body.len()
    );
}
