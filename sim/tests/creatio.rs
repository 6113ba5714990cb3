//! The Creatio simulator's documented behaviour, driven over real HTTP.

use std::time::Duration;

use chrono::{DateTime, Utc};
use crmsyncd_sim::Faults;
use crmsyncd_sim::creatio::{CreatioSim, CreatioSimConfig, LOGIN_PATH, format_time};
use crmsyncd_sim::oauth::OAuthSimConfig;
use http::StatusCode;
use serde_json::{Map, Value, json};

const PASSWORD: &str = "creatio-test-password";

async fn start() -> CreatioSim {
    CreatioSim::start(CreatioSimConfig::default()).await.unwrap()
}

fn fields(v: Value) -> Map<String, Value> {
    serde_json::from_value(v).unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A logged-in session: the `Cookie` header to send and the `BPMCSRF` value.
struct Session {
    cookie: String,
    csrf: String,
}

async fn login_response(sim: &CreatioSim, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{LOGIN_PATH}", sim.base_url()))
        .header("ForceUseSession", "true")
        .json(&json!({"UserName": "Supervisor", "UserPassword": password}))
        .send()
        .await
        .unwrap()
}

async fn login(sim: &CreatioSim) -> Session {
    let response = login_response(sim, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut pairs = Vec::new();
    let mut csrf = String::new();
    for value in response.headers().get_all("set-cookie") {
        let first = value.to_str().unwrap().split(';').next().unwrap().to_string();
        if let Some(v) = first.strip_prefix("BPMCSRF=") {
            csrf = v.to_string();
        }
        pairs.push(first);
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["Code"], 0);
    Session {
        cookie: pairs.join("; "),
        csrf,
    }
}

fn odata_url(sim: &CreatioSim, resource: &str) -> String {
    format!("{}/0/odata/{resource}", sim.base_url())
}

async fn get(sim: &CreatioSim, session: &Session, resource: &str, query: &[(&str, String)]) -> reqwest::Response {
    reqwest::Client::new()
        .get(odata_url(sim, resource))
        .query(query)
        .header("cookie", &session.cookie)
        .header("BPMCSRF", &session.csrf)
        .send()
        .await
        .unwrap()
}

async fn send(
    sim: &CreatioSim,
    session: &Session,
    method: reqwest::Method,
    resource: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .request(method, odata_url(sim, resource))
        .header("cookie", &session.cookie)
        .header("BPMCSRF", &session.csrf);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

fn ids(page: &Value) -> Vec<String> {
    page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn login_sets_session_and_csrf_cookies_and_a_wrong_password_answers_code_1() {
    let sim = start().await;
    let session = login(&sim).await;
    assert!(session.cookie.contains(".ASPXAUTH="), "{}", session.cookie);
    assert!(session.cookie.contains("BPMLOADER="));
    assert!(!session.csrf.is_empty());
    assert_eq!(sim.logins(), 1);

    let refused = login_response(&sim, "wrong").await;
    assert_eq!(
        refused.status(),
        StatusCode::OK,
        "Creatio refuses a login with 200 and Code 1"
    );
    assert!(refused.headers().get("set-cookie").is_none());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["Code"], 1);
    assert_eq!(sim.refused_logins(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn odata_needs_the_session_cookie_and_the_csrf_header() {
    let sim = start().await;
    sim.seed("Contact", 3, None);
    let session = login(&sim).await;
    assert_eq!(get(&sim, &session, "Contact", &[]).await.status(), StatusCode::OK);

    let no_cookie = reqwest::Client::new()
        .get(odata_url(&sim, "Contact"))
        .header("BPMCSRF", &session.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(no_cookie.status(), StatusCode::UNAUTHORIZED);
    let wrong_csrf = Session {
        cookie: session.cookie.clone(),
        csrf: "nope".into(),
    };
    assert_eq!(
        get(&sim, &wrong_csrf, "Contact", &[]).await.status(),
        StatusCode::FORBIDDEN
    );

    sim.expire_sessions();
    assert_eq!(
        get(&sim, &session, "Contact", &[]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let fresh = login(&sim).await;
    assert_eq!(get(&sim, &fresh, "Contact", &[]).await.status(), StatusCode::OK);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_session_ends_after_its_lifetime() {
    let sim = CreatioSim::start(CreatioSimConfig {
        session_ttl: Duration::from_millis(300),
        ..CreatioSimConfig::default()
    })
    .await
    .unwrap();
    let session = login(&sim).await;
    assert_eq!(get(&sim, &session, "Contact", &[]).await.status(), StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = get(&sim, &session, "Contact", &[]).await.status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the session never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn keyset_pages_walk_an_equal_timestamp_block_once_in_guid_order() {
    let sim = start().await;
    let t = at("2024-03-01T12:00:00.250Z");
    let mut seeded = sim.seed("Contact", 230, Some(t));
    seeded.sort();
    let later = sim.seed("Contact", 20, Some(at("2024-03-01T12:00:01Z")));
    let session = login(&sim).await;
    let mut seen = Vec::new();
    let mut filter = format!("ModifiedOn ge {}", format_time(t));
    loop {
        let page: Value = get(
            &sim,
            &session,
            "Contact",
            &[
                ("$filter", filter.clone()),
                ("$orderby", "ModifiedOn asc,Id asc".into()),
                ("$top", "100".into()),
                ("$select", "Id,ModifiedOn".into()),
            ],
        )
        .await
        .json()
        .await
        .unwrap();
        let rows = page["value"].as_array().unwrap().clone();
        assert!(
            rows.iter().all(|r| r.as_object().unwrap().len() == 2),
            "$select is honoured"
        );
        seen.extend(ids(&page));
        if rows.len() < 100 {
            break;
        }
        let last = rows.last().unwrap();
        let (ts, id) = (last["ModifiedOn"].as_str().unwrap(), last["Id"].as_str().unwrap());
        filter = format!("ModifiedOn gt {ts} or (ModifiedOn eq {ts} and Id gt {id})");
    }
    assert_eq!(seen.len(), 250, "every row once");
    assert_eq!(&seen[..230], &seeded[..], "the block comes in GUID (string) order");
    let mut later_sorted = later.clone();
    later_sorted.sort();
    assert_eq!(&seen[230..], &later_sorted[..]);
    sim.shutdown().await;
}

#[tokio::test]
async fn skip_paging_loses_a_row_when_an_earlier_row_changes_between_pages() {
    let sim = start().await;
    let t = at("2024-03-01T12:00:00Z");
    let mut block = sim.seed("Contact", 20, Some(t));
    block.sort();
    let session = login(&sim).await;
    let query = |skip: usize| {
        vec![
            ("$orderby", "ModifiedOn asc,Id asc".to_string()),
            ("$top", "10".to_string()),
            ("$skip", skip.to_string()),
        ]
    };
    let first: Value = get(&sim, &session, "Contact", &query(0)).await.json().await.unwrap();
    // A user edits a row already read: it moves to the end, and every later row shifts back by one.
    sim.update("Contact", &block[0], fields(json!({"City": "Lviv"})));
    let second: Value = get(&sim, &session, "Contact", &query(10)).await.json().await.unwrap();
    let mut seen = ids(&first);
    seen.extend(ids(&second));
    assert!(
        !seen.contains(&block[10]),
        "the row that shifted into page one is never read"
    );
    assert_eq!(sim.records("Contact").len(), 20);
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_filters_and_unknown_columns_are_400_with_an_odata_error() {
    let sim = start().await;
    let session = login(&sim).await;
    for filter in [
        "ModifiedOn gt '2024-01-01T00:00:00Z'",
        "ModifiedOn gt",
        "Nope eq 'x'",
        "Id eq 'abc'",
    ] {
        let response = get(&sim, &session, "Contact", &[("$filter", filter.to_string())]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{filter}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().len() > 5, "{body}");
    }
    let unknown = get(&sim, &session, "Nothing", &[]).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    sim.shutdown().await;
}

#[tokio::test]
async fn writes_create_update_and_delete_and_creates_are_counted_per_value() {
    let sim = start().await;
    let session = login(&sim).await;
    let created = send(
        &sim,
        &session,
        reqwest::Method::POST,
        "Contact",
        Some(json!({"Name": "Ada", "UsrCrmsyncdKey": "k-1"})),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let body: Value = created.json().await.unwrap();
    let id = body["Id"].as_str().unwrap().to_string();
    assert!(body["@odata.context"].as_str().unwrap().ends_with("#Contact/$entity"));
    assert_eq!(sim.creates_with("Contact", "UsrCrmsyncdKey", "k-1"), 1);

    let found: Value = get(
        &sim,
        &session,
        "Contact",
        &[("$filter", "UsrCrmsyncdKey eq 'k-1'".into())],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(ids(&found), vec![id.clone()]);

    let patched = send(
        &sim,
        &session,
        reqwest::Method::PATCH,
        &format!("Contact({id})"),
        Some(json!({"Name": "Ada L."})),
    )
    .await;
    assert_eq!(patched.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.record("Contact", &id).unwrap().fields["Name"], "Ada L.");

    let bad = send(
        &sim,
        &session,
        reqwest::Method::POST,
        "Contact",
        Some(json!({"NoSuchColumn": 1})),
    )
    .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let deleted = send(&sim, &session, reqwest::Method::DELETE, &format!("Contact({id})"), None).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let again = send(&sim, &session, reqwest::Method::DELETE, &format!("Contact({id})"), None).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert!(sim.record("Contact", &id).is_none(), "a hard delete leaves nothing");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_late_save_appears_at_commit_with_its_start_time() {
    let sim = start().await;
    sim.set_now(at("2024-03-01T12:00:00Z"));
    let mut late = sim.begin();
    let id = late.create("Contact", fields(json!({"Name": "Late"})));
    sim.advance_clock(Duration::from_secs(5));
    sim.seed("Contact", 1, None);
    let session = login(&sim).await;
    let before: Value = get(&sim, &session, "Contact", &[]).await.json().await.unwrap();
    assert!(!ids(&before).contains(&id), "invisible before commit");
    late.commit();
    let record = sim.record("Contact", &id).unwrap();
    assert_eq!(
        record.modified_on,
        at("2024-03-01T12:00:00Z"),
        "stamped before the row saved after it"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn the_rate_limit_window_answers_429_with_retry_after_and_counts_the_excess() {
    let sim = CreatioSim::start(CreatioSimConfig {
        rate_limit: Some((3, Duration::from_secs(1))),
        ..CreatioSimConfig::default()
    })
    .await
    .unwrap();
    let session = login(&sim).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let response = get(&sim, &session, "Contact", &[]).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 429, 429], "the login took the first place");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(sim.rate_limit_excess(), 2);
    assert_eq!(sim.log().max_in_any_window(Duration::from_secs(1)), 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn client_credentials_tokens_authorize_odata_until_they_expire() {
    let sim = CreatioSim::start(CreatioSimConfig {
        oauth: Some(OAuthSimConfig::default()),
        ..CreatioSimConfig::default()
    })
    .await
    .unwrap();
    sim.seed("Contact", 2, None);
    let client = reqwest::Client::new();
    let token: Value = client
        .post(sim.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client-id"),
            ("client_secret", "sim-client-secret"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap().to_string();
    let list = |token: String| {
        let client = client.clone();
        let url = odata_url(&sim, "Contact");
        async move { client.get(url).bearer_auth(token).send().await.unwrap().status() }
    };
    assert_eq!(list(access.clone()).await, StatusCode::OK);
    assert_eq!(list("made-up".into()).await, StatusCode::UNAUTHORIZED);
    sim.token_issuer().unwrap().expire_access_tokens();
    assert_eq!(list(access).await, StatusCode::UNAUTHORIZED);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_truncated_answer_to_a_create_still_created_the_row() {
    let sim = start().await;
    let session = login(&sim).await;
    sim.set_faults(Faults {
        truncated_json: 1.0,
        ..Faults::default()
    });
    let response = send(
        &sim,
        &session,
        reqwest::Method::POST,
        "Contact",
        Some(json!({"Name": "Lost", "UsrCrmsyncdKey": "lost-1"})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let text = response.text().await.unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "the answer is cut: {text}"
    );
    assert_eq!(sim.creates_with("Contact", "UsrCrmsyncdKey", "lost-1"), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn churn_keeps_changing_rows() {
    let sim = start().await;
    sim.seed("Contact", 50, None);
    let before = sim.records("Contact");
    let churn = sim.spawn_churn(Duration::from_millis(10), 5, vec!["Contact".into()], None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let changed = sim.records("Contact") != before;
        if changed {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing changed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    churn.abort();
    sim.shutdown().await;
}

#[tokio::test]
async fn churn_never_moves_a_rows_modified_on_backwards() {
    let sim = start().await;
    // Few rows and many changes: the churn's writes often land on rows an open late save also wrote.
    sim.seed("Contact", 10, None);
    let churn = sim.spawn_churn(Duration::from_millis(10), 10, vec!["Contact".into()], None);
    let mut newest: std::collections::HashMap<String, DateTime<Utc>> = Default::default();
    let until = tokio::time::Instant::now() + Duration::from_millis(3_500);
    while tokio::time::Instant::now() < until {
        for row in sim.records("Contact") {
            let seen = newest.entry(row.id.clone()).or_insert(row.modified_on);
            assert!(
                row.modified_on >= *seen,
                "row {} went from ModifiedOn {seen} back to {}",
                row.id,
                row.modified_on
            );
            *seen = row.modified_on;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    churn.abort();
    sim.shutdown().await;
}
