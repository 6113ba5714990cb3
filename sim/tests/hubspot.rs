//! The fake HubSpot's documented behaviour, exercised over HTTP the way the daemon will use it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use crmsyncd_sim::hubspot::{
    HubSpotSim, HubSpotSimConfig, SignatureVersion, modified_property, sign_v1, sign_v2, sign_v3,
};
use crmsyncd_sim::{Faults, Handler, SimRequest, SimResponse, server};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

const TOKEN: &str = "hs-test-token";
const SECRET: &str = "hs-test-secret";

async fn start(config: HubSpotSimConfig) -> HubSpotSim {
    HubSpotSim::start(config).await.expect("the simulator starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn call(sim: &HubSpotSim, method: reqwest::Method, path: &str, body: Option<Value>, token: &str) -> Answer {
    let mut request = client()
        .request(method, format!("{}{path}", sim.base_url()))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
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

async fn post(sim: &HubSpotSim, path: &str, body: Value) -> Answer {
    call(sim, reqwest::Method::POST, path, Some(body), TOKEN).await
}

async fn get(sim: &HubSpotSim, path: &str) -> Answer {
    call(sim, reqwest::Method::GET, path, None, TOKEN).await
}

async fn search(sim: &HubSpotSim, object: &str, body: Value) -> Answer {
    post(sim, &format!("/crm/v3/objects/{object}/search"), body).await
}

fn ids(answer: &Answer) -> Vec<String> {
    answer.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn ms(at: DateTime<Utc>) -> String {
    at.timestamp_millis().to_string()
}

fn filter(property: &str, operator: &str, value: impl Into<Value>) -> Value {
    json!({"propertyName": property, "operator": operator, "value": value.into()})
}

fn props(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

fn t(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, second).unwrap()
}

/// All ids matching a search, following `paging.next.after` to the end.
async fn search_all(sim: &HubSpotSim, object: &str, mut body: Value) -> (Vec<String>, Vec<Value>) {
    let mut ids = Vec::new();
    let mut records = Vec::new();
    loop {
        let page = search(sim, object, body.clone()).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for record in page.body["results"].as_array().unwrap() {
            ids.push(record["id"].as_str().unwrap().to_string());
            records.push(record.clone());
        }
        match page.body["paging"]["next"]["after"].as_str() {
            Some(after) => body["after"] = json!(after),
            None => return (ids, records),
        }
    }
}

#[tokio::test]
async fn search_pages_through_records_in_ascending_modified_order_with_after() {
    let sim = start(HubSpotSimConfig::default()).await;
    let late = sim.seed("contacts", 3, Some(t(30)));
    let early = sim.seed("contacts", 3, Some(t(10)));
    let middle = sim.seed("contacts", 3, Some(t(20)));

    let body = json!({
        "filterGroups": [{"filters": [filter("lastmodifieddate", "GTE", ms(t(0)))]}],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["email"],
        "limit": 4,
    });
    let first = search(&sim, "contacts", body.clone()).await;
    assert_eq!(first.body["total"], 9);
    assert_eq!(first.body["paging"]["next"]["after"], "4");
    let (got, records) = search_all(&sim, "contacts", body).await;

    let expected: Vec<String> = [early, middle, late].concat();
    assert_eq!(got, expected, "ascending modified time, ties by id");
    let record = &records[0];
    assert_eq!(record["properties"]["lastmodifieddate"], "2024-01-01T00:00:10.000Z");
    assert_eq!(record["updatedAt"], "2024-01-01T00:00:10.000Z");
    assert_eq!(record["properties"]["hs_object_id"], record["id"]);
    assert!(
        record["properties"]["email"]
            .as_str()
            .unwrap()
            .ends_with("@example.com")
    );
    assert!(record["properties"]["createdate"].is_string());
    assert_eq!(record["archived"], false);
}

#[tokio::test]
async fn search_with_descending_sort_reverses_the_order_but_not_the_id_tie_break() {
    let sim = start(HubSpotSimConfig::default()).await;
    let early = sim.seed("deals", 2, Some(t(1)));
    let late = sim.seed("deals", 2, Some(t(2)));
    let body = json!({"sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "DESCENDING"}], "limit": 10});
    let (got, _) = search_all(&sim, "deals", body).await;
    assert_eq!(got, [late, early].concat());
}

#[tokio::test]
async fn gte_gt_and_eq_filters_select_by_modified_time() {
    let sim = start(HubSpotSimConfig::default()).await;
    let first = sim.seed("companies", 2, Some(t(1)));
    let second = sim.seed("companies", 2, Some(t(2)));
    let third = sim.seed("companies", 2, Some(t(3)));
    let query = |operator: &str, value: String| {
        json!({
            "filterGroups": [{"filters": [filter("hs_lastmodifieddate", operator, value)]}],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        })
    };

    let gte = search(&sim, "companies", query("GTE", ms(t(2)))).await;
    assert_eq!(ids(&gte), [second.clone(), third.clone()].concat());
    let gt = search(&sim, "companies", query("GT", ms(t(2)))).await;
    assert_eq!(ids(&gt), third);
    let eq = search(&sim, "companies", query("EQ", ms(t(2)))).await;
    assert_eq!(ids(&eq), second);
    let iso = search(&sim, "companies", query("LT", "2024-01-01T00:00:02.000Z".into())).await;
    assert_eq!(ids(&iso), first, "ISO-8601 values are accepted too");
}

#[tokio::test]
async fn contacts_filter_on_lastmodifieddate_not_hs_lastmodifieddate() {
    let sim = start(HubSpotSimConfig::default()).await;
    sim.seed("contacts", 2, Some(t(1)));
    let on = |property: &str| json!({"filterGroups": [{"filters": [filter(property, "GTE", ms(t(0)))]}]});
    assert_eq!(search(&sim, "contacts", on("lastmodifieddate")).await.body["total"], 2);
    assert_eq!(
        search(&sim, "contacts", on("hs_lastmodifieddate")).await.body["total"],
        0
    );
    assert_eq!(modified_property("contacts"), "lastmodifieddate");
    assert_eq!(modified_property("deals"), "hs_lastmodifieddate");
}

#[tokio::test]
async fn filter_groups_are_ored_and_filters_within_a_group_are_anded() {
    let sim = start(HubSpotSimConfig::default()).await;
    let ada_early = sim.create("contacts", props(json!({"firstname": "Ada", "lastname": "A"})));
    let ada_late = sim.create("contacts", props(json!({"firstname": "Ada", "lastname": "B"})));
    let grace = sim.create("contacts", props(json!({"firstname": "Grace"})));
    let alan = sim.create("contacts", props(json!({"firstname": "Alan"})));

    let body = json!({"filterGroups": [
        {"filters": [filter("firstname", "EQ", "Ada"), filter("lastname", "EQ", "B")]},
        {"filters": [filter("hs_object_id", "EQ", grace.clone())]},
    ]});
    let answer = search(&sim, "contacts", body).await;
    assert_eq!(ids(&answer), [ada_late.clone(), grace.clone()]);

    let neq = json!({"filterGroups": [{"filters": [filter("firstname", "NEQ", "Ada")]}]});
    assert_eq!(ids(&search(&sim, "contacts", neq).await), [grace, alan]);
    assert!(!ids(&answer).contains(&ada_early), "a group needs all its filters");
}

#[tokio::test]
async fn search_with_after_beyond_cap_is_rejected() {
    let sim = start(HubSpotSimConfig {
        search_cap: 6,
        ..HubSpotSimConfig::default()
    })
    .await;
    sim.seed("contacts", 10, None);

    let last_allowed = search(&sim, "contacts", json!({"limit": 2, "after": "4"})).await;
    assert_eq!(last_allowed.status, StatusCode::OK);
    assert_eq!(
        last_allowed.body["total"], 10,
        "total counts every match, not just the reachable ones"
    );
    assert_eq!(
        last_allowed.body["paging"]["next"]["after"], "6",
        "HubSpot still offers the next page"
    );

    let beyond = search(&sim, "contacts", json!({"limit": 2, "after": "6"})).await;
    assert_eq!(beyond.status, StatusCode::BAD_REQUEST);
    assert_eq!(beyond.body["status"], "error");
    assert_eq!(beyond.body["category"], "VALIDATION_ERROR");
    assert!(
        beyond.body["message"].as_str().unwrap().contains("first 6 results"),
        "{}",
        beyond.body
    );
    assert!(beyond.body["correlationId"].is_string());
}

#[tokio::test]
async fn search_limit_above_200_is_rejected() {
    let sim = start(HubSpotSimConfig::default()).await;
    let answer = search(&sim, "contacts", json!({"limit": 201})).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["category"], "VALIDATION_ERROR");
}

#[tokio::test]
async fn index_lag_hides_a_fresh_record_until_the_lag_passes() {
    let lag = Duration::from_millis(200);
    let sim = start(HubSpotSimConfig {
        index_lag: lag,
        ..HubSpotSimConfig::default()
    })
    .await;
    let id = sim.create("contacts", props(json!({"firstname": "Ann"})));

    let fresh = search(&sim, "contacts", json!({})).await;
    assert_eq!(fresh.body["total"], 0, "search does not see it yet");
    let read = post(
        &sim,
        "/crm/v3/objects/contacts/batch/read",
        json!({"inputs": [{"id": id}]}),
    )
    .await;
    assert_eq!(read.status, StatusCode::OK, "batch read has no lag");

    tokio::time::sleep(lag + Duration::from_millis(50)).await;
    let later = search(&sim, "contacts", json!({})).await;
    assert_eq!(ids(&later), [id]);
}

#[tokio::test]
async fn index_lag_shows_the_previous_version_of_an_updated_record() {
    let lag = Duration::from_millis(200);
    let sim = start(HubSpotSimConfig {
        index_lag: lag,
        ..HubSpotSimConfig::default()
    })
    .await;
    let id = sim.create("contacts", props(json!({"firstname": "Ann"})));
    tokio::time::sleep(lag + Duration::from_millis(50)).await;
    let before = sim.records("contacts")[0].updated_at;
    tokio::time::sleep(Duration::from_millis(5)).await; // so the update gets a later millisecond
    sim.update("contacts", &id, props(json!({"firstname": "Bea"})));

    let body = json!({"properties": ["firstname"]});
    let stale = search(&sim, "contacts", body.clone()).await;
    assert_eq!(stale.body["results"][0]["properties"]["firstname"], "Ann");
    assert_eq!(
        stale.body["results"][0]["updatedAt"],
        before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    assert_eq!(
        sim.records("contacts")[0].properties["firstname"],
        "Bea",
        "the truth is current"
    );

    tokio::time::sleep(lag + Duration::from_millis(50)).await;
    let fresh = search(&sim, "contacts", body).await;
    assert_eq!(fresh.body["results"][0]["properties"]["firstname"], "Bea");
}

#[tokio::test]
async fn seeding_with_a_timestamp_gives_every_record_exactly_that_modified_time() {
    let sim = start(HubSpotSimConfig::default()).await;
    let at = Utc.timestamp_millis_opt(1_704_067_200_123).unwrap();
    let seeded = sim.seed("contacts", 250, Some(at));
    assert_eq!(seeded.len(), 250);
    let records = sim.records("contacts");
    assert!(records.iter().all(|r| r.updated_at == at));
    let emails: std::collections::HashSet<&Value> = records.iter().map(|r| &r.properties["email"]).collect();
    assert_eq!(emails.len(), 250, "emails are unique");

    // A block of equal timestamps straddles the page boundary; the id tie-break lets a client re-anchor in it.
    let block = |extra: Vec<Value>| {
        let mut filters = vec![filter("lastmodifieddate", "EQ", ms(at))];
        filters.extend(extra);
        json!({
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
            "limit": 200,
        })
    };
    let first = search(&sim, "contacts", block(vec![])).await;
    assert_eq!(first.body["total"], 250);
    assert_eq!(ids(&first), seeded[..200]);
    assert!(
        first.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["properties"]["lastmodifieddate"] == "2024-01-01T00:00:00.123Z")
    );
    let rest = search(
        &sim,
        "contacts",
        block(vec![filter("hs_object_id", "GT", seeded[199].clone())]),
    )
    .await;
    assert_eq!(ids(&rest), seeded[200..]);
}

#[tokio::test]
async fn seeding_without_a_timestamp_uses_the_current_time() {
    let sim = start(HubSpotSimConfig::default()).await;
    let before = Utc::now() - chrono::Duration::milliseconds(1);
    sim.seed("deals", 20, None);
    let records = sim.records("deals");
    assert!(records.windows(2).all(|w| w[0].updated_at <= w[1].updated_at));
    assert!(
        records
            .iter()
            .all(|r| r.updated_at >= before && r.updated_at <= Utc::now())
    );
    assert!(records.iter().all(|r| r.properties.contains_key("dealname")));
}

#[tokio::test]
async fn full_window_answers_429_with_hubspot_body_and_headers_and_counts_excess() {
    let sim = start(HubSpotSimConfig {
        rate_limit: Some((3, Duration::from_secs(10))),
        ..HubSpotSimConfig::default()
    })
    .await;
    for remaining in ["2", "1", "0"] {
        let ok = get(&sim, "/crm/v3/objects/contacts").await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.headers["x-hubspot-ratelimit-max"], "3");
        assert_eq!(ok.headers["x-hubspot-ratelimit-remaining"], remaining);
        assert_eq!(ok.headers["x-hubspot-ratelimit-interval-milliseconds"], "10000");
    }

    let refused = search(&sim, "contacts", json!({})).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.body["status"], "error");
    assert_eq!(refused.body["message"], "You have reached your secondly limit.");
    assert_eq!(refused.body["errorType"], "RATE_LIMIT");
    assert_eq!(refused.body["policyName"], "SECONDLY");
    assert!(refused.body["correlationId"].is_string());
    assert_eq!(refused.headers["x-hubspot-ratelimit-max"], "3");
    assert_eq!(refused.headers["x-hubspot-ratelimit-remaining"], "0");
    let retry_after: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry_after), "Retry-After {retry_after}");

    assert_eq!(sim.rate_limit_excess(), 1);
    let log = sim.log().snapshot();
    let statuses: Vec<(&str, u16)> = log.iter().map(|r| (r.operation.as_str(), r.status)).collect();
    assert_eq!(statuses, [("list", 200), ("list", 200), ("list", 200), ("search", 429)]);
}

#[tokio::test]
async fn retry_after_is_left_out_when_configured_so() {
    let sim = start(HubSpotSimConfig {
        rate_limit: Some((1, Duration::from_secs(10))),
        retry_after_header: false,
        ..HubSpotSimConfig::default()
    })
    .await;
    get(&sim, "/crm/v3/objects/contacts").await;
    let refused = get(&sim, "/crm/v3/objects/contacts").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!refused.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn search_limit_is_separate_from_the_general_limit() {
    let sim = start(HubSpotSimConfig {
        search_rate_limit: Some((2, Duration::from_secs(10))),
        ..HubSpotSimConfig::default()
    })
    .await;
    for _ in 0..2 {
        assert_eq!(search(&sim, "contacts", json!({})).await.status, StatusCode::OK);
    }
    assert_eq!(
        search(&sim, "contacts", json!({})).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(get(&sim, "/crm/v3/objects/contacts").await.status, StatusCode::OK);
    assert_eq!(sim.rate_limit_excess(), 1);
}

#[tokio::test]
async fn wrong_token_is_answered_401() {
    let sim = start(HubSpotSimConfig::default()).await;
    let wrong = call(&sim, reqwest::Method::GET, "/crm/v3/objects/contacts", None, "nope").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body["status"], "error");
    assert_eq!(wrong.body["category"], "INVALID_AUTHENTICATION");
    assert!(
        wrong.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Authentication credentials not found.")
    );

    let missing = client()
        .get(format!("{}/crm/v3/objects/contacts", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revoked_token_is_answered_401() {
    let sim = start(HubSpotSimConfig::default()).await;
    assert_eq!(get(&sim, "/crm/v3/objects/contacts").await.status, StatusCode::OK);
    sim.set_access_token("rotated");
    assert_eq!(
        get(&sim, "/crm/v3/objects/contacts").await.status,
        StatusCode::UNAUTHORIZED
    );
    let rotated = call(&sim, reqwest::Method::GET, "/crm/v3/objects/contacts", None, "rotated").await;
    assert_eq!(rotated.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_path_is_answered_404_json() {
    let sim = start(HubSpotSimConfig::default()).await;
    let answer = get(&sim, "/crm/v4/nothing").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body["status"], "error");
    assert_eq!(sim.log().snapshot()[0].operation, "unknown");
}

fn upsert_body(email: &str, firstname: &str) -> Value {
    json!({"inputs": [{"id": email, "idProperty": "email", "properties": {"firstname": firstname}}]})
}

#[tokio::test]
async fn batch_upsert_creates_once_then_updates() {
    let sim = start(HubSpotSimConfig::default()).await;
    let path = "/crm/v3/objects/contacts/batch/upsert";

    let created = post(&sim, path, upsert_body("ann@example.com", "Ann")).await;
    assert_eq!(created.status, StatusCode::OK);
    assert_eq!(created.body["status"], "COMPLETE");
    assert_eq!(created.body["results"][0]["new"], true);
    assert_eq!(created.body["results"][0]["properties"]["email"], "ann@example.com");

    let updated = post(&sim, path, upsert_body("ann@example.com", "Annie")).await;
    assert_eq!(updated.body["results"][0]["new"], false);
    assert_eq!(updated.body["results"][0]["id"], created.body["results"][0]["id"]);

    assert_eq!(sim.creates_for("contacts", "email", "ann@example.com"), 1);
    let records = sim.records("contacts");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].properties["firstname"], "Annie");
    assert!(records[0].updated_at >= records[0].created_at);
}

#[tokio::test]
async fn upsert_matches_records_created_any_way_but_not_archived_ones() {
    let sim = start(HubSpotSimConfig::default()).await;
    let existing = sim.create("contacts", props(json!({"email": "bo@example.com"})));
    let path = "/crm/v3/objects/contacts/batch/upsert";
    let matched = post(&sim, path, upsert_body("bo@example.com", "Bo")).await;
    assert_eq!(matched.body["results"][0]["id"], existing);
    assert_eq!(sim.creates_for("contacts", "email", "bo@example.com"), 0);

    sim.delete("contacts", &existing);
    let recreated = post(&sim, path, upsert_body("bo@example.com", "Bo")).await;
    assert_eq!(recreated.body["results"][0]["new"], true);
    assert_ne!(recreated.body["results"][0]["id"], existing);
}

#[tokio::test]
async fn upsert_with_invalid_property_is_rejected_and_nothing_applied() {
    let sim = start(HubSpotSimConfig::default()).await;
    let body = json!({"inputs": [
        {"id": "ok@example.com", "idProperty": "email", "properties": {"firstname": "Ok"}},
        {"id": "bad@example.com", "idProperty": "email", "properties": {"invalid_colour": "red"}},
    ]});
    let answer = post(&sim, "/crm/v3/objects/contacts/batch/upsert", body).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["status"], "error");
    assert_eq!(answer.body["category"], "VALIDATION_ERROR");
    let message = answer.body["message"].as_str().unwrap();
    assert!(message.starts_with("Property values were not valid: "), "{message}");
    assert!(message.contains("invalid_colour"));
    assert!(sim.records("contacts").is_empty());
    assert_eq!(sim.creates_for("contacts", "email", "ok@example.com"), 0);
}

#[tokio::test]
async fn upsert_of_more_than_100_inputs_is_rejected() {
    let sim = start(HubSpotSimConfig::default()).await;
    let inputs: Vec<Value> = (0..101)
        .map(|n| json!({"id": format!("u{n}@example.com"), "idProperty": "email", "properties": {}}))
        .collect();
    let answer = post(
        &sim,
        "/crm/v3/objects/contacts/batch/upsert",
        json!({ "inputs": inputs }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(sim.records("contacts").is_empty());
}

#[tokio::test]
async fn batch_read_answers_207_naming_missing_and_archived_ids() {
    let sim = start(HubSpotSimConfig::default()).await;
    let live = sim.create("deals", props(json!({"dealname": "Big"})));
    let archived = sim.create("deals", props(json!({"dealname": "Gone"})));
    sim.delete("deals", &archived);
    let path = "/crm/v3/objects/deals/batch/read";

    let partial = post(
        &sim,
        path,
        json!({"properties": ["dealname"], "inputs": [{"id": live}, {"id": archived}, {"id": "999999"}]}),
    )
    .await;
    assert_eq!(partial.status, StatusCode::MULTI_STATUS);
    assert_eq!(ids(&partial), [live.as_str()]);
    assert_eq!(partial.body["results"][0]["properties"]["dealname"], "Big");
    let error = &partial.body["errors"][0];
    assert_eq!(error["category"], "OBJECT_NOT_FOUND");
    assert_eq!(error["context"]["ids"], json!([archived, "999999"]));

    let complete = post(&sim, path, json!({"inputs": [{"id": live}]})).await;
    assert_eq!(complete.status, StatusCode::OK);
    assert_eq!(complete.body["status"], "COMPLETE");
    assert!(complete.body.get("errors").is_none());
}

#[tokio::test]
async fn search_never_returns_archived_records_but_list_can() {
    let sim = start(HubSpotSimConfig::default()).await;
    let keep = sim.create("companies", props(json!({"name": "Keep"})));
    let gone = sim.create("companies", props(json!({"name": "Gone"})));
    sim.delete("companies", &gone);

    assert_eq!(ids(&search(&sim, "companies", json!({})).await), [keep.as_str()]);
    assert_eq!(ids(&get(&sim, "/crm/v3/objects/companies").await), [keep]);
    let archived = get(&sim, "/crm/v3/objects/companies?archived=true").await;
    assert_eq!(ids(&archived), [gone.as_str()]);
    assert_eq!(archived.body["results"][0]["archived"], true);
    assert!(sim.records("companies").iter().any(|r| r.id == gone && r.archived));
}

#[tokio::test]
async fn list_follows_after_to_the_end() {
    let sim = start(HubSpotSimConfig::default()).await;
    let seeded = sim.seed("contacts", 25, None);
    let mut got = Vec::new();
    let mut path = "/crm/v3/objects/contacts?limit=10".to_string();
    loop {
        let page = get(&sim, &path).await;
        got.extend(ids(&page));
        match page.body["paging"]["next"]["after"].as_str() {
            Some(after) => path = format!("/crm/v3/objects/contacts?limit=10&after={after}"),
            None => break,
        }
    }
    assert_eq!(got, seeded);
}

#[tokio::test]
async fn server_error_fault_answers_5xx_json_until_faults_are_cleared() {
    let sim = start(HubSpotSimConfig {
        faults: Faults {
            server_error: 1.0,
            ..Faults::none()
        },
        ..HubSpotSimConfig::default()
    })
    .await;
    let failed = search(&sim, "contacts", json!({})).await;
    assert!(failed.status.is_server_error(), "{}", failed.status);
    assert_eq!(failed.body["status"], "error");

    sim.set_faults(Faults::none());
    assert_eq!(search(&sim, "contacts", json!({})).await.status, StatusCode::OK);
}

#[tokio::test]
async fn injected_429_carries_the_faults_retry_after() {
    let sim = start(HubSpotSimConfig {
        faults: Faults {
            rate_limited: 1.0,
            retry_after: Duration::from_millis(2500),
            ..Faults::none()
        },
        ..HubSpotSimConfig::default()
    })
    .await;
    let limited = get(&sim, "/crm/v3/objects/contacts").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.body["policyName"], "SECONDLY");
    assert_eq!(limited.headers["retry-after"], "3");
    assert_eq!(sim.rate_limit_excess(), 0, "an injected 429 is not the window's");
}

#[tokio::test]
async fn truncated_json_fault_cuts_a_successful_body() {
    let sim = start(HubSpotSimConfig {
        faults: Faults {
            truncated_json: 1.0,
            ..Faults::none()
        },
        ..HubSpotSimConfig::default()
    })
    .await;
    sim.seed("contacts", 3, None);
    let response = client()
        .post(format!("{}/crm/v3/objects/contacts/search", sim.base_url()))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
}

#[tokio::test]
async fn connection_reset_after_an_upsert_still_applies_it() {
    let sim = start(HubSpotSimConfig {
        faults: Faults {
            connection_reset: 1.0,
            ..Faults::none()
        },
        ..HubSpotSimConfig::default()
    })
    .await;
    let sent = client()
        .post(format!("{}/crm/v3/objects/contacts/batch/upsert", sim.base_url()))
        .bearer_auth(TOKEN)
        .json(&upsert_body("cy@example.com", "Cy"))
        .send()
        .await;
    assert!(sent.is_err(), "the client sees no answer");
    assert_eq!(
        sim.creates_for("contacts", "email", "cy@example.com"),
        1,
        "but the write happened"
    );
    assert_eq!(sim.log().snapshot()[0].status, 0, "the log records no answer");

    sim.set_faults(Faults::none());
    let retried = post(
        &sim,
        "/crm/v3/objects/contacts/batch/upsert",
        upsert_body("cy@example.com", "Cy"),
    )
    .await;
    assert_eq!(
        retried.body["results"][0]["new"], false,
        "a retry updates instead of duplicating"
    );
    assert_eq!(sim.creates_for("contacts", "email", "cy@example.com"), 1);
}

#[test]
fn v1_signature_matches_an_independent_sha256() {
    let body = br#"[{"eventId":1}]"#;
    let expected = hex::encode(Sha256::digest([SECRET.as_bytes(), body.as_slice()].concat()));
    assert_eq!(sign_v1(SECRET, body), expected);
}

#[test]
fn v2_signature_matches_an_independent_sha256() {
    let body = br#"[{"eventId":1}]"#;
    let uri = "https://example.com/hooks/hubspot?x=1";
    let source = format!("{SECRET}POST{uri}{}", std::str::from_utf8(body).unwrap());
    let expected = hex::encode(Sha256::digest(source.as_bytes()));
    assert_eq!(sign_v2(SECRET, "POST", uri, body), expected);
}

fn hmac_base64(message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[test]
fn v3_signature_matches_an_independent_hmac() {
    let body = r#"[{"eventId":1}]"#;
    let expected = hmac_base64(&format!("POSThttps://example.com/hooks/hubspot?x=1{body}1704067200000"));
    assert_eq!(
        sign_v3(
            SECRET,
            "POST",
            "https://example.com/hooks/hubspot?x=1",
            body.as_bytes(),
            1_704_067_200_000
        ),
        expected
    );
}

#[test]
fn v3_signature_is_computed_over_the_uri_with_hubspots_escapes_decoded() {
    let expected = hmac_base64("POSThttps://example.com/hooks/a:b@c[]1");
    assert_eq!(
        sign_v3(SECRET, "POST", "https://example.com/hooks/a%3Ab%40c", b"[]", 1),
        expected
    );
}

/// A webhook receiver that keeps every request.
#[derive(Default)]
struct Capture {
    requests: Mutex<Vec<SimRequest>>,
}

impl Handler for Capture {
    async fn handle(&self, request: SimRequest) -> SimResponse {
        self.requests.lock().unwrap().push(request);
        SimResponse::new(http::StatusCode::NO_CONTENT, "")
    }
}

#[tokio::test]
async fn send_webhook_delivers_a_body_and_headers_that_verify() {
    let sim = start(HubSpotSimConfig::default()).await;
    let capture = Arc::new(Capture::default());
    let receiver = server::spawn(([127, 0, 0, 1], 0).into(), capture.clone())
        .await
        .unwrap();
    let url = format!("{}/hooks/hubspot?portal=62515", receiver.base_url());
    let id = sim.create("contacts", props(json!({"firstname": "Dee"})));
    let events = vec![
        sim.event("contact.propertyChange", &id),
        sim.event("contact.creation", &id),
    ];

    for version in [SignatureVersion::V1, SignatureVersion::V2, SignatureVersion::V3] {
        let status = sim.send_webhook(&url, &events, version).await.unwrap();
        assert_eq!(status, StatusCode::NO_CONTENT);
    }

    let requests = capture.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.method, http::Method::POST);
        assert_eq!(
            request.uri.path_and_query().unwrap().as_str(),
            "/hooks/hubspot?portal=62515"
        );
        let sent: Vec<Value> = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(sent, events);
    }
    let body = std::str::from_utf8(&requests[0].body).unwrap();

    let v1 = &requests[0];
    assert_eq!(v1.header("x-hubspot-signature-version"), Some("v1"));
    let v1_expected = hex::encode(Sha256::digest(format!("{SECRET}{body}").as_bytes()));
    assert_eq!(v1.header("x-hubspot-signature"), Some(v1_expected.as_str()));

    let v2 = &requests[1];
    assert_eq!(v2.header("x-hubspot-signature-version"), Some("v2"));
    let v2_expected = hex::encode(Sha256::digest(format!("{SECRET}POST{url}{body}").as_bytes()));
    assert_eq!(v2.header("x-hubspot-signature"), Some(v2_expected.as_str()));

    let v3 = &requests[2];
    let timestamp: i64 = v3.header("x-hubspot-request-timestamp").unwrap().parse().unwrap();
    assert!(
        (Utc::now().timestamp_millis() - timestamp).abs() < 60_000,
        "a fresh timestamp"
    );
    let v3_expected = hmac_base64(&format!("POST{url}{body}{timestamp}"));
    assert_eq!(v3.header("x-hubspot-signature-v3"), Some(v3_expected.as_str()));
    receiver.shutdown().await;
}

#[tokio::test]
async fn events_carry_hubspots_fields_and_increasing_ids() {
    let sim = start(HubSpotSimConfig::default()).await;
    let id = sim.create("contacts", props(json!({"firstname": "Eve"})));
    let change = sim.event("contact.propertyChange", &id);
    let deletion = sim.event("contact.deletion", &id);

    assert_eq!(change["subscriptionType"], "contact.propertyChange");
    assert_eq!(change["objectId"], id.parse::<u64>().unwrap());
    assert_eq!(change["propertyName"], "firstname");
    assert_eq!(change["propertyValue"], "Eve");
    assert_eq!(change["attemptNumber"], 0);
    assert_eq!(change["changeSource"], "CRM");
    for field in ["subscriptionId", "portalId", "appId", "occurredAt"] {
        assert!(change[field].is_u64(), "{field}");
    }
    assert!(deletion["eventId"].as_u64() > change["eventId"].as_u64());
    assert!(deletion.get("propertyName").is_none());
}

#[tokio::test]
async fn churn_modifies_records_and_sends_signed_v3_webhooks() {
    let sim = start(HubSpotSimConfig::default()).await;
    sim.seed("contacts", 20, Some(t(0)));
    let capture = Arc::new(Capture::default());
    let receiver = server::spawn(([127, 0, 0, 1], 0).into(), capture.clone())
        .await
        .unwrap();
    let url = format!("{}/hooks", receiver.base_url());

    let churn = sim.spawn_churn(Duration::from_millis(10), 5, vec!["contacts".into()], Some(url.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while capture.requests.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "churn sent no webhooks");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    churn.abort();

    let records = sim.records("contacts");
    assert!(records.iter().any(|r| r.updated_at > t(0)), "some records changed");
    let request = capture.requests.lock().unwrap()[0].clone();
    let body = std::str::from_utf8(&request.body).unwrap();
    let timestamp = request.header("x-hubspot-request-timestamp").unwrap();
    let expected = hmac_base64(&format!("POST{url}{body}{timestamp}"));
    assert_eq!(request.header("x-hubspot-signature-v3"), Some(expected.as_str()));
    let events: Vec<Value> = serde_json::from_str(body).unwrap();
    assert_eq!(events.len(), 5);
    for event in &events {
        let kind = event["subscriptionType"].as_str().unwrap();
        assert!(kind.starts_with("contact."), "{kind}");
        let id = event["objectId"].as_u64().unwrap().to_string();
        assert!(records.iter().any(|r| r.id == id), "the event names a real record");
    }
    receiver.shutdown().await;
}

#[tokio::test]
async fn paging_a_large_store_scans_once_per_query() {
    let sim = start(HubSpotSimConfig::default()).await;
    sim.seed("contacts", 50_000, None);
    let body = json!({
        "filterGroups": [{"filters": [filter("lastmodifieddate", "GTE", "0")]}],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "limit": 200,
    });
    let started = Instant::now();
    let mut seen = 0;
    let mut body = body;
    for _ in 0..50 {
        let page = search(&sim, "contacts", body.clone()).await;
        seen += page.body["results"].as_array().unwrap().len();
        body["after"] = page.body["paging"]["next"]["after"].clone();
    }
    assert_eq!(seen, 10_000);
    // Generous for a debug build on a slow machine; a scan-and-sort per page would take far longer.
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}
