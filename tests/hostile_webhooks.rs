//! Hostile input at the webhook endpoint, over raw TCP against a real daemon with every provider's webhook
//! route: each row of the table states the exact answer a bad (or good) request gets, and afterwards the inbox
//! holds every event of the good rows and nothing from a bad one.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use crmsyncd::testing::TestDatabase;
use crmsyncd_entities::webhook_events;
use crmsyncd_sim::hubspot::{sign_v1, sign_v3};
use crmsyncd_sim::klaviyo as klaviyo_hooks;
use sea_orm::EntityTrait;
use serde_json::json;
use support::{CREDENTIALS_KEY, TestApp, on_each_database};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Small limits, so that "just over the limit" and "never ends" are quick to show.
const MAX_BODY: usize = 4096;
const HTTP_LIMITS: &str =
    "max_body_bytes = 4096\nheader_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"\napi_token = \"api-secret-token\"";
const DEAD: &str = "http://127.0.0.1:9";

const HS_A: &str = "hs-secret-a";
const HS_B: &str = "hs-secret-b";
const HS_V1: &str = "hs-secret-v1";
const KL: &str = "kl-webhook-secret";
const OD_A: &str = "odoo-token-a";
const OD_B: &str = "odoo-token-b";
const ZO_A: &str = "zoho-token-a";
const ZO_B: &str = "zoho-token-b";
const PD_USER: &str = "pd-user";
const PD_PASS: &str = "pd-pass";
const PD_B_PASS: &str = "pd-pass-b";
const SF: &str = "sf-hook-token";
const SF_ORG: &str = "00D000000000001AAA";

/// Connections that never reach a CRM (their base URL is a closed port): only their webhook routes matter here.
fn connections() -> String {
    let common = "poll_interval = \"1h\"\nrequest_timeout = \"1s\"\nconnect_timeout = \"1s\"\nretry_backoff = { min = \"1s\", max = \"10s\" }\n";
    let oauth = format!(
        "oauth = {{ token_url = \"{DEAD}/token\", client_id = \"c\", client_secret = \"s\", refresh_token = \"r\" }}"
    );
    format!(
        r#"
[[connection]]
id = "hs-a"
provider = "hubspot"
base_url = "{DEAD}"
access_token = "t"
webhook_secret = "{HS_A}"
objects = ["contacts"]
{common}
[[connection]]
id = "hs-b"
provider = "hubspot"
base_url = "{DEAD}"
access_token = "t"
webhook_secret = "{HS_B}"
objects = ["contacts"]
{common}
[[connection]]
id = "hs-v1"
provider = "hubspot"
base_url = "{DEAD}"
access_token = "t"
webhook_secret = "{HS_V1}"
signature_version = "v1"
objects = ["contacts"]
{common}
[[connection]]
id = "kl"
provider = "klaviyo"
base_url = "{DEAD}"
api_key = "pk_x"
webhook_secret = "{KL}"
{common}
[[connection]]
id = "od-a"
provider = "odoo"
base_url = "{DEAD}"
database = "d"
username = "u"
api_key = "k"
models = ["res.partner"]
webhook_token = "{OD_A}"
{common}
[[connection]]
id = "od-b"
provider = "odoo"
base_url = "{DEAD}"
database = "d"
username = "u"
api_key = "k"
models = ["res.partner"]
webhook_token = "{OD_B}"
{common}
[[connection]]
id = "zo-a"
provider = "zoho"
base_url = "{DEAD}"
modules = ["Leads"]
notify_token = "{ZO_A}"
{oauth}
{common}
[[connection]]
id = "zo-b"
provider = "zoho"
base_url = "{DEAD}"
modules = ["Leads"]
notify_token = "{ZO_B}"
{oauth}
{common}
[[connection]]
id = "pd"
provider = "pipedrive"
base_url = "{DEAD}"
api_token = "t"
objects = ["persons"]
webhook_user = "{PD_USER}"
webhook_password = "{PD_PASS}"
{common}
[[connection]]
id = "pd-b"
provider = "pipedrive"
base_url = "{DEAD}"
api_token = "t"
objects = ["persons"]
webhook_user = "{PD_USER}"
webhook_password = "{PD_B_PASS}"
{common}
[[connection]]
id = "sf"
provider = "salesforce"
base_url = "{DEAD}"
objects = ["Contact"]
webhook_token = "{SF}"
organization_id = "{SF_ORG}"
{oauth}
{common}
[[connection]]
id = "cr"
provider = "creatio"
base_url = "{DEAD}"
username = "u"
password = "p"
objects = ["Contact"]
{common}
"#
    )
}

/// One header.
type Header = (&'static str, Vec<u8>);

/// A case of a provider's table: what it tries, the headers, the body.
type Case = (&'static str, Vec<Header>, Vec<u8>);

/// What a row must get back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Status(u16),
    /// The daemon closes the connection without an answer.
    Closed,
}

/// How the request is sent.
enum Send {
    /// The whole request, then wait for the answer.
    Whole(Vec<u8>),
    /// These bytes, then nothing more while the connection stays open (slowloris, a body that never ends).
    Stall(Vec<u8>),
}

struct Row {
    name: String,
    send: Send,
    expect: Expect,
    /// `(connection, event id)` of each event this row must leave in the inbox; empty for a refusal.
    stores: Vec<(String, String)>,
}

/// A request with `Connection: close` and an exact Content-Length.
fn request(method: &str, path: &str, headers: &[(&str, Vec<u8>)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

fn h(name: &'static str, value: impl AsRef<[u8]>) -> (&'static str, Vec<u8>) {
    (name, value.as_ref().to_vec())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `[[[...1...]]]`, `depth` deep.
fn nested(depth: usize) -> Vec<u8> {
    let mut v = "[".repeat(depth).into_bytes();
    v.push(b'1');
    v.extend(std::iter::repeat_n(b']', depth));
    v
}

/// `[1,1,...]` just under the body limit.
fn huge_array() -> Vec<u8> {
    let n = (MAX_BODY - 2) / 2;
    let mut v = b"[".to_vec();
    v.extend(std::iter::repeat_n(&b"1,"[..], n - 1).flatten());
    v.extend_from_slice(b"1]");
    v
}

const INVALID_UTF8: &[u8] =
    b"[{\"eventId\":\"\xff\xfe\",\"subscriptionType\":\"contact.creation\",\"objectId\":\xc3\x28}]";

/// Rows shared by every provider: size, framing and timing attacks that are refused before any verification.
fn transport_rows(rows: &mut Vec<Row>, connection: &str) {
    let path = format!("/webhooks/{connection}");
    let over = vec![b'x'; MAX_BODY + 1];
    rows.push(row(
        format!("{connection}: declared body one byte over the limit"),
        request("POST", &path, &[], &over),
        Expect::Status(413),
    ));
    // Over the limit without declaring it: chunked, one byte too many in all.
    let mut chunked =
        format!("POST {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    for _ in 0..4 {
        chunked.extend_from_slice(format!("400\r\n{}\r\n", "x".repeat(1024)).as_bytes());
    }
    chunked.extend_from_slice(b"1\r\nx\r\n0\r\n\r\n");
    rows.push(row(
        format!("{connection}: chunked body one byte over the limit"),
        chunked,
        Expect::Status(413),
    ));
    let mut never = format!("POST {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    never.extend_from_slice(b"10\r\n0123456789abcdef\r\n");
    rows.push(Row {
        name: format!("{connection}: chunked body that never ends"),
        send: Send::Stall(never),
        expect: Expect::Status(408),
        stores: vec![],
    });
    rows.push(Row {
        name: format!("{connection}: Content-Length promised, body never sent"),
        send: Send::Stall(format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{{").into_bytes()),
        expect: Expect::Status(408),
        stores: vec![],
    });
    rows.push(Row {
        name: format!("{connection}: slowloris head that never finishes"),
        send: Send::Stall(format!("POST {path} HTTP/1.1\r\nHost: a\r\nX-Slow: ").into_bytes()),
        expect: Expect::Closed,
        stores: vec![],
    });
    rows.push(row(
        format!("{connection}: GET"),
        request("GET", &path, &[], b""),
        Expect::Status(405),
    ));
    rows.push(row(
        format!("{connection}: invalid Content-Length"),
        format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n").into_bytes(),
        Expect::Status(400),
    ));
    // RFC 9112 6.3: Transfer-Encoding overrides Content-Length; the chunked body is what gets verified.
    rows.push(row(
        format!("{connection}: Content-Length and chunked together (chunked framing wins, then verification)"),
        format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        .into_bytes(),
        Expect::Status(401),
    ));
}

fn row(name: String, bytes: Vec<u8>, expect: Expect) -> Row {
    Row {
        name,
        send: Send::Whole(bytes),
        expect,
        stores: vec![],
    }
}

fn valid(name: String, bytes: Vec<u8>, stores: &[(&str, &str)]) -> Row {
    Row {
        name,
        send: Send::Whole(bytes),
        expect: Expect::Status(200),
        stores: stores.iter().map(|(c, e)| (c.to_string(), e.to_string())).collect(),
    }
}

fn hubspot_rows(rows: &mut Vec<Row>, port: u16) {
    let uri = |c: &str| format!("http://127.0.0.1:{port}/webhooks/{c}");
    let body = |id: &str| {
        format!(r#"[{{"eventId":"{id}","subscriptionType":"contact.propertyChange","objectId":1,"occurredAt":1}}]"#)
            .into_bytes()
    };
    let signed = |conn: &str, secret: &str, body: &[u8], ts: i64| {
        let sig = sign_v3(secret, "POST", &uri(conn), body, ts);
        vec![
            h("content-type", "application/json"),
            h("x-hubspot-signature-v3", sig),
            h("x-hubspot-request-timestamp", ts.to_string()),
        ]
    };
    let post = |conn: &str, headers: &[(&str, Vec<u8>)], body: &[u8]| {
        request("POST", &format!("/webhooks/{conn}"), headers, body)
    };
    let ts = now_ms();
    let good = body("hs-good");
    rows.push(valid(
        "hubspot v3: valid".into(),
        post("hs-a", &signed("hs-a", HS_A, &good, ts), &good),
        &[("hs-a", "hs-good")],
    ));
    rows.push(valid(
        "hubspot v3: valid, resent unchanged inside the window (a duplicate, stored once)".into(),
        post("hs-a", &signed("hs-a", HS_A, &good, ts), &good),
        &[("hs-a", "hs-good")],
    ));
    let plain = body("hs-text-plain");
    let mut headers = signed("hs-a", HS_A, &plain, ts);
    headers[0] = h("content-type", "text/plain");
    rows.push(valid(
        "hubspot v3: valid signature under a wrong content type (the signature, not the type, authenticates)".into(),
        post("hs-a", &headers, &plain),
        &[("hs-a", "hs-text-plain")],
    ));
    let bad = body("hs-bad");
    let sig = sign_v3(HS_A, "POST", &uri("hs-a"), &bad, ts);
    let with = |sig: &[u8], ts: &[u8]| vec![h("x-hubspot-signature-v3", sig), h("x-hubspot-request-timestamp", ts)];
    let t = ts.to_string();
    let cases: Vec<Case> = vec![
        (
            "missing signature",
            vec![h("x-hubspot-request-timestamp", &t)],
            bad.clone(),
        ),
        (
            "missing timestamp",
            vec![h("x-hubspot-signature-v3", &sig)],
            bad.clone(),
        ),
        ("empty signature", with(b"", t.as_bytes()), bad.clone()),
        (
            "truncated signature",
            with(&sig.as_bytes()[..sig.len() - 4], t.as_bytes()),
            bad.clone(),
        ),
        (
            "signature cut to one byte",
            with(&sig.as_bytes()[..1], t.as_bytes()),
            bad.clone(),
        ),
        (
            "signature with one character changed",
            with(flip(&sig).as_bytes(), t.as_bytes()),
            bad.clone(),
        ),
        (
            "signature that is not base64",
            with(b"!!!not-base64!!!", t.as_bytes()),
            bad.clone(),
        ),
        (
            "signature header that is not UTF-8",
            with(b"\xff\xfe\xfd", t.as_bytes()),
            bad.clone(),
        ),
        (
            "signed with another secret",
            signed("hs-a", "not-the-secret", &bad, ts),
            bad.clone(),
        ),
        (
            "body changed after signing",
            with(sig.as_bytes(), t.as_bytes()),
            body("hs-bad-2"),
        ),
        (
            "timestamp changed after signing",
            with(sig.as_bytes(), (ts + 1).to_string().as_bytes()),
            bad.clone(),
        ),
        (
            "replayed 10 minutes later",
            signed("hs-a", HS_A, &bad, ts - 600_000),
            bad.clone(),
        ),
        (
            "timestamp 10 minutes ahead",
            signed("hs-a", HS_A, &bad, ts + 600_000),
            bad.clone(),
        ),
        ("timestamp i64::MIN", signed("hs-a", HS_A, &bad, i64::MIN), bad.clone()),
        ("timestamp i64::MAX", signed("hs-a", HS_A, &bad, i64::MAX), bad.clone()),
        (
            "timestamp not a number",
            with(sig.as_bytes(), b"yesterday"),
            bad.clone(),
        ),
        ("signature for another URL", signed("hs-b", HS_A, &bad, ts), bad.clone()),
    ];
    for (what, headers, body) in cases {
        rows.push(row(
            format!("hubspot v3: {what}"),
            post("hs-a", &headers, &body),
            Expect::Status(401),
        ));
    }
    rows.push(row(
        "hubspot v3: hs-a's valid request sent to hs-b (another connection)".into(),
        post("hs-b", &signed("hs-a", HS_A, &bad, ts), &bad),
        Expect::Status(401),
    ));
    rows.push(row(
        "hubspot v3: hs-b's secret over hs-a's URL, sent to hs-b".into(),
        post("hs-b", &signed("hs-a", HS_B, &bad, ts), &bad),
        Expect::Status(401),
    ));
    for (what, body) in [
        ("invalid UTF-8 body", INVALID_UTF8.to_vec()),
        ("JSON nested 2000 deep", nested(2000)),
        ("array of 2047 numbers", huge_array()),
        ("empty event array", b"[]".to_vec()),
        ("a JSON object, not an array", b"{}".to_vec()),
        (
            "event without eventId",
            br#"[{"subscriptionType":"contact.creation","objectId":1}]"#.to_vec(),
        ),
    ] {
        rows.push(row(
            format!("hubspot v3: signed, but {what}"),
            post("hs-a", &signed("hs-a", HS_A, &body, ts), &body),
            Expect::Status(400),
        ));
        // The same hostile body unsigned is refused before it is parsed.
        rows.push(row(
            format!("hubspot v3: unsigned {what}"),
            post("hs-a", &signed("hs-a", "wrong", &body, ts), &body),
            Expect::Status(401),
        ));
    }
    let v1 = body("hs-v1-good");
    rows.push(valid(
        "hubspot v1: valid".into(),
        post("hs-v1", &[h("x-hubspot-signature", sign_v1(HS_V1, &v1))], &v1),
        &[("hs-v1", "hs-v1-good")],
    ));
    let v1_sig = sign_v1(HS_V1, &bad);
    for (what, headers) in [
        ("missing signature", vec![]),
        (
            "truncated signature",
            vec![h("x-hubspot-signature", &v1_sig[..v1_sig.len() - 2])],
        ),
        ("another secret", vec![h("x-hubspot-signature", sign_v1(HS_A, &bad))]),
        ("a v3 signature", signed("hs-v1", HS_V1, &bad, ts)),
    ] {
        rows.push(row(
            format!("hubspot v1: {what}"),
            post("hs-v1", &headers, &bad),
            Expect::Status(401),
        ));
    }
    rows.push(row(
        "unknown connection".into(),
        post("nope", &signed("nope", HS_A, &good, ts), &good),
        Expect::Status(404),
    ));
}

/// `s` with its first alphanumeric character changed.
fn flip(s: &str) -> String {
    let mut bytes = s.as_bytes().to_vec();
    let at = bytes.iter().position(u8::is_ascii_alphanumeric).unwrap();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

fn klaviyo_rows(rows: &mut Vec<Row>) {
    let body = |event: &str, webhook: &str| {
        serde_json::to_vec(&json!({
            "data": [{"external_id": event, "topic": "event:klaviyo.updated_profile", "payload": {"data": {}}}],
            "meta": {"klaviyo_webhook_id": webhook},
        }))
        .unwrap()
    };
    let now = chrono::Utc::now();
    let date = klaviyo_hooks::http_date(now);
    let signed = |body: &[u8], secret: &str, date: &str, webhook: &str| {
        vec![
            h("klaviyo-signature", klaviyo_hooks::sign(secret, body, date)),
            h("klaviyo-timestamp", date),
            h("klaviyo-webhook-id", webhook),
        ]
    };
    let post = |headers: &[(&str, Vec<u8>)], body: &[u8]| request("POST", "/webhooks/kl", headers, body);
    let good = body("kl-good", "wh1");
    rows.push(valid(
        "klaviyo: valid".into(),
        post(&signed(&good, KL, &date, "wh1"), &good),
        &[("kl", "kl-good")],
    ));
    let bad = body("kl-bad", "wh1");
    let sig = klaviyo_hooks::sign(KL, &bad, &date);
    let old = klaviyo_hooks::http_date(now - chrono::Duration::minutes(10));
    let ahead = klaviyo_hooks::http_date(now + chrono::Duration::minutes(10));
    let cases: Vec<Case> = vec![
        (
            "missing signature",
            vec![h("klaviyo-timestamp", &date), h("klaviyo-webhook-id", "wh1")],
            bad.clone(),
        ),
        (
            "missing timestamp",
            vec![h("klaviyo-signature", &sig), h("klaviyo-webhook-id", "wh1")],
            bad.clone(),
        ),
        (
            "missing webhook id",
            vec![h("klaviyo-signature", &sig), h("klaviyo-timestamp", &date)],
            bad.clone(),
        ),
        (
            "truncated signature",
            vec![
                h("klaviyo-signature", &sig[..sig.len() - 2]),
                h("klaviyo-timestamp", &date),
                h("klaviyo-webhook-id", "wh1"),
            ],
            bad.clone(),
        ),
        (
            "odd-length signature",
            vec![
                h("klaviyo-signature", &sig[..sig.len() - 1]),
                h("klaviyo-timestamp", &date),
                h("klaviyo-webhook-id", "wh1"),
            ],
            bad.clone(),
        ),
        (
            "signature not hex",
            vec![
                h("klaviyo-signature", "zz".repeat(32)),
                h("klaviyo-timestamp", &date),
                h("klaviyo-webhook-id", "wh1"),
            ],
            bad.clone(),
        ),
        (
            "signature header not UTF-8",
            vec![
                h("klaviyo-signature", b"\xff\xff"),
                h("klaviyo-timestamp", &date),
                h("klaviyo-webhook-id", "wh1"),
            ],
            bad.clone(),
        ),
        ("another secret", signed(&bad, "other", &date, "wh1"), bad.clone()),
        (
            "body changed after signing",
            vec![
                h("klaviyo-signature", &sig),
                h("klaviyo-timestamp", &date),
                h("klaviyo-webhook-id", "wh1"),
            ],
            body("kl-bad-2", "wh1"),
        ),
        ("replayed 10 minutes later", signed(&bad, KL, &old, "wh1"), bad.clone()),
        (
            "timestamp 10 minutes ahead",
            signed(&bad, KL, &ahead, "wh1"),
            bad.clone(),
        ),
        (
            "timestamp not a date, signed",
            signed(&bad, KL, "yesterday", "wh1"),
            bad.clone(),
        ),
        (
            "webhook id header differs from the signed body",
            signed(&bad, KL, &date, "wh2"),
            bad.clone(),
        ),
    ];
    for (what, headers, body) in cases {
        rows.push(row(
            format!("klaviyo: {what}"),
            post(&headers, &body),
            Expect::Status(401),
        ));
    }
    for (what, body) in [
        ("invalid UTF-8 body", INVALID_UTF8.to_vec()),
        ("JSON nested 2000 deep", nested(2000)),
        ("array of 2047 numbers", huge_array()),
        (
            "empty data",
            br#"{"data":[],"meta":{"klaviyo_webhook_id":"wh1"}}"#.to_vec(),
        ),
    ] {
        rows.push(row(
            format!("klaviyo: signed, but {what}"),
            post(&signed(&body, KL, &date, "wh1"), &body),
            Expect::Status(400),
        ));
        rows.push(row(
            format!("klaviyo: unsigned {what}"),
            post(&signed(&body, "wrong", &date, "wh1"), &body),
            Expect::Status(401),
        ));
    }
}

fn odoo_rows(rows: &mut Vec<Row>) {
    let body = |id: u64| format!(r#"{{"_model":"res.partner","_id":{id},"name":"x"}}"#).into_bytes();
    let post = |conn: &str, token: Option<&str>, body: &[u8]| {
        let path = match token {
            Some(t) => format!("/webhooks/{conn}?token={t}"),
            None => format!("/webhooks/{conn}"),
        };
        request("POST", &path, &[h("content-type", "application/json")], body)
    };
    let good = body(7001);
    let good_id = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&good));
    rows.push(valid(
        "odoo: valid".into(),
        post("od-a", Some(OD_A), &good),
        &[("od-a", &good_id)],
    ));
    let bad = body(7002);
    for (what, conn, token) in [
        ("missing token", "od-a", None),
        ("empty token", "od-a", Some("")),
        ("wrong token", "od-a", Some("odoo-token-x")),
        ("truncated token", "od-a", Some(&OD_A[..OD_A.len() - 1])),
        ("token with a byte appended", "od-a", Some("odoo-token-aa")),
        ("token in upper case", "od-a", Some("ODOO-TOKEN-A")),
        ("another connection's token", "od-b", Some(OD_A)),
    ] {
        rows.push(row(
            format!("odoo: {what}"),
            post(conn, token, &bad),
            Expect::Status(401),
        ));
    }
    for (what, body) in [
        ("invalid UTF-8 body", INVALID_UTF8.to_vec()),
        ("JSON nested 2000 deep", nested(2000)),
        ("array of 2047 numbers", huge_array()),
        ("no _id", br#"{"_model":"res.partner"}"#.to_vec()),
    ] {
        rows.push(row(
            format!("odoo: token, but {what}"),
            post("od-a", Some(OD_A), &body),
            Expect::Status(400),
        ));
        rows.push(row(
            format!("odoo: no token, {what}"),
            post("od-a", None, &body),
            Expect::Status(401),
        ));
    }
}

fn zoho_rows(rows: &mut Vec<Row>) {
    let body = |token: &str, ids: &[&str], server_time: i64| {
        serde_json::to_vec(&json!({
            "server_time": server_time, "module": "Leads", "ids": ids, "operation": "update",
            "channel_id": "1", "query_params": {}, "affected_fields": [], "token": token,
        }))
        .unwrap()
    };
    let post = |conn: &str, body: &[u8]| {
        request(
            "POST",
            &format!("/webhooks/{conn}"),
            &[h("content-type", "application/json")],
            body,
        )
    };
    let now = now_ms();
    let good = body(ZO_A, &["9001"], now);
    let good_id = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&good));
    rows.push(valid("zoho: valid".into(), post("zo-a", &good), &[("zo-a", &good_id)]));
    for (what, conn, body) in [
        ("wrong token", "zo-a", body("zoho-token-x", &["9002"], now)),
        ("truncated token", "zo-a", body(&ZO_A[..ZO_A.len() - 1], &["9002"], now)),
        ("another connection's token", "zo-b", body(ZO_A, &["9002"], now)),
        (
            "no token",
            "zo-a",
            br#"{"module":"Leads","ids":["9002"],"operation":"update"}"#.to_vec(),
        ),
        (
            "token not a string",
            "zo-a",
            br#"{"token":1,"module":"Leads"}"#.to_vec(),
        ),
        (
            "token given twice",
            "zo-a",
            format!(r#"{{"token":"x","token":"{ZO_A}"}}"#).into_bytes(),
        ),
        ("not JSON", "zo-a", b"token=zoho-token-a".to_vec()),
        ("invalid UTF-8, no token", "zo-a", INVALID_UTF8.to_vec()),
        ("JSON nested 2000 deep, no token", "zo-a", nested(2000)),
        ("array of 2047 numbers", "zo-a", huge_array()),
        (
            "the right token, replayed 10 minutes later",
            "zo-a",
            body(ZO_A, &["9003"], now - 600_000),
        ),
        (
            "the right token, 10 minutes ahead",
            "zo-a",
            body(ZO_A, &["9003"], now + 600_000),
        ),
    ] {
        rows.push(row(format!("zoho: {what}"), post(conn, &body), Expect::Status(401)));
    }
    let deep = format!(
        r#"{{"token":"{ZO_A}","x":{}}}"#,
        String::from_utf8(nested(2000)).unwrap()
    )
    .into_bytes();
    let mut bad_utf8 = format!(r#"{{"token":"{ZO_A}","module":""#).into_bytes();
    bad_utf8.extend_from_slice(b"\xff\xfe\"}");
    for (what, body, status) in [
        // The token is read (everything else skipped unbuilt) and matches; only then is the rest parsed, and
        // found malformed.
        ("the right token next to JSON nested 2000 deep", deep, 400),
        ("the right token in a body that is not UTF-8", bad_utf8, 400),
        (
            "the right token, no ids",
            format!(r#"{{"token":"{ZO_A}","server_time":{now},"module":"Leads","operation":"update","ids":[]}}"#)
                .into_bytes(),
            400,
        ),
        (
            "the right token, unknown operation",
            format!(r#"{{"token":"{ZO_A}","server_time":{now},"module":"Leads","operation":"merge","ids":["9004"]}}"#)
                .into_bytes(),
            400,
        ),
    ] {
        rows.push(row(
            format!("zoho: {what}"),
            post("zo-a", &body),
            Expect::Status(status),
        ));
    }
}

fn pipedrive_rows(rows: &mut Vec<Row>) {
    let body = |id: &str| {
        serde_json::to_vec(&json!({
            "data": {"id": 1},
            "previous": null,
            "meta": {"action": "change", "entity": "person", "entity_id": "1", "id": id, "version": "2.0", "timestamp": "2024-01-01T00:00:00Z"},
        }))
        .unwrap()
    };
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let basic = |user: &str, pass: &str| format!("Basic {}", b64(&format!("{user}:{pass}")));
    let post = |conn: &str, auth: Option<Vec<u8>>, body: &[u8]| {
        let mut headers = vec![h("content-type", "application/json")];
        if let Some(a) = auth {
            headers.push(h("authorization", a));
        }
        request("POST", &format!("/webhooks/{conn}"), &headers, body)
    };
    let good = body("pd-good");
    rows.push(valid(
        "pipedrive: valid".into(),
        post("pd", Some(basic(PD_USER, PD_PASS).into_bytes()), &good),
        &[("pd", "pd-good")],
    ));
    let lower = body("pd-lower-scheme");
    rows.push(valid(
        "pipedrive: valid, scheme in lower case".into(),
        post(
            "pd",
            Some(format!("basic {}", b64(&format!("{PD_USER}:{PD_PASS}"))).into_bytes()),
            &lower,
        ),
        &[("pd", "pd-lower-scheme")],
    ));
    let bad = body("pd-bad");
    let full = basic(PD_USER, PD_PASS);
    for (what, conn, auth) in [
        ("missing credentials", "pd", None),
        ("wrong password", "pd", Some(basic(PD_USER, "nope").into_bytes())),
        ("wrong user", "pd", Some(basic("someone", PD_PASS).into_bytes())),
        (
            "password with a byte appended",
            "pd",
            Some(basic(PD_USER, "pd-passs").into_bytes()),
        ),
        ("empty password", "pd", Some(basic(PD_USER, "").into_bytes())),
        (
            "no colon",
            "pd",
            Some(format!("Basic {}", b64("pd-userpd-pass")).into_bytes()),
        ),
        (
            "truncated base64",
            "pd",
            Some(full.as_bytes()[..full.len() - 3].to_vec()),
        ),
        ("not base64", "pd", Some(b"Basic !!!!".to_vec())),
        (
            "Bearer scheme with the password",
            "pd",
            Some(format!("Bearer {PD_PASS}").into_bytes()),
        ),
        ("scheme only", "pd", Some(b"Basic".to_vec())),
        ("header not UTF-8", "pd", Some(b"Basic \xff\xfe".to_vec())),
        (
            "another connection's credentials",
            "pd-b",
            Some(basic(PD_USER, PD_PASS).into_bytes()),
        ),
    ] {
        rows.push(row(
            format!("pipedrive: {what}"),
            post(conn, auth, &bad),
            Expect::Status(401),
        ));
    }
    for (what, body) in [
        ("invalid UTF-8 body", INVALID_UTF8.to_vec()),
        ("JSON nested 2000 deep", nested(2000)),
        ("array of 2047 numbers", huge_array()),
        ("a v1 body", br#"{"current":{},"previous":null,"meta":{"action":"updated","object":"person","id":1,"v":1,"version":"1.0"}}"#.to_vec()),
    ] {
        rows.push(row(
            format!("pipedrive: credentials, but {what}"),
            post("pd", Some(full.clone().into_bytes()), &body),
            Expect::Status(400),
        ));
        rows.push(row(format!("pipedrive: no credentials, {what}"), post("pd", None, &body), Expect::Status(401)));
    }
}

fn salesforce_rows(rows: &mut Vec<Row>) {
    let envelope = |org: &str, notification: &str| {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{org}</OrganizationId>
   <ActionId>04k000000000001AAA</ActionId>
   <Notification>
    <Id>{notification}</Id>
    <sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>003000000000001AAA</sf:Id>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#
        )
        .into_bytes()
    };
    let post = |conn: &str, token: Option<&str>, body: &[u8]| {
        let path = match token {
            Some(t) => format!("/webhooks/{conn}?token={t}"),
            None => format!("/webhooks/{conn}"),
        };
        request(
            "POST",
            &path,
            &[h("content-type", "text/xml; charset=utf-8"), h("soapaction", "\"\"")],
            body,
        )
    };
    let good = envelope(SF_ORG, "04l000000000001AAA");
    rows.push(valid(
        "salesforce: valid".into(),
        post("sf", Some(SF), &good),
        &[("sf", "04l000000000001AAA")],
    ));
    let bad = envelope(SF_ORG, "04l000000000002AAA");
    for (what, token, body) in [
        ("missing token", None, bad.clone()),
        ("wrong token", Some("sf-hook-tokem"), bad.clone()),
        ("truncated token", Some("sf-hook-toke"), bad.clone()),
        (
            "the right token, another org",
            Some(SF),
            envelope("00D000000000009AAA", "04l000000000003AAA"),
        ),
        ("no token, not XML", None, b"<<<".to_vec()),
    ] {
        rows.push(row(
            format!("salesforce: {what}"),
            post("sf", token, &body),
            Expect::Status(401),
        ));
    }
    let mut deep = b"<a>".repeat(1300);
    deep.extend(b"</a>".repeat(1300).iter());
    deep.truncate(MAX_BODY);
    let mut bad_utf8 = envelope(SF_ORG, "04l000000000004AAA");
    bad_utf8.extend_from_slice(b"\xff\xfe");
    for (what, body) in [
        ("not XML", b"{\"json\": true}".to_vec()),
        ("XML nested 1000 deep", deep),
        ("invalid UTF-8 after the envelope", bad_utf8),
        ("an envelope without notifications", br#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body/></soapenv:Envelope>"#.to_vec()),
    ] {
        rows.push(row(format!("salesforce: token, but {what}"), post("sf", Some(SF), &body), Expect::Status(400)));
    }
}

fn creatio_and_api_rows(rows: &mut Vec<Row>) {
    rows.push(row(
        "creatio: any webhook (Creatio is polled only)".into(),
        request("POST", "/webhooks/cr", &[], b"{}"),
        Expect::Status(401),
    ));
    for (what, auth, status) in [
        ("API: no token", None, 401),
        ("API: wrong token", Some(&b"Bearer api-secret-tokem"[..]), 401),
        (
            "API: token with a byte appended",
            Some(b"Bearer api-secret-token1"),
            401,
        ),
        ("API: truncated token", Some(b"Bearer api-secret-toke"), 401),
        ("API: Basic scheme", Some(b"Basic api-secret-token"), 401),
        ("API: token without a scheme", Some(b"api-secret-token"), 401),
        ("API: header not UTF-8", Some(b"Bearer \xff"), 401),
        ("API: right token", Some(b"Bearer api-secret-token"), 200),
        (
            "API: right token, scheme in lower case",
            Some(b"bearer api-secret-token"),
            200,
        ),
        (
            "API: right token, scheme in upper case",
            Some(b"BEARER api-secret-token"),
            200,
        ),
    ] {
        let headers: Vec<(&str, Vec<u8>)> = auth.map(|a| vec![h("authorization", a)]).unwrap_or_default();
        rows.push(row(
            what.into(),
            request("GET", "/v1/connections", &headers, b""),
            Expect::Status(status),
        ));
    }
}

/// Sends one row and reads the answer: the status of the first response line, or Closed.
async fn exchange(addr: SocketAddr, send: &Send) -> Expect {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let bytes = match send {
        Send::Whole(b) | Send::Stall(b) => b,
    };
    // The server may answer (and close) before it has read everything, e.g. 413 on a declared length.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the daemon neither answered nor closed within 15 s");
    let text = String::from_utf8_lossy(&answer);
    match text.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
        Some(status) => Expect::Status(status),
        None => Expect::Closed,
    }
}

async fn spawn(db: &TestDatabase) -> TestApp {
    support::spawn_app_with_database(
        db,
        &connections(),
        HTTP_LIMITS,
        &format!("credentials_key = \"{CREDENTIALS_KEY}\""),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_webhook_gets_its_exact_answer_and_nothing_unverified_is_stored() {
    on_each_database(|db| async move {
        let app = spawn(&db).await;
        let addr = app.handle.addr;
        let mut rows = Vec::new();
        hubspot_rows(&mut rows, addr.port());
        klaviyo_rows(&mut rows);
        odoo_rows(&mut rows);
        zoho_rows(&mut rows);
        pipedrive_rows(&mut rows);
        salesforce_rows(&mut rows);
        creatio_and_api_rows(&mut rows);
        for connection in ["hs-a", "kl", "od-a", "zo-a", "pd", "sf"] {
            transport_rows(&mut rows, connection);
        }
        eprintln!("{} rows", rows.len());
        // All at once: the slow rows (timeouts) overlap, and the daemon sees concurrent hostile traffic.
        let answers = futures::future::join_all(rows.iter().map(|r| exchange(addr, &r.send))).await;
        let mismatches: Vec<String> = rows
            .iter()
            .zip(&answers)
            .filter(|(r, got)| r.expect != **got)
            .map(|(r, got)| format!("{}: expected {:?}, got {got:?}", r.name, r.expect))
            .collect();
        assert!(
            mismatches.is_empty(),
            "{} mismatches:\n{}",
            mismatches.len(),
            mismatches.join("\n")
        );

        // The inbox holds exactly the events of the valid rows.
        let expected: BTreeSet<(String, String)> = rows.iter().flat_map(|r| r.stores.iter().cloned()).collect();
        let stored: Vec<(String, String)> = webhook_events::Entity::find()
            .all(app.handle.store.db())
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.connection_id, e.event_id))
            .collect();
        let stored_set: BTreeSet<_> = stored.iter().cloned().collect();
        assert_eq!(stored.len(), stored_set.len(), "no event stored twice");
        assert_eq!(
            stored_set, expected,
            "the inbox holds the valid rows' events and nothing else"
        );

        // Still serving.
        let health = exchange(addr, &Send::Whole(request("GET", "/healthz", &[], b""))).await;
        assert_eq!(health, Expect::Status(200));
        app.stop().await.unwrap();
        db
    })
    .await;
}
