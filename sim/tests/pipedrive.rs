//! The fake Pipedrive's documented behaviour, exercised over HTTP the way the daemon uses it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use crmsyncd_sim::pipedrive::{KEY_FIELD, PipedriveSim, PipedriveSimConfig, WebhookAction, fields, format_time};
use crmsyncd_sim::{Faults, Handler, SimRequest, SimResponse, server};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const TOKEN: &str = "pd-test-token";

async fn start(config: PipedriveSimConfig) -> PipedriveSim {
    PipedriveSim::start(config).await.expect("the simulator starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn call(sim: &PipedriveSim, method: reqwest::Method, path: &str, body: Option<Value>, token: &str) -> Answer {
    let mut request = client()
        .request(method, format!("{}{path}", sim.base_url()))
        .header("x-api-token", token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the simulator answers");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, headers, body }
}

async fn get(sim: &PipedriveSim, path: &str) -> Answer {
    call(sim, reqwest::Method::GET, path, None, TOKEN).await
}

fn t(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, second).unwrap()
}

fn ids(answer: &Answer) -> Vec<u64> {
    answer.body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {}", answer.body))
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

/// Every record of a list query, following `additional_data.next_cursor` to the end.
async fn list_all(sim: &PipedriveSim, query: &str) -> Vec<Value> {
    list_from(sim, query, None).await
}

/// Every record of a list query from `cursor` on.
async fn list_from(sim: &PipedriveSim, query: &str, mut cursor: Option<String>) -> Vec<Value> {
    let mut records = Vec::new();
    loop {
        let path = match &cursor {
            None => format!("/api/v2/persons?{query}"),
            Some(c) => format!("/api/v2/persons?{query}&cursor={c}"),
        };
        let page = get(sim, &path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        records.extend(page.body["data"].as_array().unwrap().iter().cloned());
        match page.body["additional_data"]["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return records,
        }
    }
}

#[tokio::test]
async fn list_pages_through_an_equal_timestamp_block_in_update_time_then_id_order() {
    let sim = start(PipedriveSimConfig::default()).await;
    let block = sim.seed("persons", 1_200, Some(t(10)));
    let before = sim.seed("persons", 5, Some(t(5)));
    let query = format!(
        "updated_since={}&sort_by=update_time&sort_direction=asc&limit=500",
        format_time(t(0))
    );
    let records = list_all(&sim, &query).await;
    let got: Vec<u64> = records.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    let mut want = before.clone();
    want.extend(&block);
    assert_eq!(got, want, "every record once, by (update_time, id)");
    assert_eq!(records[0]["update_time"], "2025-01-01T00:00:05Z");
    assert_eq!(records[0]["is_deleted"], false);
    sim.shutdown().await;
}

#[tokio::test]
async fn updated_since_is_inclusive_and_updated_until_exclusive() {
    let sim = start(PipedriveSimConfig::default()).await;
    let a = sim.seed("persons", 2, Some(t(1)));
    let b = sim.seed("persons", 2, Some(t(2)));
    sim.seed("persons", 2, Some(t(3)));
    let page = get(
        &sim,
        &format!(
            "/api/v2/persons?updated_since={}&updated_until={}&sort_by=update_time",
            format_time(t(1)),
            format_time(t(3))
        ),
    )
    .await;
    let mut want = a;
    want.extend(b);
    assert_eq!(ids(&page), want);
    assert!(page.body["additional_data"]["next_cursor"].is_null());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_record_changed_mid_pass_moves_behind_the_cursor_or_out_of_a_fixed_window() {
    let sim = start(PipedriveSimConfig::default()).await;
    sim.set_now(t(30));
    let block = sim.seed("persons", 300, Some(t(10)));
    let first = get(
        &sim,
        &format!(
            "/api/v2/persons?updated_since={}&sort_by=update_time&limit=100",
            format_time(t(0))
        ),
    )
    .await;
    let cursor = first.body["additional_data"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_string();
    // A record already read and one not read yet both change before the next page.
    sim.update("persons", block[10], fields(json!({"name": "Changed early"})));
    sim.update("persons", block[200], fields(json!({"name": "Changed late"})));

    // Open-ended: both changed records come again at the end, nothing is skipped.
    let open = list_from(
        &sim,
        &format!("updated_since={}&sort_by=update_time&limit=100", format_time(t(0))),
        Some(cursor.clone()),
    )
    .await;
    let open_ids: Vec<u64> = open.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(&open_ids[open_ids.len() - 2..], &[block[10], block[200]]);
    let seen: HashSet<u64> = ids(&first).into_iter().chain(open_ids.iter().copied()).collect();
    assert_eq!(seen.len(), 300, "no record skipped");

    // With updated_until fixed before the changes, the changed records leave the window instead.
    let fixed = list_from(
        &sim,
        &format!(
            "updated_since={}&updated_until={}&sort_by=update_time&limit=100",
            format_time(t(0)),
            format_time(t(30))
        ),
        Some(cursor),
    )
    .await;
    let fixed_ids: Vec<u64> = fixed.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(fixed_ids.len(), 199, "the 200 unread minus the one that changed");
    assert!(!fixed_ids.contains(&block[200]));
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_list_parameters_are_answered_400_in_pipedrives_error_shape() {
    let sim = start(PipedriveSimConfig::default()).await;
    for path in [
        "/api/v2/persons?limit=501",
        "/api/v2/persons?limit=0",
        "/api/v2/persons?updated_since=yesterday",
        "/api/v2/persons?sort_by=name",
        "/api/v2/persons?cursor=garbage",
    ] {
        let answer = get(&sim, path).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(answer.body["success"], false, "{path}");
        assert!(answer.body["error"].is_string(), "{path}");
    }
    let too_many: Vec<String> = (1..=101).map(|n| n.to_string()).collect();
    let answer = get(&sim, &format!("/api/v2/persons?ids={}", too_many.join(","))).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    // A cursor made for another sort order is refused too.
    sim.seed("persons", 3, None);
    let by_id = get(&sim, "/api/v2/persons?limit=1").await;
    let cursor = by_id.body["additional_data"]["next_cursor"].as_str().unwrap();
    let answer = get(
        &sim,
        &format!("/api/v2/persons?sort_by=update_time&limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    sim.shutdown().await;
}

#[tokio::test]
async fn deleted_records_leave_lists_and_read_by_id_as_deleted_until_purged_after_30_days() {
    let sim = start(PipedriveSimConfig::default()).await;
    let ids_ = sim.seed("persons", 3, None);
    sim.delete("persons", ids_[1]);
    let all = get(&sim, "/api/v2/persons").await;
    assert_eq!(ids(&all), vec![ids_[0], ids_[2]]);
    let some = get(&sim, &format!("/api/v2/persons?ids={},{}", ids_[0], ids_[1])).await;
    assert_eq!(ids(&some), vec![ids_[0]], "ids= leaves out deleted records");
    let one = get(&sim, &format!("/api/v2/persons/{}", ids_[1])).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["data"]["is_deleted"], true);
    sim.advance_clock(Duration::from_secs(30 * 24 * 3600));
    let gone = get(&sim, &format!("/api/v2/persons/{}", ids_[1])).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.body["error"], "Person not found");
    assert!(
        sim.records("persons").iter().all(|r| r.id != ids_[1]),
        "purged from the truth"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_merge_deletes_the_merged_record_and_updates_the_survivor() {
    let sim = start(PipedriveSimConfig::default()).await;
    sim.set_now(t(1));
    let ids_ = sim.seed("organizations", 2, None);
    sim.advance_clock(Duration::from_secs(5));
    sim.merge("organizations", ids_[0], ids_[1]);
    let records = sim.records("organizations");
    assert!(records[0].deleted);
    assert_eq!(records[0].merged_into, Some(ids_[1]));
    assert!(!records[1].deleted);
    assert_eq!(records[1].update_time, t(6));
    let event = sim.event(WebhookAction::Delete, "organizations", ids_[0]);
    assert_eq!(event["meta"]["merged_to_id"], ids_[1].to_string());
    assert_eq!(event["previous"]["id"], ids_[0]);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_late_commit_is_stamped_when_written_but_listed_only_once_visible() {
    let sim = start(PipedriveSimConfig::default()).await;
    sim.set_now(t(1));
    let ids_ = sim.seed("deals", 2, None);
    sim.advance_clock(Duration::from_secs(10));
    sim.update_late(
        "deals",
        ids_[0],
        fields(json!({"title": "Late"})),
        Duration::from_millis(300),
    );
    sim.advance_clock(Duration::from_secs(10));
    sim.update("deals", ids_[1], fields(json!({"title": "On time"})));
    let since = format!("/api/v2/deals?updated_since={}&sort_by=update_time", format_time(t(5)));
    let now = get(&sim, &since).await;
    assert_eq!(ids(&now), vec![ids_[1]], "the late write is not visible yet");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let later = get(&sim, &since).await;
    assert_eq!(ids(&later), vec![ids_[0], ids_[1]], "it appears behind a later write");
    assert_eq!(later.body["data"][0]["update_time"], format_time(t(11)));
    sim.shutdown().await;
}

#[tokio::test]
async fn search_finds_an_exact_custom_field_value_only_after_the_index_lag() {
    let sim = start(PipedriveSimConfig {
        index_lag: Duration::from_millis(400),
        ..PipedriveSimConfig::default()
    })
    .await;
    let created = call(
        &sim,
        reqwest::Method::POST,
        "/api/v2/persons",
        Some(json!({"name": "Key Holder", "custom_fields": {KEY_FIELD: "key-1"}})),
        TOKEN,
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let id = created.body["data"]["id"].as_u64().unwrap();
    assert_eq!(created.body["data"]["custom_fields"][KEY_FIELD], "key-1");
    let search = "/api/v2/persons/search?term=KEY-1&fields=custom_fields&exact_match=true";
    let early = get(&sim, search).await;
    assert_eq!(early.status, StatusCode::OK);
    assert_eq!(early.body["data"]["items"], json!([]), "the index has not caught up");
    let by_id = get(&sim, &format!("/api/v2/persons?ids={id}")).await;
    assert_eq!(ids(&by_id), vec![id], "the list is consistent at once");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let late = get(&sim, search).await;
    assert_eq!(late.body["data"]["items"][0]["item"]["id"], id);
    assert_eq!(late.body["data"]["items"][0]["item"]["type"], "person");
    let partial = get(
        &sim,
        "/api/v2/persons/search?term=key&fields=custom_fields&exact_match=true",
    )
    .await;
    assert_eq!(
        partial.body["data"]["items"],
        json!([]),
        "exact_match wants the whole value"
    );
    let short = get(&sim, "/api/v2/persons/search?term=k").await;
    assert_eq!(
        short.status,
        StatusCode::BAD_REQUEST,
        "two characters without exact_match"
    );
    assert_eq!(sim.creates_with("persons", KEY_FIELD, "key-1"), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn writes_create_update_and_delete_and_refuse_unknown_fields() {
    let sim = start(PipedriveSimConfig::default()).await;
    let post = |body: Value| call(&sim, reqwest::Method::POST, "/api/v2/deals", Some(body), TOKEN);
    let created = post(json!({"title": "Big deal", "value": 100})).await;
    assert_eq!(created.status, StatusCode::OK);
    let id = created.body["data"]["id"].as_u64().unwrap();
    let bad = post(json!({"title": "x", "colour": "red"})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["error"], "Unknown field: colour");
    let untitled = post(json!({"value": 1})).await;
    assert_eq!(untitled.status, StatusCode::BAD_REQUEST);
    let patched = call(
        &sim,
        reqwest::Method::PATCH,
        &format!("/api/v2/deals/{id}"),
        Some(json!({"value": 250})),
        TOKEN,
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.body["data"]["value"], 250);
    assert_eq!(patched.body["data"]["title"], "Big deal");
    let deleted = call(
        &sim,
        reqwest::Method::DELETE,
        &format!("/api/v2/deals/{id}"),
        None,
        TOKEN,
    )
    .await;
    assert_eq!(deleted.body["data"]["id"], id);
    let again = call(
        &sim,
        reqwest::Method::PATCH,
        &format!("/api/v2/deals/{id}"),
        Some(json!({"value": 1})),
        TOKEN,
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "a deleted deal cannot be written");
    sim.shutdown().await;
}

#[tokio::test]
async fn requests_without_the_api_token_are_refused() {
    let sim = start(PipedriveSimConfig::default()).await;
    let answer = call(&sim, reqwest::Method::GET, "/api/v2/persons", None, "wrong").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["error"], "unauthorized access");
    sim.set_api_token("new-token");
    let answer = call(&sim, reqwest::Method::GET, "/api/v2/persons", None, "new-token").await;
    assert_eq!(answer.status, StatusCode::OK);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_full_window_is_answered_429_with_limit_headers_and_counted() {
    let sim = start(PipedriveSimConfig {
        rate_limit: Some((5, Duration::from_secs(2))),
        search_rate_limit: Some((2, Duration::from_secs(2))),
        ..PipedriveSimConfig::default()
    })
    .await;
    let first = get(&sim, "/api/v2/persons").await;
    assert_eq!(first.headers["x-ratelimit-limit"], "5");
    assert_eq!(first.headers["x-ratelimit-remaining"], "4");
    assert_eq!(first.headers["x-ratelimit-reset"], "2");
    // Two searches fit the search window; the third does not, though the general window has room.
    for _ in 0..2 {
        assert_eq!(get(&sim, "/api/v2/persons/search?term=ab").await.status, StatusCode::OK);
    }
    let third = get(&sim, "/api/v2/persons/search?term=ab").await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.body["error"], "Request over limit");
    assert_eq!(third.headers["x-ratelimit-remaining"], "0");
    assert!(!third.headers.contains_key("retry-after"));
    // The general window: 4 used, 1 left.
    assert_eq!(get(&sim, "/api/v2/persons").await.status, StatusCode::OK);
    let over = get(&sim, "/api/v2/persons").await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
    let reset: u64 = over.headers["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&reset), "{reset}");
    assert_eq!(sim.rate_limit_excess(), 2);
    assert_eq!(sim.log().count_status(429), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_faults_fail_requests_the_way_pipedrive_and_its_proxies_do() {
    let sim = start(PipedriveSimConfig {
        retry_after_header: true,
        ..PipedriveSimConfig::default()
    })
    .await;
    sim.seed("persons", 2, None);
    sim.set_faults(Faults {
        server_error: 1.0,
        ..Faults::default()
    });
    let failed = get(&sim, "/api/v2/persons").await;
    assert!(failed.status.is_server_error());
    sim.set_faults(Faults {
        rate_limited: 1.0,
        retry_after: Duration::from_millis(1500),
        ..Faults::default()
    });
    let limited = get(&sim, "/api/v2/persons").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers["retry-after"], "2");
    assert_eq!(limited.headers["x-ratelimit-reset"], "2");
    sim.set_faults(Faults {
        truncated_json: 1.0,
        ..Faults::default()
    });
    let cut = client()
        .get(format!("{}/api/v2/persons", sim.base_url()))
        .header("x-api-token", TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(serde_json::from_slice::<Value>(&cut).is_err(), "half a JSON document");
    assert_eq!(sim.rate_limit_excess(), 0, "injected 429s are not window excess");
    sim.shutdown().await;
}

/// A webhook receiver that records what arrives and answers with the statuses it is given, then 200.
#[derive(Default)]
struct Receiver {
    seen: Mutex<Vec<SimRequest>>,
    failures: Mutex<Vec<StatusCode>>,
}

impl Handler for Receiver {
    async fn handle(&self, request: SimRequest) -> SimResponse {
        self.seen.lock().unwrap().push(request);
        let status = self.failures.lock().unwrap().pop().unwrap_or(StatusCode::OK);
        SimResponse::new(status, "")
    }
}

fn body_of(request: &SimRequest) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

#[tokio::test]
async fn webhooks_carry_basic_credentials_and_failed_ones_are_retried_with_the_same_event_id() {
    let sim = start(PipedriveSimConfig {
        webhook_retry_delays: vec![Duration::from_millis(50), Duration::from_millis(50)],
        ..PipedriveSimConfig::default()
    })
    .await;
    sim.seed("persons", 50, None);
    let receiver = Arc::new(Receiver::default());
    receiver
        .failures
        .lock()
        .unwrap()
        .extend([StatusCode::SERVICE_UNAVAILABLE; 200]);
    let running = server::spawn(([127, 0, 0, 1], 0).into(), receiver.clone())
        .await
        .unwrap();
    let churn = sim.spawn_churn(
        Duration::from_millis(20),
        5,
        vec!["persons".into()],
        Some(format!("{}/hook", running.base_url())),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.seen.lock().unwrap().len() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    churn.abort();
    let seen = receiver.seen.lock().unwrap().clone();
    assert!(seen.len() >= 300, "{} deliveries", seen.len());
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("pd-hook-user:pd-hook-password")
    );
    assert!(
        seen.iter()
            .all(|r| r.header("authorization") == Some(expected.as_str()))
    );
    let bodies: Vec<Value> = seen.iter().map(body_of).collect();
    for body in &bodies {
        assert_eq!(body["meta"]["version"], "2.0");
        assert_eq!(body["meta"]["entity"], "person");
        assert!(["create", "change", "delete"].contains(&body["meta"]["action"].as_str().unwrap()));
    }
    // A retried event keeps its id and counts its attempts.
    let retried = bodies.iter().find(|b| b["meta"]["attempt"] == 2).expect("a retry");
    let id = &retried["meta"]["id"];
    let attempts: Vec<u64> = bodies
        .iter()
        .filter(|b| &b["meta"]["id"] == id)
        .map(|b| b["meta"]["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(&attempts[..2], &[1, 2]);
    running.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn churn_keeps_changing_records_and_reports_deletes_and_merges_by_webhook() {
    let sim = start(PipedriveSimConfig {
        late_commit: Duration::from_millis(200),
        ..PipedriveSimConfig::default()
    })
    .await;
    sim.seed("persons", 200, None);
    sim.seed("deals", 200, None);
    let receiver = Arc::new(Receiver::default());
    let running = server::spawn(([127, 0, 0, 1], 0).into(), receiver.clone())
        .await
        .unwrap();
    let churn = sim.spawn_churn(
        Duration::from_millis(10),
        10,
        vec!["persons".into(), "deals".into()],
        Some(format!("{}/hook", running.base_url())),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let merged = || {
        receiver
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(body_of)
            .any(|b| b["meta"]["merged_to_id"].is_string())
    };
    // Churn picks persons or deals at random, so wait for every outcome the
    // test checks rather than for the first merge alone.
    let persons_churned = || {
        let truth = sim.records("persons");
        truth.len() > 200 && truth.iter().any(|r| r.deleted)
    };
    while !(merged() && persons_churned()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    churn.abort();
    assert!(merged(), "a merge was reported as a delete naming the survivor");
    let bodies: Vec<Value> = receiver.seen.lock().unwrap().iter().map(body_of).collect();
    assert!(
        bodies
            .iter()
            .any(|b| b["meta"]["action"] == "delete" && b["data"].is_null())
    );
    assert!(bodies.iter().any(|b| b["meta"]["action"] == "create"));
    let truth = sim.records("persons");
    assert!(truth.len() > 200, "creates happened");
    assert!(truth.iter().any(|r| r.deleted), "deletes happened");
    running.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_lost_answer_still_applies_the_write() {
    let sim = start(PipedriveSimConfig::default()).await;
    sim.lose_answers("create", 1);
    let lost = client()
        .post(format!("{}/api/v2/persons", sim.base_url()))
        .header("x-api-token", TOKEN)
        .json(&json!({"name": "Lost", "custom_fields": {KEY_FIELD: "lost-1"}}))
        .send()
        .await;
    assert!(lost.is_err(), "the client gets no answer");
    assert_eq!(
        sim.creates_with("persons", KEY_FIELD, "lost-1"),
        1,
        "but the person exists"
    );
    assert_eq!(sim.records("persons").len(), 1);
    let next = call(
        &sim,
        reqwest::Method::POST,
        "/api/v2/persons",
        Some(json!({"name": "Kept"})),
        TOKEN,
    )
    .await;
    assert_eq!(next.status, StatusCode::OK, "only the one answer is lost");
    sim.shutdown().await;
}
