//! The fake Klaviyo's documented behaviour, exercised over HTTP the way the daemon uses it.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use crmsyncd_sim::Faults;
use crmsyncd_sim::klaviyo::{KlaviyoSim, KlaviyoSimConfig, MAX_PAGE_SIZE, PROFILES, SUBSCRIBED_TOPIC, sign};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};

const KEY: &str = "pk_test_klaviyo_sim_key";
const REVISION: &str = "2024-10-15";

async fn start(config: KlaviyoSimConfig) -> KlaviyoSim {
    KlaviyoSim::start(config).await.expect("the simulator starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("the simulator answers");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("a JSON body")
    };
    Answer { status, headers, body }
}

/// A GET of `url` (absolute, or a path) with the key and revision.
async fn get(sim: &KlaviyoSim, url: &str) -> Answer {
    let url = if url.starts_with("http") {
        url.to_string()
    } else {
        format!("{}{url}", sim.base_url())
    };
    send(
        client()
            .get(url)
            .header("authorization", format!("Klaviyo-API-Key {KEY}"))
            .header("revision", REVISION),
    )
    .await
}

async fn import(sim: &KlaviyoSim, attributes: Value) -> Answer {
    send(
        client()
            .post(format!("{}/api/profile-import/", sim.base_url()))
            .header("authorization", format!("Klaviyo-API-Key {KEY}"))
            .header("revision", REVISION)
            .json(&json!({"data": {"type": "profile", "attributes": attributes}})),
    )
    .await
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Follows `links.next` from `first` to the end; returns the ids and `updated` values in page order, and the pages.
async fn list_all(sim: &KlaviyoSim, first: &str) -> (Vec<(String, String)>, usize) {
    let mut url = first.to_string();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let answer = get(sim, &url).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        pages += 1;
        for item in answer.body["data"].as_array().unwrap() {
            seen.push((
                item["id"].as_str().unwrap().to_string(),
                item["attributes"]["updated"].as_str().unwrap_or_default().to_string(),
            ));
        }
        match answer.body["links"]["next"].as_str() {
            Some(next) => url = next.to_string(),
            None => return (seen, pages),
        }
    }
}

fn attrs(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[tokio::test]
async fn profiles_page_by_opaque_cursor_in_updated_order_through_an_equal_second_block() {
    let sim = start(KlaviyoSimConfig::default()).await;
    let block = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
    let ids: HashSet<String> = sim.seed(PROFILES, 250, Some(block)).into_iter().collect();
    sim.seed(PROFILES, 30, None);
    let first = format!(
        "/api/profiles/?filter={}&sort=updated&page[size]=100",
        encode("greater-than(updated,2024-05-01T11:59:59Z)")
    );
    let (seen, pages) = list_all(&sim, &first).await;
    assert_eq!(seen.len(), 280, "every profile once");
    assert_eq!(pages, 3);
    let unique: HashSet<&String> = seen.iter().map(|(id, _)| id).collect();
    assert_eq!(unique.len(), 280, "no profile twice");
    assert!(ids.iter().all(|id| unique.contains(id)));
    // Ascending by updated, ids breaking ties.
    let keys: Vec<(&str, &str)> = seen.iter().map(|(id, u)| (u.as_str(), id.as_str())).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted by (updated, id)");
    assert_eq!(seen[0].1, "2024-05-01T12:00:00+00:00");
    // The cursor is opaque: not an offset or an id in the clear.
    let page = get(&sim, &first).await;
    let next = page.body["links"]["next"].as_str().unwrap();
    let cursor = url::Url::parse(next)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "page[cursor]")
        .unwrap()
        .1
        .into_owned();
    assert!(
        !cursor.contains(&seen[99].0) && cursor.parse::<u64>().is_err(),
        "{cursor}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn updated_only_takes_strict_greater_than_and_less_than() {
    let sim = start(KlaviyoSimConfig::default()).await;
    let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
    sim.seed(PROFILES, 5, Some(at));
    let count = |filter: &'static str| {
        let sim = sim.clone();
        async move {
            let a = get(&sim, &format!("/api/profiles/?filter={}", encode(filter))).await;
            (a.status, a.body["data"].as_array().map_or(0, Vec::len))
        }
    };
    assert_eq!(
        count("greater-than(updated,2024-05-01T12:00:00Z)").await,
        (StatusCode::OK, 0),
        "strict"
    );
    assert_eq!(
        count("greater-than(updated,2024-05-01T11:59:59Z)").await,
        (StatusCode::OK, 5)
    );
    assert_eq!(
        count("less-than(updated,2024-05-01T12:00:01+00:00)").await,
        (StatusCode::OK, 5)
    );
    let refused = get(
        &sim,
        &format!(
            "/api/profiles/?filter={}",
            encode("greater-or-equal(updated,2024-05-01T12:00:00Z)")
        ),
    )
    .await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["errors"][0]["code"], "invalid");
    assert_eq!(refused.body["errors"][0]["source"]["parameter"], "filter");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_profile_updated_between_pages_is_not_lost_and_moves_to_the_end() {
    let sim = start(KlaviyoSimConfig::default()).await;
    let at = Utc::now() - chrono::Duration::hours(1);
    let ids = sim.seed(PROFILES, 150, Some(at));
    let first = format!(
        "/api/profiles/?filter={}&sort=updated&page[size]=100",
        encode(&format!(
            "greater-than(updated,{})",
            (at - chrono::Duration::seconds(1)).to_rfc3339()
        ))
    );
    let page1 = get(&sim, &first).await;
    // One profile already read and one not yet read change before the second page.
    sim.update(&ids[5], attrs(json!({"first_name": "Moved"})));
    sim.update(&ids[120], attrs(json!({"first_name": "AlsoMoved"})));
    let (rest, _) = list_all(&sim, page1.body["links"]["next"].as_str().unwrap()).await;
    let first_ids: HashSet<&str> = page1.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    let rest_ids: HashSet<&str> = rest.iter().map(|(id, _)| id.as_str()).collect();
    for id in &ids {
        assert!(
            first_ids.contains(id.as_str()) || rest_ids.contains(id.as_str()),
            "{id} was skipped"
        );
    }
    assert!(
        rest_ids.contains(ids[5].as_str()),
        "the updated profile is read again at its new place"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_page_size_above_100_and_a_foreign_cursor_are_refused() {
    let sim = start(KlaviyoSimConfig::default()).await;
    sim.seed(PROFILES, 3, None);
    let big = get(&sim, &format!("/api/profiles/?page[size]={}", MAX_PAGE_SIZE + 1)).await;
    assert_eq!(big.status, 400);
    let page = get(&sim, "/api/profiles/?page[size]=1&sort=updated").await;
    let next = page.body["links"]["next"]
        .as_str()
        .unwrap()
        .replace("sort=updated", "sort=-updated");
    let replayed = get(&sim, &next).await;
    assert_eq!(replayed.status, 400, "a cursor only works with the query it came from");
    let garbage = get(&sim, "/api/profiles/?page[cursor]=abc").await;
    assert_eq!(garbage.status, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn missing_key_or_revision_is_refused_with_json_api_errors() {
    let sim = start(KlaviyoSimConfig::default()).await;
    let url = format!("{}/api/profiles/", sim.base_url());
    let no_key = send(client().get(&url).header("revision", REVISION)).await;
    assert_eq!(no_key.status, 401);
    assert_eq!(no_key.body["errors"][0]["code"], "not_authenticated");
    let bearer = send(client().get(&url).bearer_auth(KEY).header("revision", REVISION)).await;
    assert_eq!(bearer.status, 401, "a private key goes in Klaviyo-API-Key, not Bearer");
    let no_revision = send(
        client()
            .get(&url)
            .header("authorization", format!("Klaviyo-API-Key {KEY}")),
    )
    .await;
    assert_eq!(no_revision.status, 400);
    assert_eq!(no_revision.body["errors"][0]["source"]["header"], "revision");
    sim.set_api_key("pk_rotated");
    assert_eq!(
        get(&sim, "/api/profiles/").await.status,
        401,
        "a revoked key stops working"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn profile_import_creates_once_then_updates_by_external_id_or_email() {
    let sim = start(KlaviyoSimConfig::default()).await;
    let created = import(
        &sim,
        json!({"external_id": "k-1", "email": "a@example.com", "first_name": "A"}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["data"]["id"].as_str().unwrap().to_string();
    let again = import(&sim, json!({"external_id": "k-1", "first_name": "B"})).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["data"]["id"], id.as_str());
    let by_email = import(&sim, json!({"email": "a@example.com", "properties": {"plan": "pro"}})).await;
    assert_eq!(by_email.status, 200);
    assert_eq!(by_email.body["data"]["attributes"]["first_name"], "B");
    assert_eq!(by_email.body["data"]["attributes"]["properties"]["plan"], "pro");
    assert_eq!(sim.creates_for("external_id", "k-1"), 1);
    assert_eq!(sim.records().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn profile_import_refuses_conflicts_unknown_fields_and_bad_emails() {
    let sim = start(KlaviyoSimConfig::default()).await;
    import(&sim, json!({"external_id": "x", "email": "x@example.com"})).await;
    import(&sim, json!({"external_id": "y", "email": "y@example.com"})).await;
    let conflict = import(&sim, json!({"external_id": "x", "email": "y@example.com"})).await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.body["errors"][0]["code"], "duplicate_profile");
    let unknown = import(&sim, json!({"email": "z@example.com", "favourite_colour": "red"})).await;
    assert_eq!(unknown.status, 400);
    assert_eq!(
        unknown.body["errors"][0]["source"]["pointer"],
        "/data/attributes/favourite_colour"
    );
    assert_eq!(import(&sim, json!({"email": "not-an-email"})).await.status, 400);
    assert_eq!(import(&sim, json!({"first_name": "no identifier"})).await.status, 400);
    assert_eq!(sim.records().len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_deleted_profile_vanishes_without_a_trace() {
    let sim = start(KlaviyoSimConfig::default()).await;
    let ids = sim.seed(PROFILES, 3, None);
    sim.delete(&ids[1]);
    assert_eq!(get(&sim, &format!("/api/profiles/{}/", ids[1])).await.status, 404);
    assert_eq!(get(&sim, &format!("/api/profiles/{}/", ids[0])).await.status, 200);
    let (seen, _) = list_all(&sim, "/api/profiles/?page[size]=100").await;
    assert_eq!(seen.len(), 2);
    // The data-privacy API deletes by email.
    let email = sim.records()[0].attributes["email"].as_str().unwrap().to_string();
    let job = send(
        client()
            .post(format!("{}/api/data-privacy-deletion-jobs/", sim.base_url()))
            .header("authorization", format!("Klaviyo-API-Key {KEY}"))
            .header("revision", REVISION)
            .json(&json!({"data": {"type": "data-privacy-deletion-job", "attributes": {"profile": {"data": {"type": "profile", "attributes": {"email": email}}}}}})),
    )
    .await;
    assert_eq!(job.status, 202);
    assert_eq!(sim.records().len(), 1);
    assert_eq!(sim.deleted_ids().len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn reads_lag_writes_by_a_delay_of_their_own() {
    let sim = start(KlaviyoSimConfig {
        read_lag: Duration::from_millis(400),
        ..KlaviyoSimConfig::default()
    })
    .await;
    // With 20 fresh profiles and delays drawn up to 400 ms, at least one is not visible at once (the chance that
    // all 20 draw under 1 ms is nil).
    sim.seed(PROFILES, 20, None);
    let (now, _) = list_all(&sim, "/api/profiles/?page[size]=100").await;
    assert!(now.len() < 20, "{} visible at once", now.len());
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (later, _) = list_all(&sim, "/api/profiles/?page[size]=100").await;
    assert_eq!(later.len(), 20);
    assert_eq!(sim.records().len(), 20, "the truth has no lag");
    sim.shutdown().await;
}

#[tokio::test]
async fn full_windows_answer_429_with_retry_after_only_and_count_excess() {
    let sim = start(KlaviyoSimConfig {
        rate_limits: vec![(3, Duration::from_secs(1)), (5, Duration::from_secs(60))],
        ..KlaviyoSimConfig::default()
    })
    .await;
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(get(&sim, "/api/profiles/").await);
    }
    assert_eq!(
        answers[0].headers["ratelimit-limit"], "5",
        "the headers describe the steady window"
    );
    assert_eq!(answers[0].headers["ratelimit-remaining"], "4");
    assert_eq!(answers[2].headers["ratelimit-remaining"], "2");
    let throttled = &answers[3];
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.headers["retry-after"], "1");
    assert!(!throttled.headers.contains_key("ratelimit-remaining"));
    assert_eq!(throttled.body["errors"][0]["code"], "throttled");
    // The import endpoint has its own windows.
    assert_eq!(import(&sim, json!({"email": "q@example.com"})).await.status, 201);
    assert_eq!(sim.rate_limit_excess(), 1);
    assert_eq!(sim.log().count_status(429), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_faults_are_answered_like_klaviyos_own() {
    let sim = start(KlaviyoSimConfig::default()).await;
    sim.set_faults(Faults {
        server_error: 1.0,
        ..Faults::default()
    });
    let failed = get(&sim, "/api/profiles/").await;
    assert!(failed.status.is_server_error());
    assert!(failed.body["errors"][0]["detail"].is_string());
    sim.set_faults(Faults {
        rate_limited: 1.0,
        retry_after: Duration::from_secs(3),
        ..Faults::default()
    });
    let limited = get(&sim, "/api/profiles/").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.headers["retry-after"], "3");
    assert_eq!(sim.rate_limit_excess(), 0, "injected 429s are not excess");
    sim.shutdown().await;
}

#[tokio::test]
async fn webhooks_are_signed_over_body_and_timestamp_and_name_the_webhook() {
    let sim = start(KlaviyoSimConfig::default()).await;
    let id = sim.seed(PROFILES, 1, None).remove(0);
    let event = sim.event(SUBSCRIBED_TOPIC, &id);
    let (headers, body) = sim.webhook_request(std::slice::from_ref(&event));
    let header = |name: &str| headers.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let timestamp = header("klaviyo-timestamp");
    assert!(chrono::DateTime::parse_from_rfc2822(&timestamp).is_ok(), "{timestamp}");
    assert_eq!(
        header("klaviyo-signature"),
        sign(sim.webhook_secret(), &body, &timestamp)
    );
    let parsed: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(parsed["meta"]["klaviyo_webhook_id"], header("klaviyo-webhook-id"));
    assert_eq!(parsed["data"][0]["topic"], SUBSCRIBED_TOPIC);
    assert_eq!(
        parsed["data"][0]["payload"]["data"]["relationships"]["profile"]["data"]["id"],
        id.as_str()
    );
    assert_ne!(
        sim.event(SUBSCRIBED_TOPIC, &id)["external_id"],
        event["external_id"],
        "each event has its own id"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn churn_changes_profiles_and_sends_signed_consent_webhooks() {
    use crmsyncd_sim::{Handler, SimRequest, SimResponse, server};
    use std::sync::{Arc, Mutex};

    struct Receiver(Mutex<Vec<SimRequest>>);
    impl Handler for Receiver {
        async fn handle(&self, request: SimRequest) -> SimResponse {
            self.0.lock().unwrap().push(request);
            SimResponse::new(reqwest::StatusCode::OK, "")
        }
    }
    let receiver = Arc::new(Receiver(Mutex::new(Vec::new())));
    let running = server::spawn(([127, 0, 0, 1], 0).into(), receiver.clone())
        .await
        .unwrap();
    let sim = start(KlaviyoSimConfig::default()).await;
    sim.seed(PROFILES, 200, None);
    let before = sim.records();
    let churn = sim.spawn_churn(
        Duration::from_millis(20),
        10,
        vec![PROFILES.into()],
        Some(format!("{}/hook", running.base_url())),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while receiver.0.lock().unwrap().len() < 5 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    churn.abort();
    let after = sim.records();
    assert_ne!(before, after, "profiles changed");
    let requests = receiver.0.lock().unwrap().clone();
    assert!(requests.len() >= 5, "{} deliveries", requests.len());
    for r in &requests {
        let ts = r.header("klaviyo-timestamp").unwrap();
        assert_eq!(
            r.header("klaviyo-signature").unwrap(),
            sign(sim.webhook_secret(), &r.body, ts)
        );
    }
    running.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn oauth_tokens_are_accepted_as_bearer_when_enabled() {
    let sim = start(KlaviyoSimConfig {
        oauth: Some(crmsyncd_sim::oauth::OAuthSimConfig::default()),
        ..KlaviyoSimConfig::default()
    })
    .await;
    let token: Value = client()
        .post(format!("{}/oauth/token", sim.base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "sim-refresh-token"),
            ("client_id", "sim-client-id"),
            ("client_secret", "sim-client-secret"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap();
    let ok = send(
        client()
            .get(format!("{}/api/profiles/", sim.base_url()))
            .bearer_auth(access)
            .header("revision", REVISION),
    )
    .await;
    assert_eq!(ok.status, 200);
    sim.oauth().unwrap().expire_access_tokens();
    let expired = send(
        client()
            .get(format!("{}/api/profiles/", sim.base_url()))
            .bearer_auth(access)
            .header("revision", REVISION),
    )
    .await;
    assert_eq!(expired.status, 401);
    sim.shutdown().await;
}
