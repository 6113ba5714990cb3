//! The Salesforce simulator's documented behaviour, driven over real HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use crmsyncd_sim::Faults;
use crmsyncd_sim::salesforce::{Notification, SalesforceSim, SalesforceSimConfig, is_ack};
use crmsyncd_sim::server::{self, Handler, SimRequest, SimResponse};
use http::StatusCode;
use serde_json::{Map, Value, json};

const V: &str = "v62.0";

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// An access token from the sim's token endpoint, and the whole answer.
async fn login(sim: &SalesforceSim) -> (String, Value) {
    let answer: Value = reqwest::Client::new()
        .post(sim.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "sf-client-id"),
            ("client_secret", "sf-client-secret"),
            ("refresh_token", "sf-refresh-token"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (answer["access_token"].as_str().unwrap().to_string(), answer)
}

async fn get(sim: &SalesforceSim, token: &str, path_and_query: &str) -> (StatusCode, http::HeaderMap, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}{path_and_query}", sim.base_url()))
        .bearer_auth(token)
        .header("sforce-query-options", "batchSize=200")
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

async fn query(sim: &SalesforceSim, token: &str, soql: &str) -> (StatusCode, Value) {
    let url = format!("{}/services/data/{V}/query", sim.base_url());
    let r = reqwest::Client::new()
        .get(url)
        .query(&[("q", soql)])
        .bearer_auth(token)
        .header("sforce-query-options", "batchSize=200")
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

/// Every record of a query, following `nextRecordsUrl`.
async fn query_all(sim: &SalesforceSim, token: &str, soql: &str) -> Vec<Value> {
    let (status, mut page) = query(sim, token, soql).await;
    assert_eq!(status, 200, "{page}");
    let mut rows = Vec::new();
    loop {
        rows.extend(page["records"].as_array().unwrap().iter().cloned());
        if page["done"] == true {
            return rows;
        }
        let next = page["nextRecordsUrl"].as_str().unwrap().to_string();
        let (status, _, body) = get(sim, token, &next).await;
        assert_eq!(status, 200, "{body}");
        page = body;
    }
}

async fn upsert(sim: &SalesforceSim, token: &str, version: &str, key: &str, body: Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .patch(format!(
            "{}/services/data/{version}/sobjects/Account/Crmsyncd_Key__c/{key}",
            sim.base_url()
        ))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn token_answers_carry_instance_url_and_no_expiry_and_sessions_are_checked() {
    let sim = SalesforceSim::start(SalesforceSimConfig::default()).await.unwrap();
    sim.seed("Account", 1, None);
    let (token, answer) = login(&sim).await;
    assert_eq!(answer["instance_url"], sim.base_url());
    assert!(answer.get("expires_in").is_none(), "{answer}");
    let (status, headers, _) = get(&sim, &token, &format!("/services/data/{V}/limits")).await;
    assert_eq!(status, 200);
    assert!(headers["sforce-limit-info"].to_str().unwrap().starts_with("api-usage="));
    sim.oauth().expire_access_tokens();
    let (status, _, body) = get(&sim, &token, &format!("/services/data/{V}/limits")).await;
    assert_eq!(status, 401);
    assert_eq!(body[0]["errorCode"], "INVALID_SESSION_ID");
    sim.shutdown().await;
}

#[tokio::test]
async fn query_pages_through_an_equal_timestamp_block_with_next_records_url() {
    let sim = SalesforceSim::start(SalesforceSimConfig::default()).await.unwrap();
    let at = Utc::now() - chrono::Duration::hours(1);
    let ids = sim.seed("Account", 450, Some(at));
    let (token, _) = login(&sim).await;
    let rows = query_all(
        &sim,
        &token,
        "SELECT Id, Name, SystemModstamp FROM Account WHERE SystemModstamp >= 2000-01-01T00:00:00Z ORDER BY SystemModstamp, Id",
    )
    .await;
    let got: Vec<&str> = rows.iter().map(|r| r["Id"].as_str().unwrap()).collect();
    assert_eq!(
        got,
        ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "every row once, in Id order"
    );
    assert!(rows.iter().all(|r| r["SystemModstamp"] == rows[0]["SystemModstamp"]));
    assert!(rows[0]["SystemModstamp"].as_str().unwrap().ends_with(".000+0000"));
    // Keyset on (SystemModstamp, Id) resumes inside the block.
    let stamp = rows[0]["SystemModstamp"].as_str().unwrap();
    let rest = query_all(
        &sim,
        &token,
        &format!(
            "SELECT Id FROM Account WHERE SystemModstamp > {stamp} OR (SystemModstamp = {stamp} AND Id > '{}') ORDER BY SystemModstamp, Id",
            ids[399]
        ),
    )
    .await;
    assert_eq!(rest.len(), 50);
    let (status, body) = query(&sim, &token, "SELECT Nope__c FROM Account").await;
    assert_eq!(
        (status.as_u16(), body[0]["errorCode"].as_str()),
        (400, Some("INVALID_FIELD"))
    );
    let (status, body) = query(&sim, &token, "SELECT Id FROM Nothing").await;
    assert_eq!(
        (status.as_u16(), body[0]["errorCode"].as_str()),
        (400, Some("INVALID_TYPE"))
    );
    let (status, body) = query(&sim, &token, "SELECT Id FROM").await;
    assert_eq!(
        (status.as_u16(), body[0]["errorCode"].as_str()),
        (400, Some("MALFORMED_QUERY"))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_released_query_locator_is_answered_invalid_query_locator() {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        max_open_cursors: 1,
        ..SalesforceSimConfig::default()
    })
    .await
    .unwrap();
    sim.seed("Account", 500, None);
    let (token, _) = login(&sim).await;
    let (_, first) = query(&sim, &token, "SELECT Id FROM Account ORDER BY Id").await;
    let next = first["nextRecordsUrl"].as_str().unwrap().to_string();
    // A second query opens a cursor; only one may be open, so the first one goes.
    let (_, _second) = query(&sim, &token, "SELECT Id FROM Account ORDER BY Id").await;
    let (status, _, body) = get(&sim, &token, &next).await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "INVALID_QUERY_LOCATOR");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_late_commit_appears_behind_rows_already_read() {
    let sim = SalesforceSim::start(SalesforceSimConfig::default()).await.unwrap();
    let mut late = sim.begin();
    let late_id = late.create("Account", fields(json!({"Name": "Late"})));
    let stamp = late.stamp();
    let (token, _) = login(&sim).await;
    sim.seed("Account", 3, Some(stamp + chrono::Duration::seconds(5)));
    let before = query_all(&sim, &token, "SELECT Id FROM Account ORDER BY SystemModstamp, Id").await;
    assert_eq!(before.len(), 3, "the open transaction is invisible");
    late.commit();
    let after = query_all(
        &sim,
        &token,
        "SELECT Id, SystemModstamp FROM Account ORDER BY SystemModstamp, Id",
    )
    .await;
    assert_eq!(after.len(), 4);
    assert_eq!(after[0]["Id"], late_id, "older than everything read before it");
    sim.shutdown().await;
}

#[tokio::test]
async fn get_deleted_lists_the_recycle_bin_and_reports_what_it_no_longer_covers() {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        replication_step: Duration::from_secs(1),
        ..SalesforceSimConfig::default()
    })
    .await
    .unwrap();
    let ids = sim.seed("Account", 5, None);
    let start = Utc::now() - chrono::Duration::minutes(5);
    sim.delete("Account", &ids[0]);
    sim.delete("Account", &ids[1]);
    sim.undelete("Account", &ids[1]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (token, _) = login(&sim).await;
    let end = Utc::now() + chrono::Duration::minutes(1);
    let path = |s: chrono::DateTime<Utc>, e: chrono::DateTime<Utc>| {
        format!(
            "/services/data/{V}/sobjects/Account/deleted/?start={}&end={}",
            s.to_rfc3339().replace('+', "%2B"),
            e.to_rfc3339().replace('+', "%2B")
        )
    };
    let (status, _, body) = get(&sim, &token, &path(start, end)).await;
    assert_eq!(status, 200, "{body}");
    let deleted: Vec<&str> = body["deletedRecords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, [ids[0].as_str()], "an undeleted record leaves the log");
    let covered =
        chrono::DateTime::parse_from_str(body["latestDateCovered"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.3f%z")
            .unwrap();
    assert!(covered <= Utc::now(), "never covers the future");
    // The recycle bin is emptied: the log starts later than asked.
    sim.purge_deleted_before(Utc::now());
    let (_, _, body) = get(&sim, &token, &path(start, end)).await;
    let earliest = chrono::DateTime::parse_from_str(
        body["earliestDateAvailable"].as_str().unwrap(),
        "%Y-%m-%dT%H:%M:%S%.3f%z",
    )
    .unwrap();
    assert!(
        earliest > start,
        "earliestDateAvailable {earliest} is past the start {start}"
    );
    let (status, _, body) = get(&sim, &token, &path(end, start)).await;
    assert_eq!(
        (status.as_u16(), body[0]["errorCode"].as_str()),
        (400, Some("INVALID_REPLICATION_DATE"))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn upsert_on_the_external_id_creates_once_and_answers_as_the_version_does() {
    let sim = SalesforceSim::start(SalesforceSimConfig::default()).await.unwrap();
    sim.seed("Account", 1, None);
    let (token, _) = login(&sim).await;
    let (status, created) = upsert(&sim, &token, V, "key-1", json!({"Name": "A"})).await;
    assert_eq!(status, 201);
    assert_eq!(created["created"], true);
    let (status, updated) = upsert(&sim, &token, V, "key-1", json!({"Name": "B"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        (updated["id"].clone(), updated["created"].clone()),
        (created["id"].clone(), json!(false))
    );
    let (status, _) = upsert(&sim, &token, "v45.0", "key-1", json!({"Name": "C"})).await;
    assert_eq!(status, 204, "before v46.0 an update answers 204 without a body");
    assert_eq!(sim.creates_for("Account", "Crmsyncd_Key__c", "key-1"), 1);
    let (status, body) = upsert(&sim, &token, V, "key-2", json!({"Bogus__x": 1})).await;
    assert_eq!(
        (status.as_u16(), body[0]["errorCode"].as_str()),
        (400, Some("INVALID_FIELD"))
    );
    let (status, body) = upsert(&sim, &token, V, "key-2", json!({"Id": "001"})).await;
    assert_eq!(status, 400, "{body}");
    // Two records holding one value: 300.
    sim.create("Account", fields(json!({"Crmsyncd_Key__c": "dup"})));
    sim.create("Account", fields(json!({"Crmsyncd_Key__c": "dup"})));
    let (status, _) = upsert(&sim, &token, V, "dup", json!({"Name": "x"})).await;
    assert_eq!(status, 300);
    let (status, _, record) = get(
        &sim,
        &token,
        &format!("/services/data/{V}/sobjects/Account/Crmsyncd_Key__c/key-1"),
    )
    .await;
    assert_eq!((status.as_u16(), record["Name"].as_str()), (200, Some("C")));
    sim.shutdown().await;
}

#[tokio::test]
async fn the_api_allocation_is_reported_and_enforced_with_request_limit_exceeded() {
    let sim = SalesforceSim::start(SalesforceSimConfig {
        api_limit: (5, Duration::from_secs(60)),
        ..SalesforceSimConfig::default()
    })
    .await
    .unwrap();
    sim.seed("Account", 1, None);
    let (token, _) = login(&sim).await;
    sim.spend_api_calls(2);
    let path = format!("/services/data/{V}/limits");
    let (_, headers, _) = get(&sim, &token, &path).await;
    assert_eq!(
        headers["sforce-limit-info"], "api-usage=3/5",
        "other integrations' calls count too"
    );
    get(&sim, &token, &path).await;
    get(&sim, &token, &path).await;
    let (status, headers, body) = get(&sim, &token, &path).await;
    assert_eq!(status, 403);
    assert_eq!(body[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
    assert_eq!(headers["sforce-limit-info"], "api-usage=5/5");
    assert_eq!(sim.rate_limit_excess(), 1);
    assert_eq!(sim.api_usage(), (5, 5));
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_faults_answer_in_salesforce_form() {
    let sim = SalesforceSim::start(SalesforceSimConfig::default()).await.unwrap();
    sim.seed("Account", 1, None);
    let (token, _) = login(&sim).await;
    sim.set_faults(Faults {
        rate_limited: 1.0,
        ..Faults::default()
    });
    let (status, _, body) = get(&sim, &token, &format!("/services/data/{V}/limits")).await;
    assert_eq!(
        (status.as_u16(), body[0]["errorCode"].as_str()),
        (403, Some("REQUEST_LIMIT_EXCEEDED"))
    );
    sim.set_faults(Faults {
        server_error: 1.0,
        ..Faults::default()
    });
    let (status, _, body) = get(&sim, &token, &format!("/services/data/{V}/limits")).await;
    assert!(status.is_server_error(), "{status} {body}");
    assert_eq!(sim.rate_limit_excess(), 0, "injected refusals are not excess");
    sim.shutdown().await;
}

/// An endpoint that records what it receives and acknowledges (or not).
struct Receiver {
    bodies: Mutex<Vec<String>>,
    ack: bool,
}

impl Handler for Receiver {
    async fn handle(&self, request: SimRequest) -> SimResponse {
        self.bodies
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&request.body).into_owned());
        let ack = if self.ack { "true" } else { "false" };
        SimResponse::new(
            StatusCode::OK,
            format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>{ack}</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"#
            ),
        )
    }
}

#[tokio::test]
async fn outbound_messages_are_soap_and_count_only_a_true_ack() {
    let sim = SalesforceSim::start(SalesforceSimConfig::default()).await.unwrap();
    let ids = sim.seed("Account", 2, None);
    let yes = Arc::new(Receiver {
        bodies: Mutex::new(Vec::new()),
        ack: true,
    });
    let no = Arc::new(Receiver {
        bodies: Mutex::new(Vec::new()),
        ack: false,
    });
    let yes_server = server::spawn(([127, 0, 0, 1], 0).into(), yes.clone()).await.unwrap();
    let no_server = server::spawn(([127, 0, 0, 1], 0).into(), no.clone()).await.unwrap();
    let notifications: Vec<Notification> = sim.notifications("Account", &ids, &["Name"]);
    assert_eq!(notifications.len(), 2);
    assert_ne!(notifications[0].id, notifications[1].id);
    let delivered = sim.deliver(&yes_server.base_url(), &notifications).await.unwrap();
    assert!(delivered.acked);
    let refused = sim.deliver(&no_server.base_url(), &notifications).await.unwrap();
    assert!(!refused.acked, "a nack is not a delivery");
    let body = yes.bodies.lock().unwrap()[0].clone();
    assert!(body.contains("<notifications xmlns=\"http://soap.sforce.com/2005/09/outbound\">"));
    assert!(body.contains(&format!("<Id>{}</Id>", notifications[0].id)));
    assert!(body.contains(&format!("<sf:Id>{}</sf:Id>", ids[0])));
    assert!(body.contains(&sim.config().organization_id));
    assert!(!is_ack(body.as_bytes()));
    yes_server.shutdown().await;
    no_server.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn churn_changes_records_and_delivers_messages_until_acknowledged() {
    let sim = SalesforceSim::start(SalesforceSimConfig::default()).await.unwrap();
    sim.seed("Account", 50, None);
    let receiver = Arc::new(Receiver {
        bodies: Mutex::new(Vec::new()),
        ack: true,
    });
    let endpoint = server::spawn(([127, 0, 0, 1], 0).into(), receiver.clone())
        .await
        .unwrap();
    let before = sim.records("Account");
    let churn = sim.spawn_churn(
        Duration::from_millis(20),
        10,
        vec!["Account".into()],
        Some(endpoint.base_url()),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.bodies.lock().unwrap().len() < 10 {
        assert!(tokio::time::Instant::now() < deadline, "churn sent no messages");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    churn.abort();
    let after = sim.records("Account");
    assert!(after.len() > before.len(), "churn created records");
    assert_ne!(before, after[..before.len()].to_vec(), "churn changed records");
    endpoint.shutdown().await;
    sim.shutdown().await;
}
