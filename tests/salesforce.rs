//! Salesforce end to end, on SQLite and PostgreSQL: a sync of thousands of records under churn, late commits,
//! equal-timestamp blocks, dying query locators and deletes (from the delete log and, once it no longer reaches
//! back, by comparing ids); Outbound Messages with every refusal; exactly-once pushes under a fault storm; the
//! org's API allocation under load; and OAuth sessions that end early, rotate and get revoked.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use crmsyncd::metrics::ConnectionState;
use crmsyncd::store::Store;
use crmsyncd::testing::TestDatabase;
use crmsyncd_entities::{credentials, webhook_events};
use crmsyncd_sim::Faults;
use crmsyncd_sim::oauth::OAuthSimConfig;
use crmsyncd_sim::salesforce::{SalesforceSim, SalesforceSimConfig};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};
use support::{CREDENTIALS_KEY, TestApp, get_write, on_each_database, post_write, wait_for, wait_until_ok};

const HOOK_TOKEN: &str = "sf-hook-token";
const API_TOKEN: &str = "api-token-for-tests";
/// A `[[connection]]` table for `sim`. `base_url` leads nowhere on purpose: only the token answer's
/// `instance_url` reaches the org, as with a real My Domain login.
fn salesforce_connection(id: &str, sim: &SalesforceSim, objects: &[&str], refresh_token: &str, extra: &str) -> String {
    let objects: Vec<String> = objects.iter().map(|o| format!("\"{o}\"")).collect();
    format!(
        r#"
[[connection]]
id = "{id}"
provider = "salesforce"
base_url = "http://127.0.0.1:9"
objects = [{objects}]
webhook_token = "{HOOK_TOKEN}"
batch_size = 200
poll_interval = "200ms"
rate_limit = {{ requests = 1000, per = "1s" }}
overlap = "3s"
request_timeout = "2s"
connect_timeout = "1s"
retry_backoff = {{ min = "50ms", max = "1s" }}
oauth = {{ token_url = "{token_url}", client_id = "sf-client-id", client_secret = "sf-client-secret", refresh_token = "{refresh_token}" }}
{extra}
"#,
        objects = objects.join(", "),
        token_url = sim.token_url(),
    )
}

/// Starts the daemon on `db` with the credentials key OAuth needs, the API enabled and `connections`.
async fn spawn(db: &TestDatabase, connections: &str) -> TestApp {
    support::spawn_app_with_database(
        db,
        connections,
        &format!("api_token = \"{API_TOKEN}\""),
        &format!("credentials_key = \"{CREDENTIALS_KEY}\""),
    )
    .await
}

/// The simulator with a one-second getDeleted step, so deletes show within a second rather than a minute.
fn sim_config() -> SalesforceSimConfig {
    SalesforceSimConfig {
        replication_step: Duration::from_secs(1),
        ..SalesforceSimConfig::default()
    }
}

/// Every live record in the org is stored with its current name and SystemModstamp; every stored record the
/// org no longer has live is deleted.
async fn converged(sim: &SalesforceSim, store: &Store, connection: &str, object: &str) -> Result<(), String> {
    let local: HashMap<String, _> = store
        .records(connection, object)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| (r.remote_id.clone(), r))
        .collect();
    let truth = sim.records(object);
    let mut live = HashSet::new();
    for record in &truth {
        if record.deleted_at.is_some() {
            continue;
        }
        live.insert(record.id.clone());
        let Some(row) = local.get(&record.id) else {
            return Err(format!("{object} {} missing locally", record.id));
        };
        if row.deleted || row.data.get("Name") != record.fields.get("Name") || row.remote_updated_at != record.modstamp
        {
            return Err(format!(
                "{object} {}: local deleted={} Name={:?} at {}; org Name={:?} at {}",
                record.id,
                row.deleted,
                row.data.get("Name"),
                row.remote_updated_at,
                record.fields.get("Name"),
                record.modstamp
            ));
        }
    }
    match local.values().find(|r| !live.contains(&r.remote_id) && !r.deleted) {
        Some(r) => Err(format!(
            "{object} {} is gone from the org but live locally",
            r.remote_id
        )),
        None => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_records_converge_under_churn_late_commits_equal_timestamps_and_deletes() {
    on_each_database(|db| async move {
        let sim = SalesforceSim::start(sim_config()).await.unwrap();
        // A bulk load: 1,200 accounts share one SystemModstamp, six batches' worth.
        let block = sim.seed("Account", 1_200, Some(Utc::now() - chrono::Duration::hours(2)));
        let accounts = sim.seed("Account", 800, None);
        sim.seed("Contact", 600, None);
        sim.delete("Account", &accounts[0]);
        let app = spawn(
            &db,
            &salesforce_connection("sf", &sim, &["Account", "Contact"], "sf-refresh-token", ""),
        )
        .await;
        let store = app.handle.store.clone();
        let churn = sim.spawn_churn(
            Duration::from_millis(25),
            5,
            vec!["Account".into(), "Contact".into()],
            Some(app.url(&format!("/webhooks/sf?token={HOOK_TOKEN}"))),
        );
        wait_for("the first pages to land", Duration::from_secs(20), || async {
            store.records("sf", "Account").await.unwrap().len() >= 400
        })
        .await;
        // A long transaction: its rows carry a SystemModstamp older than rows read before it commits (by less
        // than the 3 s overlap the connection re-reads).
        let mut late = sim.begin();
        let late_account = late.create("Account", json!({"Name": "Late Account"}).as_object().unwrap().clone());
        let late_contact = late.create("Contact", json!({"Name": "Late Contact"}).as_object().unwrap().clone());
        // The query locator dies mid-pass: the pass resumes from its last row.
        sim.release_query_locators();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        churn.abort();
        late.commit();
        // Two records of the bulk load that churn left alive.
        let block: HashSet<String> = block.into_iter().collect();
        let mut survivors = sim
            .records("Account")
            .into_iter()
            .filter(|r| r.deleted_at.is_none() && block.contains(&r.id))
            .map(|r| r.id);
        let (logged, purged) = (survivors.next().unwrap(), survivors.next().unwrap());
        // A deletion the delete log reports.
        sim.delete("Account", &logged);
        wait_for("the delete log's deletion to land", Duration::from_secs(20), || async {
            store
                .record("sf", "Account", &logged)
                .await
                .unwrap()
                .is_some_and(|r| r.deleted)
        })
        .await;
        // A deletion the org then purges from its recycle bin: the delete log no longer reaches back to it, and
        // only a comparison of every id finds it.
        sim.delete("Account", &purged);
        sim.purge_deleted_before(Utc::now() + chrono::Duration::seconds(1));
        assert!(sim.records("Account").iter().all(|r| r.id != purged), "purged for good");
        for object in ["Account", "Contact"] {
            wait_until_ok(&format!("{object} to converge"), Duration::from_secs(40), || {
                converged(&sim, &store, "sf", object)
            })
            .await;
        }
        for (object, id) in [("Account", &late_account), ("Contact", &late_contact)] {
            let row = store.record("sf", object, id).await.unwrap();
            assert!(row.is_some_and(|r| !r.deleted), "the late {object} was read");
        }
        for gone in [&logged, &purged] {
            assert!(
                store.record("sf", "Account", gone).await.unwrap().unwrap().deleted,
                "{gone} is deleted locally"
            );
        }
        assert!(
            sim.log().snapshot().iter().any(|r| r.operation == "query_more"),
            "pages came through nextRecordsUrl"
        );
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

/// POSTs `body` as Salesforce does, to `path_and_query` of the daemon.
async fn post_soap(client: &reqwest::Client, app: &TestApp, path_and_query: &str, body: &str) -> (u16, String) {
    let r = client
        .post(app.url(path_and_query))
        .header("content-type", "text/xml; charset=utf-8")
        .header("soapaction", "\"\"")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_messages_are_acknowledged_once_stored_and_refusals_store_nothing() {
    on_each_database(|db| async move {
        let sim = SalesforceSim::start(sim_config()).await.unwrap();
        let ids = sim.seed("Account", 3, None);
        let org = sim.config().organization_id.clone();
        // Polling is slow here: only the Outbound Message can bring the change in time.
        let connection = salesforce_connection(
            "sf",
            &sim,
            &["Account"],
            "sf-refresh-token",
            &format!("organization_id = \"{org}\""),
        )
        .replace("poll_interval = \"200ms\"", "poll_interval = \"1h\"");
        let app = spawn(&db, &connection).await;
        let store = app.handle.store.clone();
        wait_for("the first sync", Duration::from_secs(20), || async {
            store.records("sf", "Account").await.unwrap().len() == 3
        })
        .await;
        let client = reqwest::Client::new();
        let stored = || async {
            webhook_events::Entity::find()
                .count(app.handle.store.db())
                .await
                .unwrap()
        };
        let good = sim.outbound_body(&sim.notifications("Account", &ids[..1], &["Name"]));
        let hook = format!("/webhooks/sf?token={HOOK_TOKEN}");

        assert_eq!(post_soap(&client, &app, "/webhooks/sf", &good).await.0, 401, "no token");
        assert_eq!(
            post_soap(&client, &app, "/webhooks/sf?token=guess", &good).await.0,
            401,
            "wrong token"
        );
        assert_eq!(
            post_soap(&client, &app, &format!("/webhooks/sf?token={HOOK_TOKEN}x"), &good)
                .await
                .0,
            401,
            "a longer token"
        );
        let other_org = good.replace(&org, "00DHu0000000999AAA");
        assert_eq!(post_soap(&client, &app, &hook, &other_org).await.0, 401, "another org");
        assert_eq!(
            post_soap(&client, &app, &hook, r#"{"_id": 1}"#).await.0,
            400,
            "not SOAP"
        );
        assert_eq!(
            post_soap(&client, &app, &hook, &good[..good.len() / 2]).await.0,
            400,
            "truncated"
        );
        let no_id = good.replacen("<Id>", "<Other>", 1).replacen("</Id>", "</Other>", 1);
        assert_eq!(
            post_soap(&client, &app, &hook, &no_id).await.0,
            400,
            "a notification without its id"
        );
        assert_eq!(stored().await, 0, "nothing refused was stored");

        sim.update(
            "Account",
            &ids[0],
            json!({"Name": "Renamed by a user"}).as_object().unwrap().clone(),
        );
        let notifications = sim.notifications("Account", &ids[..1], &["Name"]);
        let delivery = sim.deliver(&app.url(&hook), &notifications).await.unwrap();
        assert_eq!(
            (delivery.status, delivery.acked),
            (200, true),
            "the SOAP ack Salesforce requires"
        );
        assert_eq!(stored().await, 1, "stored before the ack");
        wait_for("the message's record to land", Duration::from_secs(10), || async {
            store.record("sf", "Account", &ids[0]).await.unwrap().unwrap().data["Name"] == "Renamed by a user"
        })
        .await;
        // Salesforce delivers at least once: the same notification again is acknowledged, not stored again.
        let again = sim.deliver(&app.url(&hook), &notifications).await.unwrap();
        assert!(again.acked);
        assert_eq!(stored().await, 1, "a redelivered notification is a duplicate");
        // One old notification and one new one in a message: only the new one is stored.
        let mut mixed = notifications.clone();
        mixed.extend(sim.notifications("Account", &ids[1..2], &["Name"]));
        assert!(sim.deliver(&app.url(&hook), &mixed).await.unwrap().acked);
        assert_eq!(stored().await, 2);

        let metrics = app.handle.metrics.render();
        for outcome in ["accepted", "duplicate", "unauthorized", "malformed"] {
            assert!(
                metrics.contains(&format!("outcome=\"{outcome}\"")),
                "outcome {outcome} counted"
            );
        }
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_create_exactly_once_under_a_fault_storm_and_repeated_calls() {
    on_each_database(|db| async move {
        let sim = SalesforceSim::start(sim_config()).await.unwrap();
        sim.seed("Account", 1, None);
        let app = spawn(
            &db,
            &salesforce_connection("sf", &sim, &["Account"], "sf-refresh-token", ""),
        )
        .await;
        let client = reqwest::Client::new();
        wait_for("the first sync", Duration::from_secs(20), || async {
            app.handle.store.records("sf", "Account").await.unwrap().len() == 1
        })
        .await;
        sim.set_faults(Faults {
            server_error: 0.3,
            rate_limited: 0.1,
            truncated_json: 0.05,
            connection_reset: 0.05,
            slow: 0.03,
            slow_delay: Duration::from_secs(3),
            ..Faults::default()
        });
        let mut ids = Vec::new();
        for i in 0..20 {
            let body = json!({"object": "Account", "properties": {"Name": format!("Pushed {i}")}});
            let (status, answer) = post_write(
                &client,
                &app.url("/v1/connections/sf/writes"),
                API_TOKEN,
                &format!("sf-key-{i}"),
                &body,
            )
            .await;
            assert_eq!(status, 202, "{answer}");
            let (again, repeat) = post_write(
                &client,
                &app.url("/v1/connections/sf/writes"),
                API_TOKEN,
                &format!("sf-key-{i}"),
                &body,
            )
            .await;
            assert_eq!(
                (again, &repeat["id"]),
                (202, &answer["id"]),
                "the same key is the same write"
            );
            ids.push(answer["id"].as_i64().unwrap());
        }
        wait_for("every write to be done", Duration::from_secs(60), || async {
            for id in &ids {
                if get_write(&client, &app, API_TOKEN, *id).await["status"] != "done" {
                    return false;
                }
            }
            true
        })
        .await;
        sim.set_faults(Faults::none());
        let records = sim.records("Account");
        for (i, id) in ids.iter().enumerate() {
            let key = format!("sf-key-{i}");
            assert_eq!(
                sim.creates_for("Account", "Crmsyncd_Key__c", &key),
                1,
                "write {i} created once"
            );
            let write = get_write(&client, &app, API_TOKEN, *id).await;
            let record = records
                .iter()
                .find(|r| r.fields.get("Crmsyncd_Key__c").and_then(Value::as_str) == Some(key.as_str()))
                .expect("the record holds its key");
            assert_eq!(write["remote_id"], record.id, "the write names the record it made");
            assert_eq!(record.fields["Name"], format!("Pushed {i}"));
        }
        assert!(sim.log().count_status(403) + sim.log().count_status(500) + sim.log().count_status(503) > 0);
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_org_api_allocation_is_never_exceeded_under_pull_push_and_webhook_load() {
    on_each_database(|db| async move {
        let (limit, window) = (60u32, Duration::from_secs(4));
        let sim = SalesforceSim::start(SalesforceSimConfig {
            api_limit: (limit, window),
            ..sim_config()
        })
        .await
        .unwrap();
        let ids = sim.seed("Account", 2_000, None);
        // The org's other integrations have spent a quarter of the allocation already.
        let others_at = std::time::Instant::now();
        sim.spend_api_calls(15);
        let app = spawn(
            &db,
            &salesforce_connection(
                "sf",
                &sim,
                &["Account"],
                "sf-refresh-token",
                "api_reserve_percent = 10\napi_usage_window = \"4s\"",
            ),
        )
        .await;
        let client = reqwest::Client::new();
        let hook = app.url(&format!("/webhooks/sf?token={HOOK_TOKEN}"));
        for (i, id) in ids.iter().take(15).enumerate() {
            let body = json!({"object": "Account", "properties": {"Name": format!("Load {i}")}});
            assert_eq!(
                post_write(
                    &client,
                    &app.url("/v1/connections/sf/writes"),
                    API_TOKEN,
                    &format!("load-{i}"),
                    &body
                )
                .await
                .0,
                202
            );
            let notifications = sim.notifications("Account", std::slice::from_ref(id), &["Name"]);
            assert!(sim.deliver(&hook, &notifications).await.unwrap().acked);
        }
        let store = app.handle.store.clone();
        wait_for("the pull to finish", Duration::from_secs(40), || async {
            store.records("sf", "Account").await.unwrap().len() >= 2_015
        })
        .await;
        // Keep polling a while at the budget.
        tokio::time::sleep(window).await;
        assert_eq!(sim.rate_limit_excess(), 0, "no request met a spent allocation");
        let mut api_calls: Vec<_> = sim
            .log()
            .snapshot()
            .into_iter()
            .filter(|r| r.operation != "token")
            .map(|r| r.at)
            .collect();
        api_calls.extend(std::iter::repeat_n(others_at, 15));
        api_calls.sort();
        let busiest = crmsyncd_sim::request_log::max_in_window(&api_calls, window);
        assert!(
            busiest <= limit as usize,
            "{busiest} requests of the daemon and the others in one window (allocation {limit})"
        );
        // The budget (54 of 60 with a 10% reserve) was used, not starved.
        assert!(busiest >= 45, "the busiest window held only {busiest}");
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

fn state(app: &TestApp) -> Option<ConnectionState> {
    app.handle.metrics.current_state("sf")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ends_early_is_refreshed_once_and_the_request_retried() {
    on_each_database(|db| async move {
        let sim = SalesforceSim::start(sim_config()).await.unwrap();
        let ids = sim.seed("Account", 5, None);
        let app = spawn(
            &db,
            &salesforce_connection("sf", &sim, &["Account"], "sf-refresh-token", ""),
        )
        .await;
        let store = app.handle.store.clone();
        wait_for("the first sync", Duration::from_secs(20), || async {
            store.records("sf", "Account").await.unwrap().len() == 5
        })
        .await;
        assert_eq!(sim.oauth().refreshes(), 1);
        // Salesforce ends the session long before the assumed hour (an admin's policy, a password change).
        sim.oauth().expire_access_tokens();
        sim.update(
            "Account",
            &ids[3],
            json!({"Name": "After the session ended"}).as_object().unwrap().clone(),
        );
        wait_for("the change to land", Duration::from_secs(20), || async {
            store.record("sf", "Account", &ids[3]).await.unwrap().unwrap().data["Name"] == "After the session ended"
        })
        .await;
        assert_eq!(sim.oauth().refreshes(), 2, "exactly one refresh");
        assert_eq!(sim.log().count_status(401), 1, "one refused request, then the retry");
        assert_ne!(state(&app), Some(ConnectionState::AuthFailed));
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

fn rotating() -> SalesforceSimConfig {
    SalesforceSimConfig {
        oauth: OAuthSimConfig {
            rotate_refresh_tokens: true,
            ..sim_config().oauth
        },
        ..sim_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_is_kept_in_the_database_and_used_after_a_restart() {
    on_each_database(|db| async move {
        let sim = SalesforceSim::start(rotating()).await.unwrap();
        let ids = sim.seed("Account", 4, None);
        let connection = salesforce_connection("sf", &sim, &["Account"], "sf-refresh-token", "");
        let app = spawn(&db, &connection).await;
        let store = app.handle.store.clone();
        wait_for("the first sync", Duration::from_secs(20), || async {
            store.records("sf", "Account").await.unwrap().len() == 4
        })
        .await;
        let live = sim.oauth().live_refresh_tokens();
        assert_eq!(live.len(), 1);
        assert_ne!(
            live[0], "sf-refresh-token",
            "the configured token was spent by rotation"
        );
        let sealed = credentials::Entity::find_by_id("sf".to_string())
            .one(store.db())
            .await
            .unwrap()
            .expect("the tokens are stored");
        assert!(!sealed.sealed.contains(&live[0]), "stored sealed, not in the clear");
        app.stop().await.unwrap();

        // A restart with the same config (its refresh token long spent) and a session that has ended.
        sim.oauth().expire_access_tokens();
        sim.update(
            "Account",
            &ids[1],
            json!({"Name": "After the restart"}).as_object().unwrap().clone(),
        );
        let app = spawn(&db, &connection).await;
        let store = app.handle.store.clone();
        wait_for(
            "the change to land after the restart",
            Duration::from_secs(20),
            || async {
                store.record("sf", "Account", &ids[1]).await.unwrap().unwrap().data["Name"] == "After the restart"
            },
        )
        .await;
        assert_eq!(
            sim.oauth().refused(),
            0,
            "the spent configured token was never presented"
        );
        assert_eq!(sim.oauth().refreshes(), 2);
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_parks_the_connection_until_resumed_after_a_new_authorisation() {
    on_each_database(|db| async move {
        let sim = SalesforceSim::start(rotating()).await.unwrap();
        let ids = sim.seed("Account", 3, None);
        let app = spawn(
            &db,
            &salesforce_connection("sf", &sim, &["Account"], "sf-refresh-token", ""),
        )
        .await;
        let store = app.handle.store.clone();
        wait_for("the first sync", Duration::from_secs(20), || async {
            store.records("sf", "Account").await.unwrap().len() == 3
        })
        .await;
        // The user removes the app: every refresh token and session dies.
        sim.oauth().revoke_refresh_tokens();
        sim.oauth().expire_access_tokens();
        wait_for("the connection to park", Duration::from_secs(10), || async {
            state(&app) == Some(ConnectionState::AuthFailed)
        })
        .await;
        let refused = sim.oauth().refused();
        assert_eq!(refused, 1);
        // Parked means quiet: no retry loop against the org.
        let requests = sim.log().len();
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(sim.log().len(), requests, "a parked connection sends nothing");
        // Resuming without a new authorisation tries once more and parks again.
        let client = reqwest::Client::new();
        let resume = client
            .post(app.url("/v1/connections/sf/resume"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resume.status(), 202);
        wait_for("one more refusal", Duration::from_secs(10), || async {
            sim.oauth().refused() == refused + 1
        })
        .await;
        wait_for("parked again", Duration::from_secs(10), || async {
            state(&app) == Some(ConnectionState::AuthFailed)
        })
        .await;
        app.stop().await.unwrap();

        // The user authorises the app again; the operator puts the new refresh token in the config.
        let fresh = sim.oauth().authorize();
        sim.update(
            "Account",
            &ids[0],
            json!({"Name": "After re-authorisation"}).as_object().unwrap().clone(),
        );
        let app = spawn(&db, &salesforce_connection("sf", &sim, &["Account"], &fresh, "")).await;
        let store = app.handle.store.clone();
        wait_for("the change to land", Duration::from_secs(20), || async {
            store.record("sf", "Account", &ids[0]).await.unwrap().unwrap().data["Name"] == "After re-authorisation"
        })
        .await;
        assert_ne!(state(&app), Some(ConnectionState::AuthFailed));
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}
