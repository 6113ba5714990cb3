//! Creatio end to end: keyset pulls over equal-timestamp blocks and late saves under churn, sessions that expire
//! mid-sync, deletes found by id sweeps, webhooks refused (Creatio sends none), pushes exactly once under a fault
//! storm, the quota kept under load, and OAuth 2.0 client credentials.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use crmsyncd::Config;
use crmsyncd::metrics::ConnectionState;
use crmsyncd::store::Store;
use crmsyncd::testing::TestDatabase;
use crmsyncd_entities::webhook_events;
use crmsyncd_sim::Faults;
use crmsyncd_sim::creatio::{CreatioSim, CreatioSimConfig, format_time};
use crmsyncd_sim::oauth::OAuthSimConfig;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Map, Value, json};
use support::{TestApp, get_write, on_each_database, post_write, spawn_app, wait_for, wait_until_ok};

const API_TOKEN: &str = "api-token-for-tests";
/// 32 bytes, base64: seals OAuth tokens in the database.
const CREDENTIALS_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A `[[connection]]` table for a Creatio simulator with forms authentication.
fn creatio_connection(id: &str, base_url: &str, objects: &[&str], extra: &str) -> String {
    let objects: Vec<String> = objects.iter().map(|o| format!("\"{o}\"")).collect();
    format!(
        r#"
[[connection]]
id = "{id}"
provider = "creatio"
base_url = "{base_url}"
username = "Supervisor"
password = "creatio-test-password"
objects = [{objects}]
poll_interval = "200ms"
overlap = "5s"
request_timeout = "2s"
connect_timeout = "1s"
retry_backoff = {{ min = "50ms", max = "1s" }}
{extra}
"#,
        objects = objects.join(", ")
    )
}

fn fields(v: Value) -> Map<String, Value> {
    serde_json::from_value(v).unwrap()
}

/// Whether the local copy of `entity` is exactly the simulator's truth: every row present with the same columns
/// and ModifiedOn and not deleted, and every local row the CRM no longer has marked deleted.
async fn converged(sim: &CreatioSim, store: &Store, connection: &str, entity: &str) -> Result<(), String> {
    let local: HashMap<String, _> = store
        .records(connection, entity)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| (r.remote_id.clone(), r))
        .collect();
    let truth = sim.records(entity);
    for row in &truth {
        let Some(mine) = local.get(&row.id) else {
            return Err(format!(
                "{entity} {} missing locally ({} local, {} in Creatio)",
                row.id,
                local.len(),
                truth.len()
            ));
        };
        if mine.deleted {
            return Err(format!("{entity} {} deleted locally but live in Creatio", row.id));
        }
        if mine.data.get("ModifiedOn").and_then(Value::as_str) != Some(format_time(row.modified_on).as_str()) {
            return Err(format!(
                "{entity} {}: local ModifiedOn {:?}, Creatio {}",
                row.id,
                mine.data.get("ModifiedOn"),
                format_time(row.modified_on)
            ));
        }
        if let Some((column, value)) = row.fields.iter().find(|(k, v)| mine.data.get(*k) != Some(*v)) {
            return Err(format!(
                "{entity} {}: {column} is {:?} locally, {value} in Creatio",
                row.id,
                mine.data.get(column)
            ));
        }
    }
    let live: HashSet<&str> = truth.iter().map(|r| r.id.as_str()).collect();
    match local
        .values()
        .find(|r| !live.contains(r.remote_id.as_str()) && !r.deleted)
    {
        Some(r) => Err(format!("{entity} {} gone from Creatio but live locally", r.remote_id)),
        None => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_converges_under_churn_with_equal_timestamp_blocks_expiring_sessions_late_saves_and_deletes() {
    on_each_database(|db| async move {
        let sim = CreatioSim::start(CreatioSimConfig {
            session_ttl: Duration::from_millis(600),
            ..CreatioSimConfig::default()
        })
        .await
        .unwrap();
        // A bulk import: 1,500 rows in one millisecond, walked in pages of 200.
        let block = sim.seed("Contact", 1_500, Some(Utc::now() - chrono::Duration::hours(1)));
        let recent = sim.seed("Contact", 1_000, None);
        sim.seed("Account", 500, None);
        let app = spawn_app(
            &db,
            &creatio_connection(
                "creatio",
                &sim.base_url(),
                &["Contact", "Account"],
                "page_size = 200\nsweep_interval = \"1s\"\nrate_limit = { requests = 1000, per = \"1s\" }",
            ),
            "",
        )
        .await;
        let store = app.handle.store.clone();
        let churn = sim.spawn_churn(
            Duration::from_millis(25),
            4,
            vec!["Contact".into(), "Account".into()],
            None,
        );
        wait_for("the first pass to be under way", Duration::from_secs(20), || async {
            store.records("creatio", "Contact").await.unwrap().len() >= 1_000
        })
        .await;
        // A save that starts now and commits only after the daemon has read rows saved later: its ModifiedOn is
        // already behind the cursor when it becomes visible.
        let mut late = sim.begin();
        let late_id = late.create(
            "Contact",
            fields(json!({"Name": "Late Save", "Email": "late@example.com"})),
        );
        let started = late.started_at();
        wait_for(
            "the cursor to pass the late save's ModifiedOn",
            Duration::from_secs(20),
            || async {
                store
                    .cursor("creatio", "Contact")
                    .await
                    .unwrap()
                    .is_some_and(|c| c.ts > started)
            },
        )
        .await;
        late.commit();
        sim.delete("Contact", &block[0]);
        sim.delete("Contact", &recent[0]);
        wait_for("sessions to expire and be renewed", Duration::from_secs(20), || async {
            sim.logins() >= 3
        })
        .await;
        churn.abort();
        for entity in ["Contact", "Account"] {
            wait_until_ok(&format!("{entity} to converge"), Duration::from_secs(40), || {
                converged(&sim, &store, "creatio", entity)
            })
            .await;
        }
        let late_row = store
            .record("creatio", "Contact", &late_id)
            .await
            .unwrap()
            .expect("the late save was read");
        assert_eq!(late_row.data["Name"], "Late Save");
        for gone in [&block[0], &recent[0]] {
            assert!(
                store.record("creatio", "Contact", gone).await.unwrap().unwrap().deleted,
                "{gone} is deleted"
            );
        }
        let list_pages = sim.log().snapshot().iter().filter(|r| r.operation == "list").count();
        assert!(list_pages >= 3_000 / 200, "paged, not read whole: {list_pages} pages");
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_webhook_is_refused_with_401_because_creatio_sends_none_and_nothing_is_stored() {
    on_each_database(|db| async move {
        let sim = CreatioSim::start(CreatioSimConfig::default()).await.unwrap();
        let app = spawn_app(
            &db,
            &creatio_connection("creatio", &sim.base_url(), &["Contact"], ""),
            "",
        )
        .await;
        let client = reqwest::Client::new();
        let url = app.url("/webhooks/creatio");
        for body in [
            r#"{"Id":"410006e1-ca4e-4502-a9ec-e54d922d2c00","EntityName":"Contact"}"#,
            "[]",
            "not json",
            "",
        ] {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{body:?}");
            let answer: Value = r.json().await.unwrap();
            assert!(
                answer.to_string().contains("Creatio sends no webhooks; polling only"),
                "{answer}"
            );
        }
        assert_eq!(client.get(&url).send().await.unwrap().status(), 405);
        assert_eq!(
            client
                .post(app.url("/webhooks/nope"))
                .body("{}")
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        let stored = webhook_events::Entity::find()
            .count(app.handle.store.db())
            .await
            .unwrap();
        assert_eq!(stored, 0, "nothing refused was stored");
        let metrics = app.handle.metrics.render();
        assert!(
            metrics.contains("crmsyncd_webhooks_total{connection=\"creatio\",outcome=\"unauthorized\"} 4"),
            "{metrics}"
        );
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_create_exactly_once_under_a_fault_storm_and_repeated_calls() {
    on_each_database(|db| async move {
        let sim = CreatioSim::start(CreatioSimConfig::default()).await.unwrap();
        let existing = sim.create(
            "Contact",
            fields(json!({"Name": "Existing", "Email": "known@example.com"})),
        );
        // A short backoff: the storm fails about half of all requests, and this test is about outcomes, not waits.
        let connection = creatio_connection(
            "creatio",
            &sim.base_url(),
            &["Contact"],
            "rate_limit = { requests = 1000, per = \"1s\" }",
        )
        .replace("max = \"1s\"", "max = \"250ms\"")
        // Every injected 429 pauses the connection for a whole second (Retry-After counts whole seconds): poll
        // less, so that the storm's pauses fall mostly on the pushes under test.
        .replace("poll_interval = \"200ms\"", "poll_interval = \"2s\"");
        let app = spawn_app(&db, &connection, &format!("api_token = \"{API_TOKEN}\"")).await;
        let client = reqwest::Client::new();
        sim.set_faults(Faults {
            server_error: 0.3,
            rate_limited: 0.1,
            retry_after: Duration::from_millis(200),
            truncated_json: 0.05,
            connection_reset: 0.05,
            ..Faults::default()
        });
        let mut ids = Vec::new();
        for i in 0..8 {
            let body = json!({"object": "Contact", "properties": {"Name": format!("Pushed {i}"), "JobTitle": "Buyer"}});
            let (status, answer) = post_write(
                &client,
                &app.url("/v1/connections/creatio/writes"),
                API_TOKEN,
                &format!("creatio-key-{i}"),
                &body,
            )
            .await;
            assert_eq!(status, 202, "{answer}");
            // The same call again: the same write, not a second one.
            let (again, answer2) = post_write(
                &client,
                &app.url("/v1/connections/creatio/writes"),
                API_TOKEN,
                &format!("creatio-key-{i}"),
                &body,
            )
            .await;
            assert_eq!(again, 202);
            assert_eq!(answer["id"], answer2["id"]);
            ids.push(answer["id"].as_i64().unwrap());
        }
        // A write that matches a row already in Creatio by Email updates it.
        let matched =
            json!({"object": "Contact", "match": {"Email": "known@example.com"}, "properties": {"JobTitle": "CFO"}});
        let (status, answer) = post_write(
            &client,
            &app.url("/v1/connections/creatio/writes"),
            API_TOKEN,
            "creatio-match",
            &matched,
        )
        .await;
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["id"].as_i64().unwrap());
        // A column Creatio does not have: dead-lettered with Creatio's message, never retried forever.
        let bad = json!({"object": "Contact", "properties": {"NoSuchColumn": "x"}});
        let (_, answer) = post_write(
            &client,
            &app.url("/v1/connections/creatio/writes"),
            API_TOKEN,
            "creatio-bad",
            &bad,
        )
        .await;
        let bad_id = answer["id"].as_i64().unwrap();

        wait_for("every write to be done", Duration::from_secs(60), || async {
            let mut done = 0;
            for id in &ids {
                if get_write(&client, &app, API_TOKEN, *id).await["status"] == "done" {
                    done += 1;
                }
            }
            done == ids.len()
        })
        .await;
        wait_for("the bad write to be dead", Duration::from_secs(30), || async {
            get_write(&client, &app, API_TOKEN, bad_id).await["status"] == "dead"
        })
        .await;
        sim.set_faults(Faults::none());
        let dead = get_write(&client, &app, API_TOKEN, bad_id).await;
        assert!(
            dead["last_error"].as_str().unwrap().contains("does not exist on type"),
            "{dead}"
        );
        for i in 0..8 {
            let key = format!("creatio-key-{i}");
            assert_eq!(
                sim.creates_with("Contact", "UsrCrmsyncdKey", &key),
                1,
                "write {i} created once"
            );
            let row = sim
                .records("Contact")
                .into_iter()
                .find(|r| r.fields.get("UsrCrmsyncdKey") == Some(&json!(key)));
            assert_eq!(row.unwrap().fields["Name"], format!("Pushed {i}"));
        }
        assert_eq!(
            sim.creates_with("Contact", "UsrCrmsyncdKey", "creatio-match"),
            0,
            "a match is updated, not created"
        );
        let updated = sim.record("Contact", &existing).unwrap();
        assert_eq!(updated.fields["JobTitle"], "CFO");
        assert_eq!(updated.fields["UsrCrmsyncdKey"], "creatio-match");
        assert_eq!(sim.creates_with("Contact", "NoSuchColumn", "x"), 0);
        let faults_seen = sim
            .log()
            .snapshot()
            .iter()
            .filter(|r| r.status >= 500 || r.status == 0)
            .count();
        assert!(faults_seen > 0, "the storm hit");
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_is_never_exceeded_under_pull_sweep_login_and_push_load() {
    on_each_database(|db| async move {
        let limit = 10;
        let sim = CreatioSim::start(CreatioSimConfig {
            rate_limit: Some((limit, Duration::from_secs(1))),
            session_ttl: Duration::from_secs(2),
            ..CreatioSimConfig::default()
        })
        .await
        .unwrap();
        sim.seed("Contact", 1_000, None);
        let app = spawn_app(
            &db,
            &creatio_connection(
                "creatio",
                &sim.base_url(),
                &["Contact"],
                "page_size = 50\nsweep_interval = \"1s\"\nrate_limit = { requests = 10, per = \"1s\" }",
            ),
            &format!("api_token = \"{API_TOKEN}\""),
        )
        .await;
        let client = reqwest::Client::new();
        // Pushes compete with the pull, the sweeps and the logins for the same budget.
        let mut ids = Vec::new();
        for i in 0..12 {
            let body = json!({"object": "Contact", "properties": {"Name": format!("Quota {i}")}});
            let (status, answer) = post_write(
                &client,
                &app.url("/v1/connections/creatio/writes"),
                API_TOKEN,
                &format!("quota-{i}"),
                &body,
            )
            .await;
            assert_eq!(status, 202, "{answer}");
            ids.push(answer["id"].as_i64().unwrap());
        }
        let store = app.handle.store.clone();
        wait_for("the pull and the pushes to finish", Duration::from_secs(60), || async {
            let mut done = 0;
            for id in &ids {
                if get_write(&client, &app, API_TOKEN, *id).await["status"] == "done" {
                    done += 1;
                }
            }
            done == ids.len() && store.records("creatio", "Contact").await.unwrap().len() >= 1_012
        })
        .await;
        assert_eq!(
            sim.rate_limit_excess(),
            0,
            "the simulator refused no request for the rate limit"
        );
        let busiest = sim.log().max_in_any_window(Duration::from_secs(1));
        assert!(
            busiest <= limit as usize,
            "{busiest} requests in one 1 s window (limit {limit})"
        );
        assert!(
            busiest >= limit as usize * 3 / 4,
            "the budget was used, not starved: {busiest}"
        );
        assert!(sim.logins() >= 2, "sessions expired and were renewed within the budget");
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

/// Starts the daemon with one OAuth connection (which needs `database.credentials_key`, so not `spawn_app`).
async fn spawn_oauth_app(db: &TestDatabase, sim: &CreatioSim, client_secret: &str) -> TestApp {
    let port = support::free_port();
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:{port}"

[database]
url = "{url}"
credentials_key = "{CREDENTIALS_KEY}"

[[connection]]
id = "creatio"
provider = "creatio"
base_url = "{base}"
objects = ["Contact"]
oauth = {{ token_url = "{token_url}", client_id = "sim-client-id", client_secret = "{client_secret}", refresh_before = "1s" }}
poll_interval = "200ms"
overlap = "5s"
request_timeout = "2s"
retry_backoff = {{ min = "50ms", max = "1s" }}
rate_limit = {{ requests = 1000, per = "1s" }}
"#,
        url = db.url,
        base = sim.base_url(),
        token_url = sim.token_url(),
    );
    let config = Config::parse(&text, Path::new("test.toml"), &|_| None).unwrap_or_else(|e| panic!("{e}"));
    support::start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_client_credentials_tokens_are_fetched_renewed_when_refused_and_a_wrong_secret_parks_the_connection() {
    on_each_database(|db| async move {
        let sim = CreatioSim::start(CreatioSimConfig {
            oauth: Some(OAuthSimConfig {
                access_ttl: Duration::from_secs(600),
                ..OAuthSimConfig::default()
            }),
            ..CreatioSimConfig::default()
        })
        .await
        .unwrap();
        let ids = sim.seed("Contact", 300, None);
        let app = spawn_oauth_app(&db, &sim, "sim-client-secret").await;
        let store = app.handle.store.clone();
        wait_for("the first sync", Duration::from_secs(20), || async {
            store.records("creatio", "Contact").await.unwrap().len() == 300
        })
        .await;
        let issuer = sim.token_issuer().unwrap();
        assert_eq!(issuer.refreshes(), 1, "one token serves every request while it lives");
        assert_eq!(sim.logins(), 0, "no forms login with OAuth");

        // The Identity Service forgets the token early: the next request is refused, a new token is fetched and
        // the request repeated.
        issuer.expire_access_tokens();
        sim.update("Contact", &ids[7], fields(json!({"JobTitle": "After the refusal"})));
        wait_for("the change made after the refusal", Duration::from_secs(20), || async {
            store.record("creatio", "Contact", &ids[7]).await.unwrap().unwrap().data["JobTitle"] == "After the refusal"
        })
        .await;
        assert!(issuer.refreshes() >= 2);
        let metrics = app.handle.metrics.render();
        assert!(
            metrics.contains("crmsyncd_oauth_refreshes_total{connection=\"creatio\",outcome=\"ok\"}"),
            "{metrics}"
        );
        app.stop().await.unwrap();

        // A wrong client secret: the Identity Service refuses it, the connection parks instead of hammering it.
        let wrong = TestDatabase::sqlite().await;
        let parked = spawn_oauth_app(&wrong, &sim, "not-the-secret").await;
        let handle = parked.handle.clone();
        wait_for("auth_failed", Duration::from_secs(20), || async {
            handle.metrics.current_state("creatio") == Some(ConnectionState::AuthFailed)
        })
        .await;
        let tokens_asked = sim
            .log()
            .snapshot()
            .iter()
            .filter(|r| r.operation == "token" && r.status == 401)
            .count();
        assert_eq!(tokens_asked, 1, "a refused client is asked about once, not in a loop");
        parked.stop().await.unwrap();
        wrong.cleanup().await;
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_parks_the_connection_after_one_refused_login() {
    on_each_database(|db| async move {
        let sim = CreatioSim::start(CreatioSimConfig::default()).await.unwrap();
        sim.seed("Contact", 5, None);
        sim.set_password("changed-by-an-admin");
        let app = spawn_app(
            &db,
            &creatio_connection("creatio", &sim.base_url(), &["Contact"], ""),
            "",
        )
        .await;
        let handle = app.handle.clone();
        wait_for("auth_failed", Duration::from_secs(20), || async {
            handle.metrics.current_state("creatio") == Some(ConnectionState::AuthFailed)
        })
        .await;
        // Retrying a wrong password would lock the Creatio user out: it is tried once, then the connection waits.
        assert_eq!(sim.refused_logins(), 1);
        assert_eq!(handle.store.records("creatio", "Contact").await.unwrap().len(), 0);
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}
