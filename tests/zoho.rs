//! Zoho CRM end to end, each test on SQLite and PostgreSQL: thousands of records synced exactly under churn,
//! equal-timestamp blocks and late commits, with deletes from the delete log; notification channels subscribed,
//! renewed and verified; pushes applied once under a fault storm; the credit window and the concurrency limit
//! never exceeded; and OAuth tokens refreshed ahead of expiry, once under contention, sealed and reused across
//! restarts, and a revoked grant parking the connection.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use crmsyncd::Config;
use crmsyncd::auth::{CredentialKey, CredentialVault};
use crmsyncd::metrics::Metrics;
use crmsyncd::providers::{self, BuildContext};
use crmsyncd::ratelimit::RateGate;
use crmsyncd::store::Store;
use crmsyncd::testing::TestDatabase;
use crmsyncd_entities::webhook_events;
use crmsyncd_sim::Faults;
use crmsyncd_sim::oauth::OAuthSimConfig;
use crmsyncd_sim::zoho::{ZohoSim, ZohoSimConfig, callback_body};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Map, Value, json};
use support::{TestApp, get_write, on_each_database, post_write, wait_for, wait_until_ok};

/// 32 bytes, base64: the key that seals OAuth tokens in the database.
const CREDENTIALS_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const API_TOKEN: &str = "api-token-for-zoho-tests";
const NOTIFY_TOKEN: &str = "zoho-notify-token";
const MODULES: [&str; 4] = ["Leads", "Contacts", "Accounts", "Deals"];

/// A `[[connection]]` table for a Zoho simulator, with its OAuth grant. `extra` lines go last.
fn zoho_connection(id: &str, sim: &ZohoSim, modules: &[&str], extra: &str) -> String {
    let oauth = sim.issuer().config();
    let modules: Vec<String> = modules.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        r#"
[[connection]]
id = "{id}"
provider = "zoho"
base_url = "{base}"
modules = [{modules}]
oauth = {{ token_url = "{token_url}", client_id = "{client_id}", client_secret = "{client_secret}", refresh_token = "{refresh}", refresh_before = "1s" }}
poll_interval = "200ms"
rate_limit = {{ requests = 1000, per = "1s" }}
max_concurrent_requests = 4
overlap = "3s"
request_timeout = "2s"
connect_timeout = "1s"
retry_backoff = {{ min = "50ms", max = "1s" }}
{extra}
"#,
        base = sim.base_url(),
        token_url = sim.token_url(),
        client_id = oauth.client_id,
        client_secret = oauth.client_secret,
        refresh = oauth.refresh_token,
        modules = modules.join(", "),
    )
}

/// The daemon's config around `connections`: like `support::spawn_app`, plus the credentials key OAuth needs.
fn daemon_config(db: &TestDatabase, connections: &str, extra_sections: &str) -> Config {
    let port = support::free_port();
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
api_token = "{API_TOKEN}"

[database]
url = "{url}"
credentials_key = "{CREDENTIALS_KEY}"

[supervisor]
min_backoff = "100ms"
max_backoff = "2s"
max_restarts = 5
healthy_after = "60s"
shutdown_grace = "5s"

{extra_sections}
{connections}
"#,
        url = db.url
    );
    Config::parse(&text, Path::new("zoho-test.toml"), &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

async fn spawn_zoho(db: &TestDatabase, connections: &str) -> TestApp {
    support::start(daemon_config(db, connections, "")).await
}

fn fields(v: Value) -> Map<String, Value> {
    serde_json::from_value(v).unwrap()
}

/// The fields the connection reads for `module` (the provider's defaults), besides id and Modified_Time.
fn compared_fields(module: &str) -> &'static [&'static str] {
    match module {
        "Leads" => &["Last_Name", "First_Name", "Email", "Company", "Lead_Status", "Phone"],
        "Contacts" => &["Last_Name", "First_Name", "Email", "Phone"],
        "Accounts" => &["Account_Name", "Website", "Industry", "Phone"],
        _ => &["Deal_Name", "Stage", "Amount", "Closing_Date"],
    }
}

/// Whether the local copy of `module` is exactly the simulator's truth: every live record with the same fields
/// and Modified_Time, every record the CRM no longer has marked deleted.
async fn converged(sim: &ZohoSim, store: &Store, connection: &str, module: &str) -> Result<(), String> {
    let local: HashMap<String, _> = store
        .records(connection, module)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| (r.remote_id.clone(), r))
        .collect();
    let truth = sim.records(module);
    let live: HashSet<&str> = truth.iter().map(|r| r.id.as_str()).collect();
    for record in &truth {
        let Some(row) = local.get(&record.id) else {
            return Err(format!("{module} {} missing locally", record.id));
        };
        if row.deleted {
            return Err(format!("{module} {} deleted locally but live in the CRM", record.id));
        }
        if row.remote_updated_at != record.modified_time {
            return Err(format!(
                "{module} {}: local Modified_Time {} but the CRM's is {}",
                record.id, row.remote_updated_at, record.modified_time
            ));
        }
        for field in compared_fields(module) {
            let crm = record.fields.get(*field).unwrap_or(&Value::Null);
            let mine = row.data.get(*field).unwrap_or(&Value::Null);
            if crm != mine {
                return Err(format!(
                    "{module} {} {field}: local {mine} but the CRM has {crm}",
                    record.id
                ));
            }
        }
    }
    if let Some(row) = local
        .values()
        .find(|r| !live.contains(r.remote_id.as_str()) && !r.deleted)
    {
        return Err(format!("{module} {} gone from the CRM but live locally", row.remote_id));
    }
    Ok(())
}

/// How many webhook events the connection's inbox holds.
async fn inbox_size(store: &Store, connection: &str) -> u64 {
    webhook_events::Entity::find()
        .filter(webhook_events::Column::ConnectionId.eq(connection))
        .count(store.db())
        .await
        .unwrap()
}

fn auth_failed(app: &TestApp, connection: &str) -> bool {
    app.handle.metrics.render().contains(&format!(
        "crmsyncd_connection_state{{connection=\"{connection}\",state=\"auth_failed\"}} 1"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_records_converge_under_churn_equal_timestamps_late_commits_and_deletes() {
    on_each_database(|db| async move {
        let sim = ZohoSim::start(ZohoSimConfig::default()).await.unwrap();
        let an_hour_ago = Utc::now() - chrono::Duration::hours(1);
        // A bulk import: 1,200 leads in one second, six pages of one timestamp.
        let leads = sim.seed("Leads", 1_200, Some(an_hour_ago));
        let contacts = sim.seed("Contacts", 700, None);
        sim.seed("Accounts", 300, Some(an_hour_ago));
        sim.seed("Deals", 300, None);
        let app = spawn_zoho(&db, &zoho_connection("zoho", &sim, &MODULES, "")).await;
        let store = app.handle.store.clone();
        let churn = sim.spawn_churn(Duration::from_millis(25), 5, MODULES.map(String::from).to_vec(), None);
        wait_for("the first full pass", Duration::from_secs(60), || async {
            store.records("zoho", "Leads").await.unwrap().len() >= 1_200
                && store.cursor("zoho", "Deals").await.unwrap().is_some()
        })
        .await;
        // A slow operation stamps its writes now and commits them only after the cursor has moved past them:
        // only the overlap re-read can find them.
        let mut late = sim.begin_late();
        let late_id = late.create(
            "Leads",
            fields(json!({"Last_Name": "Late", "Email": "late@example.com"})),
        );
        let live_contact = sim
            .records("Contacts")
            .into_iter()
            .find(|r| contacts.contains(&r.id))
            .unwrap()
            .id;
        late.update("Contacts", &live_contact, fields(json!({"First_Name": "Late edit"})));
        let stamped = late.stamped_at();
        wait_for(
            "the cursor to pass the slow operation's stamp",
            Duration::from_secs(20),
            || async {
                store
                    .cursor("zoho", "Leads")
                    .await
                    .unwrap()
                    .is_some_and(|c| c.ts > stamped)
            },
        )
        .await;
        // Churn stops first, so that nothing but the overlap can bring the late record in.
        churn.abort();
        late.commit();
        let live: Vec<String> = sim.records("Leads").into_iter().map(|r| r.id).collect();
        let mut seeded_live = leads.iter().filter(|id| live.contains(*id));
        let (gone, edited) = (seeded_live.next().unwrap().clone(), seeded_live.next().unwrap().clone());
        sim.delete("Leads", &gone);
        sim.update("Leads", &edited, fields(json!({"Last_Name": "Edited after the pass"})));
        for module in MODULES {
            wait_until_ok(&format!("{module} to converge"), Duration::from_secs(60), || {
                converged(&sim, &store, "zoho", module)
            })
            .await;
        }
        let late_row = store
            .record("zoho", "Leads", &late_id)
            .await
            .unwrap()
            .expect("the late record was read");
        assert_eq!(late_row.data["Last_Name"], "Late");
        assert_eq!(late_row.remote_updated_at, stamped, "read with its old Modified_Time");
        let deleted = store.record("zoho", "Leads", &gone).await.unwrap().unwrap();
        assert!(deleted.deleted, "the delete log's entry marked it deleted");
        let log = sim.log();
        assert!(
            log.snapshot().iter().any(|r| r.operation == "deleted"),
            "the delete log was read"
        );
        assert_eq!(log.count_status(401), 0);
        let mut stored = 0;
        for module in MODULES {
            stored += store.records("zoho", module).await.unwrap().len();
        }
        assert!(
            stored >= 2_500,
            "every seeded record was stored (live or deleted): {stored}"
        );
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_subscribed_renewed_verified_and_refusals_store_nothing() {
    on_each_database(|db| async move {
        let sim = ZohoSim::start(ZohoSimConfig {
            max_channel_ttl: Duration::from_secs(2),
            ..ZohoSimConfig::default()
        })
        .await
        .unwrap();
        let ids = sim.seed("Leads", 5, Some(Utc::now() - chrono::Duration::hours(1)));
        let conn = zoho_connection(
            "zoho",
            &sim,
            &["Leads"],
            &format!("notify_token = \"{NOTIFY_TOKEN}\"\nchannel_ttl = \"1h\""),
        )
        .replace("poll_interval = \"200ms\"", "poll_interval = \"1h\"");
        let app = spawn_zoho(&db, &conn).await;
        let store = app.handle.store.clone();
        wait_for("the first pass", Duration::from_secs(20), || async {
            store.records("zoho", "Leads").await.unwrap().len() == 5
        })
        .await;
        let hook = app.url("/webhooks/zoho");
        let channel = sim.channels().into_iter().next().expect("a channel was subscribed");
        assert_eq!(channel.notify_url, hook);
        assert_eq!(channel.token.as_deref(), Some(NOTIFY_TOKEN));
        assert_eq!(channel.events, ["Leads.all"]);

        // Zoho's own callbacks: an edit is read, a delete is applied.
        sim.update("Leads", &ids[2], fields(json!({"Last_Name": "Renamed"})));
        sim.delete("Leads", &ids[3]);
        wait_for("the callbacks' changes to land", Duration::from_secs(10), || async {
            let renamed = store.record("zoho", "Leads", &ids[2]).await.unwrap().unwrap();
            let deleted = store.record("zoho", "Leads", &ids[3]).await.unwrap().unwrap();
            renamed.data["Last_Name"] == "Renamed" && deleted.deleted
        })
        .await;
        assert!(
            sim.deliveries().iter().all(|d| d.status == Some(200)),
            "{:?}",
            sim.deliveries()
        );
        assert!(
            sim.log().snapshot().iter().any(|r| r.operation == "get_ids"),
            "the edit was read by id"
        );

        // A redelivery is a duplicate.
        let client = reqwest::Client::new();
        let body = callback_body(
            &channel,
            "Leads",
            "update",
            &[ids[4].clone()],
            Utc::now(),
            &sim.base_url(),
        );
        let first: Value = client
            .post(&hook)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(first["accepted"], 1);
        let again: Value = client
            .post(&hook)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (again["accepted"].as_u64(), again["duplicates"].as_u64()),
            (Some(0), Some(1))
        );

        // Refusals, each with its status, and none of them stored.
        let before = inbox_size(&store, "zoho").await;
        let mut wrong = body.clone();
        wrong["token"] = json!("zoho-notify-tokem");
        let mut missing = body.clone();
        missing.as_object_mut().unwrap().remove("token");
        let mut stale = body.clone();
        stale["server_time"] = json!((Utc::now() - chrono::Duration::minutes(10)).timestamp_millis());
        let mut malformed = body.clone();
        malformed["ids"] = json!([]);
        let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
            ("wrong token", client.post(&hook).json(&wrong), 401),
            ("missing token", client.post(&hook).json(&missing), 401),
            ("not JSON", client.post(&hook).body("token=zoho-notify-token"), 401),
            ("stale", client.post(&hook).json(&stale), 401),
            ("verified but malformed", client.post(&hook).json(&malformed), 400),
            ("wrong method", client.get(&hook), 405),
            (
                "unknown connection",
                client.post(app.url("/webhooks/nope")).json(&body),
                404,
            ),
        ];
        for (what, request, status) in cases {
            assert_eq!(request.send().await.unwrap().status().as_u16(), status, "{what}");
        }
        assert_eq!(
            inbox_size(&store, "zoho").await,
            before,
            "no refused callback was stored"
        );

        // The channel lives 2 s; renewals keep it alive well past that.
        let subscribed_at = Utc::now();
        wait_for("two renewals", Duration::from_secs(10), || async {
            sim.subscriptions() >= 3
        })
        .await;
        assert!(Utc::now() - subscribed_at < chrono::Duration::seconds(4));
        assert!(sim.channels()[0].expiry > Utc::now(), "the channel never lapsed");

        // Stopped, the daemon renews nothing: the channel expires and Zoho stops calling.
        app.stop().await.unwrap();
        wait_for("the channel to expire", Duration::from_secs(5), || async {
            sim.channels()[0].expiry <= Utc::now()
        })
        .await;
        let sent = sim.deliveries().len();
        sim.update("Leads", &ids[0], fields(json!({"Last_Name": "Unwatched"})));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sim.deliveries().len(), sent, "an expired channel is not called");
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_create_exactly_once_under_a_fault_storm_and_repeated_calls() {
    on_each_database(|db| async move {
        let sim = ZohoSim::start(ZohoSimConfig::default()).await.unwrap();
        let app = spawn_zoho(&db, &zoho_connection("zoho", &sim, &["Leads", "Deals"], "")).await;
        let client = reqwest::Client::new();
        // Let the first pass and its token refresh happen before the storm, so writes meet it.
        wait_for("the first pass", Duration::from_secs(20), || async {
            sim.log().snapshot().iter().any(|r| r.operation == "deleted")
        })
        .await;
        sim.set_faults(Faults {
            server_error: 0.3,
            rate_limited: 0.1,
            retry_after: Duration::from_millis(200),
            truncated_json: 0.05,
            connection_reset: 0.05,
            ..Faults::default()
        });
        let mut ids = Vec::new();
        for i in 0..12 {
            let body = json!({"object": "Leads", "match": {"Email": format!("w{i}@example.com")}, "properties": {"Last_Name": format!("W{i}")}});
            let (status, answer) = post_write(&client, &app.url("/v1/connections/zoho/writes"), API_TOKEN, &format!("lead-{i}"), &body).await;
            assert_eq!(status, 202, "{answer}");
            let (again, repeated) = post_write(&client, &app.url("/v1/connections/zoho/writes"), API_TOKEN, &format!("lead-{i}"), &body).await;
            assert_eq!((again, &repeated["id"]), (202, &answer["id"]), "the same key is the same write");
            ids.push(answer["id"].as_i64().unwrap());
        }
        for i in 0..8 {
            let body = json!({"object": "Deals", "properties": {"Deal_Name": format!("D{i}"), "Stage": "Qualification"}});
            let (status, answer) = post_write(&client, &app.url("/v1/connections/zoho/writes"), API_TOKEN, &format!("deal-{i}"), &body).await;
            assert_eq!(status, 202, "{answer}");
            ids.push(answer["id"].as_i64().unwrap());
        }
        let (conflict, _) = post_write(&client, &app.url("/v1/connections/zoho/writes"), API_TOKEN, "lead-0", &json!({"object": "Leads", "properties": {"Last_Name": "Other"}})).await;
        assert_eq!(conflict, 422, "the same key with another body");
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
        sim.set_faults(Faults::none());
        for i in 0..12 {
            assert_eq!(sim.creates_for("Leads", "Email", &format!("w{i}@example.com")), 1, "lead {i}");
            assert_eq!(sim.creates_for("Leads", "crmsyncd_key", &format!("lead-{i}")), 1, "lead {i}");
        }
        for i in 0..8 {
            assert_eq!(sim.creates_for("Deals", "crmsyncd_key", &format!("deal-{i}")), 1, "deal {i}");
        }
        // A write Zoho refuses is dead-lettered with Zoho's reason, not retried.
        let (_, bad) = post_write(&client, &app.url("/v1/connections/zoho/writes"), API_TOKEN, "no-name", &json!({"object": "Leads", "properties": {"Email": "x@example.com"}})).await;
        let bad_id = bad["id"].as_i64().unwrap();
        wait_for("the refused write to be dead", Duration::from_secs(20), || async {
            get_write(&client, &app, API_TOKEN, bad_id).await["status"] == "dead"
        })
        .await;
        let dead = get_write(&client, &app, API_TOKEN, bad_id).await;
        assert!(dead["last_error"].as_str().unwrap().contains("MANDATORY_NOT_FOUND"), "{dead}");
        assert_eq!(sim.creates_for("Leads", "crmsyncd_key", "no-name"), 0);
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credit_window_and_concurrency_limit_hold_under_pull_push_and_notification_load() {
    on_each_database(|db| async move {
        let (credits, window) = (40u32, Duration::from_secs(4));
        let sim = ZohoSim::start(ZohoSimConfig {
            credits: Some((credits, window)),
            max_concurrent: Some(2),
            latency: Duration::from_millis(20),
            ..ZohoSimConfig::default()
        })
        .await
        .unwrap();
        sim.seed("Leads", 500, Some(Utc::now() - chrono::Duration::hours(1)));
        sim.seed("Contacts", 300, None);
        sim.seed("Deals", 200, None);
        // One org, two connections: they share its credits and its concurrency limit through one group.
        let group = "[[rate_limit_group]]\nid = \"org\"\nrate_limit = [{ requests = 40, per = \"4s\" }]\nmax_concurrent_requests = 2\n";
        let shared = |text: String| {
            text.replace("rate_limit = { requests = 1000, per = \"1s\" }\nmax_concurrent_requests = 4\n", "rate_limit_group = \"org\"\n")
        };
        let a = shared(zoho_connection("zoho", &sim, &["Leads", "Contacts"], &format!("page_size = 100\nnotify_token = \"{NOTIFY_TOKEN}\"\nchannel_id = 1000000000001")));
        let b = shared(zoho_connection("zoho-b", &sim, &["Accounts", "Deals"], "page_size = 100\nnotify_token = \"other-token\"\nchannel_id = 1000000000002"));
        let app = support::start(daemon_config(&db, &format!("{a}\n{b}"), group)).await;
        let client = reqwest::Client::new();
        for i in 0..8 {
            let body = json!({"object": "Leads", "match": {"Email": format!("q{i}@example.com")}, "properties": {"Last_Name": format!("Q{i}")}});
            assert_eq!(post_write(&client, &app.url("/v1/connections/zoho/writes"), API_TOKEN, &format!("q-{i}"), &body).await.0, 202);
        }
        let churn = sim.spawn_churn(Duration::from_millis(200), 2, MODULES.map(String::from).to_vec(), None);
        let store = app.handle.store.clone();
        wait_for("both connections to read everything seeded", Duration::from_secs(30), || async {
            store.records("zoho", "Leads").await.unwrap().len() >= 500
                && store.records("zoho-b", "Deals").await.unwrap().len() >= 200
        })
        .await;
        wait_for("more than a window of traffic", Duration::from_secs(30), || async {
            sim.log().len() >= 2 * credits as usize
        })
        .await;
        churn.abort();
        assert!(sim.channels().len() == 2, "both connections subscribed");
        assert!(!sim.deliveries().is_empty(), "notifications added reads to the load");
        let api: Vec<_> = sim.log().snapshot().into_iter().filter(|r| r.operation != "oauth_token").collect();
        let mut times: Vec<_> = api.iter().map(|r| r.at).collect();
        times.sort();
        let busiest = crmsyncd_sim::request_log::max_in_window(&times, window);
        assert_eq!(sim.rate_limit_excess(), 0, "the credit window refused nothing");
        assert_eq!(sim.concurrency_excess(), 0, "the concurrency limit refused nothing");
        assert!(sim.max_in_flight() <= 2, "{} in flight", sim.max_in_flight());
        assert!(busiest <= credits as usize, "{busiest} requests in one {window:?} window (limit {credits})");
        assert!(busiest >= (credits as usize) * 3 / 4, "the budget was used, not starved: {busiest}");
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

fn oauth_sim(ttl: Duration, rotate: bool) -> ZohoSimConfig {
    let defaults = ZohoSimConfig::default();
    ZohoSimConfig {
        oauth: OAuthSimConfig {
            access_ttl: ttl,
            rotate_refresh_tokens: rotate,
            ..defaults.oauth.clone()
        },
        ..defaults
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_are_refreshed_before_they_expire() {
    on_each_database(|db| async move {
        let sim = ZohoSim::start(oauth_sim(Duration::from_secs(3), false)).await.unwrap();
        sim.seed("Leads", 20, None);
        let app = spawn_zoho(&db, &zoho_connection("zoho", &sim, &["Leads"], "")).await;
        let started = std::time::Instant::now();
        wait_for("three refreshes", Duration::from_secs(15), || async {
            sim.issuer().refreshes() >= 3
        })
        .await;
        let api = sim
            .log()
            .snapshot()
            .iter()
            .filter(|r| r.operation != "oauth_token")
            .count();
        // Tokens live 3 s and are refreshed 1 s early: about one refresh per 2 s, never one per request.
        assert!(started.elapsed() >= Duration::from_secs(3), "{:?}", started.elapsed());
        assert!(api > 3 * sim.issuer().refreshes() as usize, "{api} requests");
        assert_eq!(
            sim.log().count_status(401),
            0,
            "no request ever presented an expired token"
        );
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_that_find_the_token_expired_refresh_it_once() {
    on_each_database(|db| async move {
        let sim = ZohoSim::start(ZohoSimConfig::default()).await.unwrap();
        let ids = sim.seed("Leads", 8, None);
        let config = daemon_config(&db, &zoho_connection("zoho", &sim, &["Leads"], ""), "");
        let store = Store::connect(&db.url).await.unwrap();
        store.migrate().await.unwrap();
        let vault = CredentialVault::new(store.clone(), CredentialKey::parse(CREDENTIALS_KEY).unwrap());
        let connection = &config.connections[0];
        let provider = providers::build(BuildContext {
            connection,
            gate: Arc::new(RateGate::new(&connection.rate_limit)),
            metrics: Arc::new(Metrics::new()),
            public_url: None,
            vault: Some(vault),
        })
        .unwrap();
        provider.fetch("Leads", &ids[..1]).await.unwrap();
        assert_eq!(sim.issuer().refreshes(), 1);
        for round in 0..2 {
            // Zoho retires the token early (a restart of its session store, a revoked session).
            sim.issuer().expire_access_tokens();
            let calls = ids.iter().map(|id| {
                let provider = provider.clone();
                let id = id.clone();
                tokio::spawn(async move { provider.fetch("Leads", &[id]).await })
            });
            for call in calls.collect::<Vec<_>>() {
                let fetched = call.await.unwrap().unwrap();
                assert_eq!(fetched.found.len(), 1);
            }
            assert_eq!(sim.issuer().refreshes(), 2 + round, "eight requests, one refresh");
        }
        let refused = sim.log().count_status(401);
        assert!(
            (2..=16).contains(&refused),
            "each request was refused at most once, then retried: {refused}"
        );
        store.close().await;
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_sealed_in_the_database_and_reused_after_a_restart() {
    on_each_database(|db| async move {
        let sim = ZohoSim::start(ZohoSimConfig::default()).await.unwrap();
        sim.seed("Leads", 5, None);
        let conn = zoho_connection("zoho", &sim, &["Leads"], "");
        let app = spawn_zoho(&db, &conn).await;
        let store = app.handle.store.clone();
        wait_for("the first pass", Duration::from_secs(20), || async {
            store.records("zoho", "Leads").await.unwrap().len() == 5
        })
        .await;
        assert_eq!(sim.issuer().refreshes(), 1);
        let sealed = store
            .sealed_credentials("zoho")
            .await
            .unwrap()
            .expect("tokens are stored");
        let vault = CredentialVault::new(store.clone(), CredentialKey::parse(CREDENTIALS_KEY).unwrap());
        let tokens = vault
            .load("zoho")
            .await
            .unwrap()
            .expect("they open with the credentials key");
        let access = tokens.access_token.expect("the access token is kept");
        assert!(!sealed.contains(access.expose()), "no token in the clear");
        assert_eq!(
            tokens.refresh_token.map(|t| t.expose().to_string()).as_deref(),
            Some(sim.issuer().config().refresh_token.as_str())
        );
        app.stop().await.unwrap();

        sim.seed("Leads", 3, None);
        let app = spawn_zoho(&db, &conn).await;
        let store = app.handle.store.clone();
        wait_for("the pass after the restart", Duration::from_secs(20), || async {
            store.records("zoho", "Leads").await.unwrap().len() == 8
        })
        .await;
        assert_eq!(sim.issuer().refreshes(), 1, "the stored access token was still valid");
        assert_eq!(sim.log().count_status(401), 0);
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_is_used_after_a_restart() {
    on_each_database(|db| async move {
        let sim = ZohoSim::start(oauth_sim(Duration::from_secs(3600), true))
            .await
            .unwrap();
        sim.seed("Leads", 5, None);
        let conn = zoho_connection("zoho", &sim, &["Leads"], "");
        let app = spawn_zoho(&db, &conn).await;
        let store = app.handle.store.clone();
        wait_for("the first pass", Duration::from_secs(20), || async {
            store.records("zoho", "Leads").await.unwrap().len() == 5
        })
        .await;
        app.stop().await.unwrap();
        // The configured refresh token is spent; only the rotated one, sealed in the database, works.
        assert!(
            !sim.issuer()
                .live_refresh_tokens()
                .contains(&sim.issuer().config().refresh_token)
        );
        sim.issuer().expire_access_tokens();
        sim.seed("Leads", 2, None);
        let app = spawn_zoho(&db, &conn).await;
        let store = app.handle.store.clone();
        wait_for("the pass after the restart", Duration::from_secs(20), || async {
            store.records("zoho", "Leads").await.unwrap().len() == 7
        })
        .await;
        assert_eq!(sim.issuer().refreshes(), 2);
        assert_eq!(
            sim.issuer().refused(),
            0,
            "the spent configured token was never presented"
        );
        assert!(!auth_failed(&app, "zoho"));
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_refresh_token_parks_the_connection_until_it_is_reauthorised() {
    on_each_database(|db| async move {
        let sim = ZohoSim::start(ZohoSimConfig::default()).await.unwrap();
        sim.seed("Leads", 5, None);
        let conn = zoho_connection("zoho", &sim, &["Leads"], "");
        let app = spawn_zoho(&db, &conn).await;
        let store = app.handle.store.clone();
        wait_for("the first pass", Duration::from_secs(20), || async {
            store.records("zoho", "Leads").await.unwrap().len() == 5
        })
        .await;
        // The user removes the app in Zoho: the grant is gone and the session with it.
        sim.issuer().revoke_refresh_tokens();
        sim.issuer().expire_access_tokens();
        wait_for("auth_failed", Duration::from_secs(10), || async {
            auth_failed(&app, "zoho")
        })
        .await;
        let requests = sim.log().len();
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(sim.issuer().refused(), 1, "one refused grant, then no more tries");
        assert_eq!(sim.log().len(), requests, "a parked connection calls nothing");

        // Resuming without a new authorisation tries once more and parks again.
        let client = reqwest::Client::new();
        let resume = client
            .post(app.url("/v1/connections/zoho/resume"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resume.status(), 202);
        wait_for("the second refusal", Duration::from_secs(10), || async {
            sim.issuer().refused() == 2
        })
        .await;
        wait_for("auth_failed again", Duration::from_secs(10), || async {
            auth_failed(&app, "zoho")
        })
        .await;
        app.stop().await.unwrap();

        // A new authorisation: its refresh token goes in the config, which the daemon reads at start.
        let fresh = sim.issuer().authorize();
        let conn = conn.replace(&sim.issuer().config().refresh_token, &fresh);
        sim.seed("Leads", 1, None);
        let app = spawn_zoho(&db, &conn).await;
        let store = app.handle.store.clone();
        wait_for("syncing again", Duration::from_secs(20), || async {
            store.records("zoho", "Leads").await.unwrap().len() == 6
        })
        .await;
        assert!(!auth_failed(&app, "zoho"));
        assert_eq!(sim.issuer().refused(), 2);
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}
