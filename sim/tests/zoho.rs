//! The Zoho simulator's documented behaviour, driven over real HTTP: the accounts server, COQL and its keyset
//! paging, the list API's offset page tokens (and the record they skip), the org's offset, the delete log, late
//! commits, credits and concurrency answered 429, upsert, expiring notification channels, faults and churn.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crmsyncd_sim::Faults;
use crmsyncd_sim::server::{self, Handler, SimRequest, SimResponse};
use crmsyncd_sim::zoho::{ZohoSim, ZohoSimConfig, parse_time};
use http::StatusCode;
use serde_json::{Map, Value, json};

async fn start(config: ZohoSimConfig) -> ZohoSim {
    ZohoSim::start(config).await.unwrap()
}

fn fields(v: Value) -> Map<String, Value> {
    serde_json::from_value(v).unwrap()
}

/// A fresh access token from the accounts server.
async fn token(sim: &ZohoSim) -> String {
    let oauth = sim.issuer().config().clone();
    let answer: Value = reqwest::Client::new()
        .post(sim.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", oauth.client_id.as_str()),
            ("client_secret", oauth.client_secret.as_str()),
            ("refresh_token", oauth.refresh_token.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"].as_str().unwrap().to_string()
}

async fn coql(sim: &ZohoSim, token: &str, query: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/crm/v8/coql", sim.base_url()))
        .header("authorization", format!("Zoho-oauthtoken {token}"))
        .json(&json!({ "select_query": query }))
        .send()
        .await
        .unwrap()
}

async fn get(sim: &ZohoSim, token: &str, path_and_query: &str, ims: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(format!("{}{path_and_query}", sim.base_url()))
        .header("authorization", format!("Zoho-oauthtoken {token}"));
    if let Some(ims) = ims {
        request = request.header("if-modified-since", ims);
    }
    request.send().await.unwrap()
}

fn ids(answer: &Value) -> Vec<String> {
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn keyset_query(after: Option<(&str, &str)>) -> String {
    let filter = match after {
        None => "(Modified_Time >= '2000-01-01T00:00:00+00:00')".to_string(),
        Some((ts, id)) => format!("((Modified_Time > '{ts}') or ((Modified_Time = '{ts}') and (id > {id})))"),
    };
    format!("select Last_Name, Modified_Time from Leads where {filter} order by Modified_Time asc, id asc limit 200")
}

#[tokio::test]
async fn the_accounts_server_answers_with_api_domain_and_refuses_with_200_invalid_code() {
    let sim = start(ZohoSimConfig::default()).await;
    let oauth = sim.issuer().config().clone();
    let client = reqwest::Client::new();
    let ok: Value = client
        .post(sim.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", oauth.client_id.as_str()),
            ("client_secret", oauth.client_secret.as_str()),
            ("refresh_token", oauth.refresh_token.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok["api_domain"], sim.base_url());
    assert_eq!(ok["expires_in"], 3600);
    sim.issuer().revoke_refresh_tokens();
    let refused = client
        .post(sim.token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", oauth.client_id.as_str()),
            ("client_secret", oauth.client_secret.as_str()),
            ("refresh_token", oauth.refresh_token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::OK, "Zoho refuses with a 200");
    assert_eq!(refused.json::<Value>().await.unwrap(), json!({"error": "invalid_code"}));
    sim.shutdown().await;
}

#[tokio::test]
async fn the_api_takes_only_a_live_token_in_the_zoho_oauthtoken_scheme() {
    let sim = start(ZohoSimConfig::default()).await;
    let token = token(&sim).await;
    let url = format!("{}/crm/v8/Leads?fields=Last_Name", sim.base_url());
    let client = reqwest::Client::new();
    let bearer = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(bearer.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(bearer.json::<Value>().await.unwrap()["code"], "AUTHENTICATION_FAILURE");
    assert_eq!(
        get(&sim, &token, "/crm/v8/Leads?fields=Last_Name", None).await.status(),
        StatusCode::NO_CONTENT
    );
    sim.issuer().expire_access_tokens();
    let expired = get(&sim, &token, "/crm/v8/Leads?fields=Last_Name", None).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(expired.json::<Value>().await.unwrap()["code"], "INVALID_TOKEN");
    sim.shutdown().await;
}

#[tokio::test]
async fn coql_keyset_paging_reads_an_equal_timestamp_block_exactly_once_while_records_change() {
    let sim = start(ZohoSimConfig::default()).await;
    let token = token(&sim).await;
    let at = Utc::now() - chrono::Duration::hours(1);
    let block = sim.seed("Leads", 700, Some(at));
    let mut seen: Vec<String> = Vec::new();
    let mut after: Option<(String, String)> = None;
    let mut pages = 0;
    loop {
        let query = keyset_query(after.as_ref().map(|(t, i)| (t.as_str(), i.as_str())));
        let response = coql(&sim, &token, &query).await;
        if response.status() == StatusCode::NO_CONTENT {
            break;
        }
        let answer: Value = response.json().await.unwrap();
        let page = ids(&answer);
        pages += 1;
        if pages == 1 {
            // Between pages, a record already read and one not yet read both change: both move to the end.
            sim.update("Leads", &block[10], fields(json!({"Last_Name": "Moved"})));
            sim.update("Leads", &block[400], fields(json!({"Last_Name": "Moved too"})));
        }
        let last = answer["data"].as_array().unwrap().last().unwrap();
        let ts = parse_time(last["Modified_Time"].as_str().unwrap()).unwrap();
        after = Some((ts.to_rfc3339(), last["id"].as_str().unwrap().to_string()));
        seen.extend(page);
        if !answer["info"]["more_records"].as_bool().unwrap() {
            break;
        }
    }
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 700, "every record of the block was read");
    assert_eq!(
        seen.len(),
        701,
        "only the record changed behind the position is read twice"
    );
    assert_eq!(pages, 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn list_page_tokens_page_by_offset_and_skip_a_record_that_moves_between_pages() {
    let sim = start(ZohoSimConfig::default()).await;
    let token = token(&sim).await;
    let at = Utc::now() - chrono::Duration::hours(1);
    let all = sim.seed("Leads", 300, Some(at));
    let first: Value = get(
        &sim,
        &token,
        "/crm/v8/Leads?fields=Last_Name&sort_by=Modified_Time&sort_order=asc",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(first["info"]["more_records"], true);
    let next = first["info"]["next_page_token"].as_str().unwrap().to_string();
    // A record from the first page changes: everything behind it shifts up by one.
    sim.update("Leads", &all[5], fields(json!({"Last_Name": "Moved"})));
    let second: Value = get(
        &sim,
        &token,
        &format!("/crm/v8/Leads?fields=Last_Name&sort_by=Modified_Time&sort_order=asc&page_token={next}"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let mut seen = ids(&first);
    seen.extend(ids(&second));
    let missed: Vec<&String> = all.iter().filter(|id| !seen.contains(id)).collect();
    assert_eq!(
        missed,
        vec![&all[200]],
        "offset paging skips the record that slid into page one"
    );
    let far = get(
        &sim,
        &token,
        "/crm/v8/Leads?fields=Last_Name&page=11&per_page=200",
        None,
    )
    .await;
    assert_eq!(far.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        far.json::<Value>().await.unwrap()["code"],
        "DISCRETE_PAGINATION_LIMIT_EXCEEDED"
    );
    let no_fields = get(&sim, &token, "/crm/v8/Leads", None).await;
    assert_eq!(
        no_fields.json::<Value>().await.unwrap()["code"],
        "REQUIRED_PARAM_MISSING"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn times_are_written_in_the_org_offset_and_compared_as_instants() {
    let sim = start(ZohoSimConfig::default()).await;
    let token = token(&sim).await;
    let at: DateTime<Utc> = parse_time("2024-03-01T12:00:05Z").unwrap();
    let id = sim.seed("Leads", 1, Some(at)).remove(0);
    let answer: Value = get(
        &sim,
        &token,
        &format!("/crm/v8/Leads?fields=Modified_Time,Email&ids={id}"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer["data"][0]["Modified_Time"], "2024-03-01T17:30:05+05:30");
    // The same instant written in UTC matches it exactly.
    let same = coql(
        &sim,
        &token,
        "select Email from Leads where Modified_Time = '2024-03-01T12:00:05+00:00'",
    )
    .await;
    assert_eq!(ids(&same.json().await.unwrap()), vec![id]);
    let bad = coql(
        &sim,
        &token,
        "select Email from Leads where Modified_Time > '2024-03-01 12:00:05'",
    )
    .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad.json::<Value>().await.unwrap()["code"], "INVALID_QUERY");
    sim.shutdown().await;
}

#[tokio::test]
async fn nothing_changed_is_204_for_coql_and_304_for_a_list_with_if_modified_since() {
    let sim = start(ZohoSimConfig::default()).await;
    let token = token(&sim).await;
    sim.seed("Deals", 3, Some(Utc::now() - chrono::Duration::hours(2)));
    let none = coql(
        &sim,
        &token,
        "select Deal_Name from Deals where Modified_Time > '2099-01-01T00:00:00+00:00'",
    )
    .await;
    assert_eq!(none.status(), StatusCode::NO_CONTENT);
    let since = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let not_modified = get(&sim, &token, "/crm/v8/Deals?fields=Deal_Name", Some(&since)).await;
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    let modified = get(
        &sim,
        &token,
        "/crm/v8/Deals?fields=Deal_Name",
        Some("2000-01-01T00:00:00+00:00"),
    )
    .await;
    assert_eq!(modified.status(), StatusCode::OK);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_delete_log_lists_deletions_newest_first_since_if_modified_since() {
    let sim = start(ZohoSimConfig::default()).await;
    let token = token(&sim).await;
    let ids_ = sim.seed("Contacts", 3, None);
    for id in &ids_ {
        sim.delete("Contacts", id);
    }
    let response = get(&sim, &token, "/crm/v8/Contacts/deleted?type=all&per_page=2", None).await;
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["info"]["more_records"], true);
    assert_eq!(answer["data"][0]["id"], ids_[2].as_str(), "newest first");
    assert_eq!(answer["data"][0]["type"], "recycle");
    assert!(parse_time(answer["data"][0]["deleted_time"].as_str().unwrap()).is_some());
    let later = (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let none = get(&sim, &token, "/crm/v8/Contacts/deleted?type=all", Some(&later)).await;
    assert_eq!(none.status(), StatusCode::NO_CONTENT);
    let gone = coql(&sim, &token, "select Email from Contacts where id is not null").await;
    assert_eq!(gone.status(), StatusCode::NO_CONTENT, "deleted records leave the reads");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_late_batch_appears_only_at_commit_with_its_old_modified_time() {
    let sim = start(ZohoSimConfig::default()).await;
    let token = token(&sim).await;
    let existing = sim.seed("Leads", 1, None).remove(0);
    let mut batch = sim.begin_late();
    let created = batch.create("Leads", fields(json!({"Last_Name": "Late"})));
    batch.update("Leads", &existing, fields(json!({"Last_Name": "Late edit"})));
    let stamped = batch.stamped_at();
    let query = "select Last_Name, Modified_Time from Leads where id is not null";
    let before: Value = coql(&sim, &token, query).await.json().await.unwrap();
    assert_eq!(ids(&before), vec![existing.clone()], "nothing of the batch is visible");
    assert_ne!(before["data"][0]["Last_Name"], "Late edit");
    batch.commit();
    let after: Value = coql(&sim, &token, query).await.json().await.unwrap();
    assert_eq!(ids(&after), vec![existing.clone(), created]);
    for row in after["data"].as_array().unwrap() {
        assert_eq!(parse_time(row["Modified_Time"].as_str().unwrap()).unwrap(), stamped);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn spent_credits_are_answered_429_too_many_requests_and_counted() {
    let sim = start(ZohoSimConfig {
        credits: Some((5, Duration::from_secs(60))),
        ..ZohoSimConfig::default()
    })
    .await;
    let token = token(&sim).await;
    // A COQL query with LIMIT 1000 costs two credits.
    let heavy = coql(&sim, &token, "select Email from Leads where id is not null limit 1000").await;
    assert_eq!(heavy.headers()["x-ratelimit-remaining"], "3");
    for _ in 0..3 {
        let ok = get(&sim, &token, "/crm/v8/Leads?fields=Email", None).await;
        assert!(ok.status().is_success());
    }
    let refused = get(&sim, &token, "/crm/v8/Leads?fields=Email", None).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        refused.headers().get("retry-after").is_none(),
        "Zoho sends no Retry-After"
    );
    let reset: i64 = refused.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        reset > Utc::now().timestamp_millis() + 50_000,
        "the credits free up in about a minute"
    );
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        (body["code"].as_str(), body["status"].as_str()),
        (Some("TOO_MANY_REQUESTS"), Some("error"))
    );
    assert_eq!(sim.rate_limit_excess(), 1);
    // The token endpoint is the accounts server's, not the CRM's: no credits.
    token_no_credit(&sim).await;
    sim.shutdown().await;
}

async fn token_no_credit(sim: &ZohoSim) {
    let _ = token(sim).await;
    assert_eq!(sim.rate_limit_excess(), 1);
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_refused() {
    let sim = start(ZohoSimConfig {
        max_concurrent: Some(2),
        latency: Duration::from_millis(300),
        ..ZohoSimConfig::default()
    })
    .await;
    let token = token(&sim).await;
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (sim, token) = (sim.clone(), token.clone());
            tokio::spawn(async move { get(&sim, &token, "/crm/v8/Leads?fields=Email", None).await.status() })
        })
        .collect();
    let mut statuses = Vec::new();
    for handle in handles {
        statuses.push(handle.await.unwrap());
    }
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(refused, 2, "{statuses:?}");
    assert_eq!(sim.concurrency_excess(), 2);
    assert_eq!(sim.max_in_flight(), 2);
    sim.shutdown().await;
}

async fn upsert(sim: &ZohoSim, token: &str, module: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/crm/v8/{module}/upsert", sim.base_url()))
        .header("authorization", format!("Zoho-oauthtoken {token}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn upsert_checks_duplicate_fields_in_order_and_counts_what_it_creates() {
    let sim = start(ZohoSimConfig::default()).await;
    let token = token(&sim).await;
    let record = json!({"Last_Name": "Hopper", "Email": "grace@example.com", "crmsyncd_key": "k1"});
    let body = json!({"data": [record], "duplicate_check_fields": ["Email", "crmsyncd_key"]});
    let (status, first) = upsert(&sim, &token, "Leads", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(first["data"][0]["action"], "insert");
    assert_eq!(first["data"][0]["duplicate_field"], Value::Null);
    let id = first["data"][0]["details"]["id"].as_str().unwrap().to_string();
    let (status, again) = upsert(&sim, &token, "Leads", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["data"][0]["action"], "update");
    assert_eq!(again["data"][0]["duplicate_field"], "Email");
    assert_eq!(again["data"][0]["details"]["id"], id.as_str());
    // Found by the second field when the first has changed.
    let moved = json!({"data": [{"Last_Name": "Hopper", "Email": "new@example.com", "crmsyncd_key": "k1"}], "duplicate_check_fields": ["Email", "crmsyncd_key"]});
    let (_, by_key) = upsert(&sim, &token, "Leads", moved).await;
    assert_eq!(by_key["data"][0]["duplicate_field"], "crmsyncd_key");
    assert_eq!(sim.creates_for("Leads", "crmsyncd_key", "k1"), 1);
    assert_eq!(sim.records("Leads")[0].fields["Email"], "new@example.com");
    let (status, missing) = upsert(&sim, &token, "Leads", json!({"data": [{"Email": "x@example.com"}]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(missing["data"][0]["code"], "MANDATORY_NOT_FOUND");
    let many: Vec<Value> = (0..101).map(|i| json!({"Last_Name": format!("L{i}")})).collect();
    let (status, too_many) = upsert(&sim, &token, "Leads", json!({"data": many})).await;
    assert_eq!(
        (status, too_many["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("LIMIT_EXCEEDED"))
    );
    sim.shutdown().await;
}

/// A receiver that records every callback body.
#[derive(Default)]
struct Receiver {
    bodies: Mutex<Vec<Value>>,
}

impl Handler for Receiver {
    async fn handle(&self, request: SimRequest) -> SimResponse {
        self.bodies
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&request.body).unwrap());
        SimResponse::new(StatusCode::OK, "")
    }
}

async fn subscribe(sim: &ZohoSim, token: &str, url: &str, expiry: DateTime<Utc>) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/crm/v8/actions/watch", sim.base_url()))
        .header("authorization", format!("Zoho-oauthtoken {token}"))
        .json(&json!({"watch": [{"channel_id": "1000000068001", "events": ["Leads.all", "Deals.delete"], "channel_expiry": expiry.to_rfc3339(), "token": "verify-me", "notify_url": url}]}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn notification_channels_call_back_with_the_token_until_they_expire() {
    let sim = start(ZohoSimConfig {
        max_channel_ttl: Duration::from_secs(1),
        ..ZohoSimConfig::default()
    })
    .await;
    let token = token(&sim).await;
    let receiver = Arc::new(Receiver::default());
    let running = server::spawn(([127, 0, 0, 1], 0).into(), receiver.clone())
        .await
        .unwrap();
    let url = format!("{}/hook", running.base_url());
    // An expiry a day away is cut to the simulator's maximum, and the answer says so.
    let (status, answer) = subscribe(&sim, &token, &url, Utc::now() + chrono::Duration::days(1)).await;
    assert_eq!(status, StatusCode::CREATED);
    let granted = parse_time(
        answer["watch"][0]["details"]["events"][0]["channel_expiry"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(granted <= Utc::now() + chrono::Duration::seconds(2));
    let id = sim.create("Leads", fields(json!({"Last_Name": "Watched"})));
    sim.seed("Deals", 1, None);
    wait_until("the callback", || sim.deliveries().len() == 1).await;
    let body = receiver.bodies.lock().unwrap()[0].clone();
    assert_eq!(body["token"], "verify-me");
    assert_eq!(body["operation"], "insert");
    assert_eq!(body["module"], "Leads");
    assert_eq!(body["ids"], json!([id]));
    assert_eq!(body["channel_id"], "1000000068001");
    assert!(body["server_time"].as_i64().unwrap() > 0);
    // Expired: changes are no longer sent.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    sim.update("Leads", &id, fields(json!({"Last_Name": "Unwatched"})));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.deliveries().len(), 1, "an expired channel sends nothing");
    let long = "t".repeat(51);
    let refused = reqwest::Client::new()
        .post(format!("{}/crm/v8/actions/watch", sim.base_url()))
        .header("authorization", format!("Zoho-oauthtoken {token}"))
        .json(&json!({"watch": [{"channel_id": "1", "events": ["Leads.all"], "token": long, "notify_url": url}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    running.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_faults_answer_errors_throttles_and_broken_bodies() {
    let sim = start(ZohoSimConfig::default()).await;
    let token = token(&sim).await;
    sim.seed("Leads", 5, None);
    sim.set_faults(Faults {
        server_error: 1.0,
        ..Faults::default()
    });
    assert!(
        get(&sim, &token, "/crm/v8/Leads?fields=Email", None)
            .await
            .status()
            .is_server_error()
    );
    sim.set_faults(Faults {
        rate_limited: 1.0,
        retry_after: Duration::from_secs(3),
        ..Faults::default()
    });
    let throttled = get(&sim, &token, "/crm/v8/Leads?fields=Email", None).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.headers().contains_key("x-ratelimit-reset"));
    assert_eq!(sim.rate_limit_excess(), 0, "an injected 429 is not an excess");
    sim.set_faults(Faults {
        truncated_json: 1.0,
        ..Faults::default()
    });
    let cut = get(&sim, &token, "/crm/v8/Leads?fields=Email", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(serde_json::from_str::<Value>(&cut).is_err());
    sim.set_faults(Faults::none());
    assert_eq!(
        sim.log().count_status(500)
            + sim.log().count_status(502)
            + sim.log().count_status(503)
            + sim.log().count_status(504),
        1
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn churn_keeps_editing_creating_and_deleting_records() {
    let sim = start(ZohoSimConfig::default()).await;
    sim.seed("Leads", 50, Some(Utc::now() - chrono::Duration::hours(1)));
    sim.seed("Deals", 50, Some(Utc::now() - chrono::Duration::hours(1)));
    let churn = sim.spawn_churn(Duration::from_millis(5), 10, vec!["Leads".into(), "Deals".into()], None);
    wait_until("churn to delete and edit", || {
        let recent = sim
            .records("Leads")
            .iter()
            .chain(sim.records("Deals").iter())
            .filter(|r| r.modified_time > Utc::now() - chrono::Duration::minutes(1))
            .count();
        recent > 20 && !sim.deleted("Leads").is_empty() && !sim.deleted("Deals").is_empty()
    })
    .await;
    churn.abort();
    sim.shutdown().await;
}
