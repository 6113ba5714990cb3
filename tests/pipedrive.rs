//! Pipedrive end to end, on SQLite and PostgreSQL: pulls that converge through equal-timestamp blocks, late
//! commits, churn, merges and deletes; the Basic-authenticated webhook and every refusal; pushes applied once
//! under faults that lose answers while the search index lags; and the 2-second windows kept under load.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use crmsyncd::metrics::ConnectionState;
use crmsyncd::store::Store;
use crmsyncd_entities::webhook_events;
use crmsyncd_sim::Faults;
use crmsyncd_sim::pipedrive::{KEY_FIELD, PipedriveSim, PipedriveSimConfig, WebhookAction, fields};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::json;
use support::{TestApp, get_write, on_each_database, post_write, spawn_app, wait_for, wait_until_ok};

const API_TOKEN: &str = "api-token-for-tests";
const HOOK_USER: &str = "pd-hook-user";
const HOOK_PASSWORD: &str = "pd-hook-password";

/// A `[[connection]]` table for a Pipedrive simulator, with webhooks and pushes configured; `extra` lines
/// are appended (a key given twice is a TOML error, so replace defaults with `str::replace`).
fn pipedrive_connection(id: &str, base_url: &str, objects: &[&str], extra: &str) -> String {
    let objects: Vec<String> = objects.iter().map(|o| format!("\"{o}\"")).collect();
    format!(
        r#"
[[connection]]
id = "{id}"
provider = "pipedrive"
base_url = "{base_url}"
api_token = "pd-test-token"
objects = [{objects}]
webhook_user = "{HOOK_USER}"
webhook_password = "{HOOK_PASSWORD}"
push_key_field = "{KEY_FIELD}"
poll_interval = "200ms"
rate_limit = {{ requests = 1000, per = "1s" }}
search_rate_limit = {{ requests = 1000, per = "1s" }}
overlap = "3s"
sweep_interval = "1s"
request_timeout = "2s"
connect_timeout = "1s"
retry_backoff = {{ min = "50ms", max = "1s" }}
{extra}
"#,
        objects = objects.join(", ")
    )
}

fn api_line() -> String {
    format!("api_token = \"{API_TOKEN}\"")
}

/// Ok when the local table holds exactly the simulator's truth for `object`: every live record with the same
/// data and `update_time`, every deleted one absent or marked deleted, and nothing live locally that is not live
/// in the CRM.
async fn converged(sim: &PipedriveSim, store: &Store, connection: &str, object: &str) -> Result<(), String> {
    let local: HashMap<String, _> = store
        .records(connection, object)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| (r.remote_id.clone(), r))
        .collect();
    let truth = sim.records(object);
    for record in &truth {
        let id = record.id.to_string();
        match local.get(&id) {
            None if record.deleted => {}
            None => return Err(format!("{object} {id} missing locally")),
            Some(row) if record.deleted => {
                if !row.deleted {
                    return Err(format!("{object} {id} deleted in Pipedrive but live locally"));
                }
            }
            Some(row) => {
                if row.deleted {
                    return Err(format!("{object} {id} live in Pipedrive but deleted locally"));
                }
                if row.remote_updated_at != record.update_time || row.data != record.data {
                    return Err(format!(
                        "{object} {id}: local at {} {}; Pipedrive at {} {} (visible: {})",
                        row.remote_updated_at, row.data, record.update_time, record.data, record.visible
                    ));
                }
            }
        }
    }
    let known: std::collections::HashSet<String> = truth.iter().map(|r| r.id.to_string()).collect();
    match local.values().find(|r| !r.deleted && !known.contains(&r.remote_id)) {
        Some(r) => Err(format!(
            "{object} {} live locally but unknown to Pipedrive",
            r.remote_id
        )),
        None => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_converges_through_equal_timestamp_blocks_late_commits_churn_merges_and_deletes() {
    on_each_database(|db| async move {
        let sim = PipedriveSim::start(PipedriveSimConfig {
            index_lag: Duration::from_millis(500),
            late_commit: Duration::from_millis(700),
            ..PipedriveSimConfig::default()
        })
        .await
        .unwrap();
        // A bulk import: 1,200 persons on one second, more than two pages of 500.
        let block_at = Utc::now() - chrono::Duration::hours(1);
        sim.seed("persons", 1_200, Some(block_at));
        sim.seed("persons", 1_000, None);
        sim.seed("organizations", 400, None);
        sim.seed("deals", 600, None);
        let objects = ["persons", "organizations", "deals"];
        let app = spawn_app(&db, &pipedrive_connection("pd", &sim.base_url(), &objects, ""), "").await;
        let store = app.handle.store.clone();
        // Churn from the start, concurrent with the first pass, with the webhooks Pipedrive would send (merges
        // among them).
        let churn = sim.spawn_churn(
            Duration::from_millis(25),
            5,
            objects.iter().map(|o| o.to_string()).collect(),
            Some(app.url("/webhooks/pd")),
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        churn.abort();
        // A delete that no webhook reports (only the sweep can find it), of a person stored locally, and a late
        // commit stamped before a write that is visible first (only the overlap can find it).
        let stored_live = |object: &'static str| {
            let store = store.clone();
            let sim = sim.clone();
            async move {
                let local = store.records("pd", object).await.unwrap();
                let live: std::collections::HashSet<u64> = sim
                    .records(object)
                    .into_iter()
                    .filter(|r| !r.deleted && r.visible)
                    .map(|r| r.id)
                    .collect();
                local
                    .into_iter()
                    .filter(|r| !r.deleted)
                    .filter_map(|r| r.remote_id.parse::<u64>().ok())
                    .filter(|id| live.contains(id))
                    .collect::<Vec<u64>>()
            }
        };
        let person = stored_live("persons").await[0];
        sim.delete("persons", person);
        let deals = stored_live("deals").await;
        sim.update_late(
            "deals",
            deals[0],
            fields(json!({"title": "Committed late"})),
            // Long after passes have read the next write and moved the cursor past this one's second.
            Duration::from_secs(5),
        );
        sim.advance_clock(Duration::from_secs(2));
        sim.update("deals", deals[1], fields(json!({"title": "Committed on time"})));
        for object in objects {
            wait_until_ok(&format!("{object} to converge"), Duration::from_secs(30), || {
                converged(&sim, &store, "pd", object)
            })
            .await;
        }
        let late = store
            .record("pd", "deals", &deals[0].to_string())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(late.data["title"], "Committed late", "the late commit was read");
        let swept = store
            .record("pd", "persons", &person.to_string())
            .await
            .unwrap()
            .unwrap();
        assert!(swept.deleted, "the unreported delete was found by the sweep");
        let merged = sim
            .records("persons")
            .into_iter()
            .chain(sim.records("deals"))
            .filter(|r| r.merged_into.is_some())
            .count();
        eprintln!("converged with {merged} merged records");
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

/// Counts the stored webhook events.
async fn stored_events(app: &TestApp) -> u64 {
    webhook_events::Entity::find()
        .count(app.handle.store.db())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_webhook_answer_matches_the_table_and_refusals_store_nothing() {
    on_each_database(|db| async move {
        let sim = PipedriveSim::start(PipedriveSimConfig::default()).await.unwrap();
        // Stamped a minute ago: a pass leaves the current second to the next one, and this connection polls
        // only hourly.
        let ids = sim.seed("persons", 4, Some(Utc::now() - chrono::Duration::minutes(1)));
        let quiet = |id: &str, extra: &str| {
            pipedrive_connection(id, &sim.base_url(), &["persons"], extra)
                .replace("poll_interval = \"200ms\"", "poll_interval = \"1h\"")
                .replace("sweep_interval = \"1s\"", "sweep_interval = \"1h\"")
        };
        // A second connection with no webhook credentials refuses every webhook.
        let unhooked = quiet("pd-unhooked", "")
            .replace(&format!("webhook_user = \"{HOOK_USER}\"\n"), "")
            .replace(&format!("webhook_password = \"{HOOK_PASSWORD}\"\n"), "");
        let app = spawn_app(&db, &format!("{}{unhooked}", quiet("pd", "")), "").await;
        let store = app.handle.store.clone();
        wait_for("the first sync", Duration::from_secs(20), || async {
            store.records("pd", "persons").await.unwrap().len() == 4
        })
        .await;
        let url = app.url("/webhooks/pd");
        let client = reqwest::Client::new();
        sim.update("persons", ids[0], fields(json!({"name": "Renamed by webhook"})));
        let change = sim.event(WebhookAction::Change, "persons", ids[0]);
        let body = serde_json::to_vec(&change).unwrap();
        let post = |authorization: Option<String>, body: Vec<u8>| {
            let mut request = client.post(&url).header("content-type", "application/json").body(body);
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            request.send()
        };
        let basic = |user: &str, password: &str| {
            use base64::Engine;
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ))
        };

        // No credentials, wrong password, wrong user, another scheme: 401.
        assert_eq!(post(None, body.clone()).await.unwrap().status(), 401);
        assert_eq!(
            post(basic(HOOK_USER, "wrong"), body.clone()).await.unwrap().status(),
            401
        );
        assert_eq!(
            post(basic("someone", HOOK_PASSWORD), body.clone())
                .await
                .unwrap()
                .status(),
            401
        );
        let bearer = Some(format!("Bearer {HOOK_PASSWORD}"));
        assert_eq!(post(bearer, body.clone()).await.unwrap().status(), 401);
        // A connection without webhook credentials: 401 even with Pipedrive's own.
        let unhooked_status = sim
            .send_webhook(&app.url("/webhooks/pd-unhooked"), &change)
            .await
            .unwrap();
        assert_eq!(unhooked_status, 401);
        // Unknown connection: 404; wrong method: 405.
        assert_eq!(
            sim.send_webhook(&app.url("/webhooks/nope"), &change).await.unwrap(),
            404
        );
        assert_eq!(client.get(&url).send().await.unwrap().status(), 405);
        // Verified but malformed: 400 (not JSON, a v1 body, an action v2 does not send, no event id).
        let good_auth = basic(HOOK_USER, HOOK_PASSWORD);
        let mut v1 = change.clone();
        v1["meta"]["version"] = json!("1.0");
        let mut merged_action = change.clone();
        merged_action["meta"]["action"] = json!("merged");
        let mut no_id = change.clone();
        no_id["meta"].as_object_mut().unwrap().remove("id");
        for malformed in [
            b"not json".to_vec(),
            serde_json::to_vec(&v1).unwrap(),
            serde_json::to_vec(&merged_action).unwrap(),
            serde_json::to_vec(&no_id).unwrap(),
        ] {
            assert_eq!(post(good_auth.clone(), malformed).await.unwrap().status(), 400);
        }
        assert_eq!(stored_events(&app).await, 0, "nothing refused was stored");

        // Accepted: stored before the 200, then applied.
        assert_eq!(sim.send_webhook(&url, &change).await.unwrap(), 200);
        assert_eq!(stored_events(&app).await, 1, "the event was committed before the 200");
        wait_for("the change to be read", Duration::from_secs(10), || async {
            store
                .record("pd", "persons", &ids[0].to_string())
                .await
                .unwrap()
                .unwrap()
                .data["name"]
                == "Renamed by webhook"
        })
        .await;
        // Pipedrive's retry of the same event (same meta.id, next attempt): 200, not stored again.
        let mut retry = change.clone();
        retry["meta"]["attempt"] = json!(2);
        assert_eq!(sim.send_webhook(&url, &retry).await.unwrap(), 200);
        assert_eq!(stored_events(&app).await, 1, "a redelivered event is not stored twice");

        // A delete, and a merge: the merged record is deleted and the survivor re-read.
        sim.delete("persons", ids[1]);
        let delete = sim.event(WebhookAction::Delete, "persons", ids[1]);
        assert_eq!(sim.send_webhook(&url, &delete).await.unwrap(), 200);
        sim.advance_clock(Duration::from_secs(2));
        sim.merge("persons", ids[2], ids[3]);
        let merge = sim.event(WebhookAction::Delete, "persons", ids[2]);
        assert!(merge["meta"]["merged_to_id"].is_string());
        assert_eq!(sim.send_webhook(&url, &merge).await.unwrap(), 200);
        let survivor_at = sim
            .records("persons")
            .into_iter()
            .find(|r| r.id == ids[3])
            .unwrap()
            .update_time;
        wait_for(
            "the delete and the merge to be applied",
            Duration::from_secs(10),
            || async {
                let record = |id: u64| {
                    let store = store.clone();
                    async move { store.record("pd", "persons", &id.to_string()).await.unwrap().unwrap() }
                };
                record(ids[1]).await.deleted
                    && record(ids[2]).await.deleted
                    && record(ids[3]).await.remote_updated_at == survivor_at
            },
        )
        .await;
        assert!(
            !store
                .record("pd", "persons", &ids[3].to_string())
                .await
                .unwrap()
                .unwrap()
                .deleted
        );

        let metrics = client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for outcome in [
            "accepted",
            "duplicate",
            "unauthorized",
            "malformed",
            "unknown_connection",
        ] {
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
async fn pushes_create_exactly_once_under_a_fault_storm_lost_answers_and_a_lagging_index() {
    on_each_database(|db| async move {
        let sim = PipedriveSim::start(PipedriveSimConfig {
            // Longer than a retry takes: a retry never finds an earlier attempt's record by search.
            index_lag: Duration::from_secs(3),
            ..PipedriveSimConfig::default()
        })
        .await
        .unwrap();
        sim.seed("persons", 3, Some(Utc::now() - chrono::Duration::hours(1)));
        let app = spawn_app(
            &db,
            // Only the writes call Pipedrive: no polls, no sweeps.
            &pipedrive_connection("pd", &sim.base_url(), &["persons", "deals"], "")
                .replace("poll_interval = \"200ms\"", "poll_interval = \"1h\"")
                .replace("retry_backoff = { min = \"50ms\", max = \"1s\" }", "retry_backoff = { min = \"20ms\", max = \"200ms\" }")
                .replace("sweep_interval = \"1s\"", "sweep_interval = \"1h\""),
            &api_line(),
        )
        .await;
        let client = reqwest::Client::new();
        let url = app.url("/v1/connections/pd/writes");
        // The first four creates happen but their answers are lost, on top of a storm of failures.
        sim.lose_answers("create", 4);
        sim.set_faults(Faults {
            server_error: 0.3,
            rate_limited: 0.1,
            retry_after: Duration::from_millis(200),
            truncated_json: 0.05,
            connection_reset: 0.05,
            ..Faults::default()
        });
        let mut writes = Vec::new();
        for i in 0..8 {
            let (object, properties) = if i % 4 == 3 {
                ("deals", json!({"title": format!("Deal W{i}"), "value": i}))
            } else {
                (
                    "persons",
                    json!({"name": format!("Person W{i}"), "emails": [{"value": format!("w{i}@example.com"), "primary": true}]}),
                )
            };
            let body = json!({"object": object, "properties": properties});
            let key = format!("pd-key-{i}");
            let (status, answer) = post_write(&client, &url, API_TOKEN, &key, &body).await;
            assert_eq!(status, 202, "{answer}");
            // The same key and body again: the same write, not a second one.
            let (again, answer2) = post_write(&client, &url, API_TOKEN, &key, &body).await;
            assert_eq!(again, 202);
            assert_eq!(answer["id"], answer2["id"]);
            writes.push((object, key, answer["id"].as_i64().unwrap()));
        }
        // The same key with another body: 422.
        let (conflict, _) = post_write(&client, &url, API_TOKEN, "pd-key-0", &json!({"object": "persons", "properties": {"name": "Other"}})).await;
        assert_eq!(conflict, 422);

        wait_for("every write to be done", Duration::from_secs(45), || async {
            let mut done = 0;
            for (_, _, id) in &writes {
                if get_write(&client, &app, API_TOKEN, *id).await["status"] == "done" {
                    done += 1;
                }
            }
            done == writes.len()
        })
        .await;
        sim.set_faults(Faults::none());
        let lost = sim.log().snapshot().iter().filter(|r| r.operation == "create" && r.status == 0).count();
        assert!(lost >= 4, "answers were lost: {lost}");
        for (object, key, id) in &writes {
            assert_eq!(sim.creates_with(object, KEY_FIELD, key), 1, "{key} created exactly once");
            let write = get_write(&client, &app, API_TOKEN, *id).await;
            let remote: u64 = write["remote_id"].as_str().unwrap().parse().unwrap();
            let record = sim.records(object).into_iter().find(|r| r.id == remote).expect("the written record");
            assert_eq!(record.data["custom_fields"][KEY_FIELD], key.as_str(), "{key} holds its key");
        }
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_second_windows_are_never_exceeded_under_pull_push_and_webhook_load() {
    on_each_database(|db| async move {
        let (limit, search_limit) = (20, 4);
        let sim = PipedriveSim::start(PipedriveSimConfig {
            rate_limit: Some((limit, Duration::from_secs(2))),
            search_rate_limit: Some((search_limit, Duration::from_secs(2))),
            ..PipedriveSimConfig::default()
        })
        .await
        .unwrap();
        let ids = sim.seed("persons", 1_500, None);
        let conn = pipedrive_connection("pd", &sim.base_url(), &["persons"], "page_size = 100")
            .replace(
                "rate_limit = { requests = 1000, per = \"1s\" }\nsearch",
                &format!("rate_limit = {{ requests = {limit}, per = \"2s\" }}\nsearch"),
            )
            .replace(
                "search_rate_limit = { requests = 1000, per = \"1s\" }",
                &format!("search_rate_limit = {{ requests = {search_limit}, per = \"2s\" }}"),
            )
            .replace("sweep_interval = \"1s\"", "sweep_interval = \"1h\"");
        let app = spawn_app(&db, &conn, &api_line()).await;
        let client = reqwest::Client::new();
        // Pushes (each a scan, a search by email, a read and an update) and webhook reads compete with the pull.
        let mut writes = Vec::new();
        for (i, id) in ids.iter().take(8).enumerate() {
            let body = json!({"object": "persons", "match": {"email": format!("person{id}@example.com")}, "properties": {"name": format!("Load {i}")}});
            let (status, answer) =
                post_write(&client, &app.url("/v1/connections/pd/writes"), API_TOKEN, &format!("load-{i}"), &body).await;
            assert_eq!(status, 202);
            writes.push(answer["id"].as_i64().unwrap());
            let event = sim.event(WebhookAction::Change, "persons", ids[100 + i]);
            assert_eq!(sim.send_webhook(&app.url("/webhooks/pd"), &event).await.unwrap(), 200);
        }
        let store = app.handle.store.clone();
        wait_for("the pull and the pushes to finish", Duration::from_secs(60), || async {
            let pulled = store.records("pd", "persons").await.unwrap().len() >= 1_500;
            let mut done = true;
            for id in &writes {
                done &= get_write(&client, &app, API_TOKEN, *id).await["status"] == "done";
            }
            pulled && done
        })
        .await;
        for (i, id) in ids.iter().take(8).enumerate() {
            let person = sim.records("persons").into_iter().find(|r| r.id == *id).unwrap();
            assert_eq!(person.data["name"], format!("Load {i}"), "the write matched person {id} by email");
            assert_eq!(sim.creates_with("persons", KEY_FIELD, &format!("load-{i}")), 0, "and created nothing");
        }
        assert_eq!(
            sim.rate_limit_excess(),
            0,
            "the simulator refused no request for a full window"
        );
        let log = sim.log();
        let busiest = log.max_in_any_window(Duration::from_secs(2));
        assert!(
            busiest <= limit as usize,
            "{busiest} requests in one 2 s window (limit {limit})"
        );
        assert!(
            busiest >= limit as usize * 3 / 4,
            "the budget was used, not starved: {busiest}"
        );
        let searches: Vec<_> = log
            .snapshot()
            .into_iter()
            .filter(|r| r.operation == "search")
            .map(|r| r.at)
            .collect();
        assert!(searches.len() >= 8, "every push searched: {}", searches.len());
        let busiest_search = crmsyncd_sim::request_log::max_in_window(&searches, Duration::from_secs(2));
        assert!(
            busiest_search <= search_limit as usize,
            "{busiest_search} searches in one 2 s window"
        );
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_smaller_than_the_configured_rate_limit_is_kept_by_the_quota_headers() {
    on_each_database(|db| async move {
        // The plan allows 5 per 2 s; the connection was configured for 1000 per second.
        let sim = PipedriveSim::start(PipedriveSimConfig {
            rate_limit: Some((5, Duration::from_secs(2))),
            ..PipedriveSimConfig::default()
        })
        .await
        .unwrap();
        sim.seed("persons", 300, None);
        let conn = pipedrive_connection("pd", &sim.base_url(), &["persons"], "page_size = 25")
            .replace("sweep_interval = \"1s\"", "sweep_interval = \"1h\"");
        let app = spawn_app(&db, &conn, "").await;
        let store = app.handle.store.clone();
        wait_for("the pull to finish", Duration::from_secs(30), || async {
            store.records("pd", "persons").await.unwrap().len() == 300
        })
        .await;
        assert!(sim.log().len() >= 13, "enough requests to fill several windows");
        assert_eq!(
            sim.rate_limit_excess(),
            0,
            "x-ratelimit-remaining: 0 paused the gate before a 429"
        );
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_without_retry_after_waits_for_the_reset_header() {
    on_each_database(|db| async move {
        let sim = PipedriveSim::start(PipedriveSimConfig::default()).await.unwrap();
        sim.seed("persons", 5, None);
        sim.set_faults(Faults {
            rate_limited: 1.0,
            retry_after: Duration::from_secs(1),
            ..Faults::default()
        });
        let app = spawn_app(&db, &pipedrive_connection("pd", &sim.base_url(), &["persons"], ""), "").await;
        let log = sim.log();
        // Three: from the fourth 429 in a row on, the waits grow (a spent daily budget, not a full window).
        wait_for("three throttled requests", Duration::from_secs(20), || async {
            log.count_status(429) >= 3
        })
        .await;
        sim.set_faults(Faults::none());
        let times: Vec<_> = log
            .snapshot()
            .into_iter()
            .filter(|r| r.status == 429)
            .map(|r| r.at)
            .collect();
        for pair in times.windows(2) {
            let gap = pair[1].duration_since(pair[0]);
            assert!(
                gap >= Duration::from_millis(950),
                "a request came {gap:?} after a 429 whose reset was 1 s"
            );
        }
        let store = app.handle.store.clone();
        wait_for("the sync once the window frees", Duration::from_secs(20), || async {
            store.records("pd", "persons").await.unwrap().len() == 5
        })
        .await;
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_api_token_parks_the_connection_without_calling_again() {
    on_each_database(|db| async move {
        let sim = PipedriveSim::start(PipedriveSimConfig::default()).await.unwrap();
        sim.seed("persons", 3, None);
        let app = spawn_app(&db, &pipedrive_connection("pd", &sim.base_url(), &["persons"], ""), "").await;
        let handle = app.handle.clone();
        sim.set_api_token("regenerated-elsewhere");
        wait_for("auth_failed", Duration::from_secs(20), || async {
            handle.metrics.current_state("pd") == Some(ConnectionState::AuthFailed)
        })
        .await;
        let before = sim.log().len();
        // Parked means parked: several poll intervals (200 ms) pass without a request. Waiting is the point.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(sim.log().len(), before, "a parked connection does not call Pipedrive");
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}
