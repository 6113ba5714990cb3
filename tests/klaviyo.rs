//! Klaviyo end to end, on SQLite and PostgreSQL: thousands of profiles converge to the simulator's truth through
//! equal-second blocks, lagging reads, churn and deletions; every webhook answer; pushes applied once under a
//! fault storm; both rate-limit windows kept under load; and an OAuth connection.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use crmsyncd::store::Store;
use crmsyncd::testing::TestDatabase;
use crmsyncd_entities::webhook_events;
use crmsyncd_sim::Faults;
use crmsyncd_sim::klaviyo::{KlaviyoSim, KlaviyoSimConfig, PROFILES, SUBSCRIBED_TOPIC, http_date, sign};
use crmsyncd_sim::oauth::OAuthSimConfig;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Map, Value, json};
use support::{CREDENTIALS_KEY, TestApp, get_write, on_each_database, post_write, spawn_app, wait_for, wait_until_ok};

const API_TOKEN: &str = "api-token-for-klaviyo-tests";
/// A generous budget for tests that are not about the rate limit.
const FAST: &str = r#"[{ requests = 1000, per = "1s" }]"#;

/// A `[[connection]]` table for a Klaviyo simulator with its default key and webhook secret.
fn klaviyo_connection(id: &str, base_url: &str, rate_limit: &str, extra: &str) -> String {
    format!(
        r#"
[[connection]]
id = "{id}"
provider = "klaviyo"
base_url = "{base_url}"
api_key = "pk_test_klaviyo_sim_key"
webhook_secret = "klaviyo-sim-webhook-secret"
poll_interval = "200ms"
rate_limit = {rate_limit}
overlap = "2s"
request_timeout = "2s"
connect_timeout = "1s"
retry_backoff = {{ min = "50ms", max = "1s" }}
sweep_interval = "1s"
{extra}
"#
    )
}

/// True when every live profile of the simulator is stored live with the same attributes and `updated`, every
/// deleted one is absent or marked deleted, and nothing else is stored live.
async fn converged(sim: &KlaviyoSim, store: &Store, connection: &str) -> Result<(), String> {
    let local = store.records(connection, PROFILES).await.map_err(|e| e.to_string())?;
    let local: HashMap<String, _> = local.into_iter().map(|r| (r.remote_id.clone(), r)).collect();
    let truth = sim.records();
    let live: HashSet<&str> = truth.iter().map(|p| p.id.as_str()).collect();
    for profile in &truth {
        let Some(row) = local.get(&profile.id) else {
            return Err(format!("profile {} missing locally", profile.id));
        };
        if row.deleted || row.remote_updated_at != profile.updated {
            return Err(format!(
                "profile {}: local deleted={} updated {} vs Klaviyo {}",
                profile.id, row.deleted, row.remote_updated_at, profile.updated
            ));
        }
        if row.data != Value::Object(profile.attributes.clone()) {
            return Err(format!("profile {}: attributes differ", profile.id));
        }
    }
    for id in sim.deleted_ids() {
        if local.get(&id).is_some_and(|row| !row.deleted) {
            return Err(format!("profile {id} deleted in Klaviyo but live locally"));
        }
    }
    if let Some((id, _)) = local
        .iter()
        .find(|(id, row)| !row.deleted && !live.contains(id.as_str()))
    {
        return Err(format!("profile {id} live locally but not in Klaviyo"));
    }
    Ok(())
}

async fn stored_events(app: &TestApp) -> u64 {
    webhook_events::Entity::find()
        .count(app.handle.store.db())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_profiles_converge_through_equal_second_blocks_lagging_reads_churn_and_deletions() {
    on_each_database(|db| async move {
        let sim = KlaviyoSim::start(KlaviyoSimConfig {
            read_lag: Duration::from_millis(500),
            ..KlaviyoSimConfig::default()
        })
        .await
        .unwrap();
        // A block of 1,500 profiles updated in one second (15 pages of it), then 1,500 in the current seconds.
        let block_at = Utc::now() - chrono::Duration::hours(2);
        let block = sim.seed(PROFILES, 1_500, Some(block_at));
        sim.seed(PROFILES, 1_500, None);
        let app = spawn_app(&db, &klaviyo_connection("kl", &sim.base_url(), FAST, ""), "").await;
        let churn = sim.spawn_churn(
            Duration::from_millis(25),
            5,
            vec![PROFILES.into()],
            Some(app.url("/webhooks/kl")),
        );
        // Deletions inside the equal-second block too, which only the id sweep can find.
        for id in block.iter().step_by(100) {
            sim.delete(id);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        churn.abort();
        let store = app.handle.store.clone();
        wait_until_ok("the profiles to converge", Duration::from_secs(60), || {
            converged(&sim, &store, "kl")
        })
        .await;
        assert!(sim.deleted_ids().len() >= 15, "deletions happened");
        assert!(sim.records().len() > 3_000 - 100, "churn created profiles too");
        assert!(stored_events(&app).await > 0, "the churn's webhooks were stored");
        let cursor = store
            .cursor("kl", PROFILES)
            .await
            .unwrap()
            .expect("a cursor was stored");
        let newest = sim.records().iter().map(|p| p.updated).max().unwrap();
        assert!(cursor.ts <= newest, "the cursor never passes the newest profile");
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

/// A request signed (or not) by hand, to exercise each refusal.
struct Delivery {
    body: String,
    timestamp: String,
    webhook_id: String,
    signature: Option<String>,
}

impl Delivery {
    fn signed(sim: &KlaviyoSim, body: Value) -> Self {
        let body = body.to_string();
        let timestamp = http_date(Utc::now());
        Self {
            signature: Some(sign(sim.webhook_secret(), body.as_bytes(), &timestamp)),
            body,
            timestamp,
            webhook_id: sim.webhook_id().to_string(),
        }
    }

    async fn send(&self, url: &str) -> u16 {
        let mut request = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header("klaviyo-timestamp", &self.timestamp)
            .header("klaviyo-webhook-id", &self.webhook_id);
        if let Some(signature) = &self.signature {
            request = request.header("klaviyo-signature", signature);
        }
        request.body(self.body.clone()).send().await.unwrap().status().as_u16()
    }
}

fn envelope(sim: &KlaviyoSim, items: Vec<Value>) -> Value {
    json!({"data": items, "meta": {"klaviyo_account_id": "XyZ123", "klaviyo_webhook_id": sim.webhook_id(), "timestamp": "2024-01-01T00:00:00+00:00"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_accepted_once_and_every_refusal_has_its_status_and_stores_nothing() {
    on_each_database(|db| async move {
        let sim = KlaviyoSim::start(KlaviyoSimConfig::default()).await.unwrap();
        let ids = sim.seed(PROFILES, 5, None);
        // A long poll interval: only the webhook can bring the change in time. A second connection has no secret.
        let conn = klaviyo_connection("kl", &sim.base_url(), FAST, "")
            .replace("poll_interval = \"200ms\"", "poll_interval = \"1h\"");
        let unsigned = klaviyo_connection("kl-nosecret", &sim.base_url(), FAST, "")
            .replace("webhook_secret = \"klaviyo-sim-webhook-secret\"\n", "");
        let app = spawn_app(&db, &format!("{conn}\n{unsigned}"), "").await;
        let url = app.url("/webhooks/kl");
        let store = app.handle.store.clone();
        wait_for("the first pull", Duration::from_secs(20), || async {
            store.records("kl", PROFILES).await.unwrap().len() == 5
        })
        .await;

        let mut change = Map::new();
        change.insert("properties".into(), json!({"email_marketing": "SUBSCRIBED"}));
        sim.update(&ids[0], change);
        let event = sim.event(SUBSCRIBED_TOPIC, &ids[0]);
        let good = Delivery::signed(&sim, envelope(&sim, vec![event.clone()]));

        // Unsigned: 401.
        let mut d = Delivery::signed(&sim, envelope(&sim, vec![event.clone()]));
        d.signature = None;
        assert_eq!(d.send(&url).await, 401, "no signature");
        // Signed with another secret: 401.
        let mut d = Delivery::signed(&sim, envelope(&sim, vec![event.clone()]));
        d.signature = Some(sign("some-other-secret-key", d.body.as_bytes(), &d.timestamp));
        assert_eq!(d.send(&url).await, 401, "wrong secret");
        // The body changed after signing: 401.
        let mut d = Delivery::signed(&sim, envelope(&sim, vec![event.clone()]));
        d.body = d.body.replace(&ids[0], &ids[1]);
        assert_eq!(d.send(&url).await, 401, "tampered body");
        // The timestamp changed after signing: 401.
        let mut d = Delivery::signed(&sim, envelope(&sim, vec![event.clone()]));
        d.timestamp = http_date(Utc::now() + chrono::Duration::seconds(1));
        assert_eq!(d.send(&url).await, 401, "tampered timestamp");
        // Correctly signed ten minutes ago (a replay): 401.
        let mut d = Delivery::signed(&sim, envelope(&sim, vec![event.clone()]));
        d.timestamp = http_date(Utc::now() - chrono::Duration::minutes(10));
        d.signature = Some(sign(sim.webhook_secret(), d.body.as_bytes(), &d.timestamp));
        assert_eq!(d.send(&url).await, 401, "stale timestamp");
        // The Klaviyo-Webhook-Id header names another webhook than the signed body: 401.
        let mut d = Delivery::signed(&sim, envelope(&sim, vec![event.clone()]));
        d.webhook_id = "01HSOMEONEELSE".into();
        assert_eq!(d.send(&url).await, 401, "webhook id mismatch");
        // A connection without a webhook secret refuses even a good delivery: 401.
        assert_eq!(
            good.send(&app.url("/webhooks/kl-nosecret")).await,
            401,
            "no secret configured"
        );
        // Verified but malformed: 400.
        let d = Delivery::signed(&sim, envelope(&sim, vec![]));
        assert_eq!(d.send(&url).await, 400, "empty batch");
        let d = Delivery::signed(
            &sim,
            envelope(&sim, vec![json!({"topic": SUBSCRIBED_TOPIC, "payload": {}})]),
        );
        assert_eq!(d.send(&url).await, 400, "event without external_id");
        let d = Delivery::signed(&sim, json!(["not", "an", "envelope"]));
        assert_eq!(d.send(&url).await, 400, "not an envelope");
        assert_eq!(stored_events(&app).await, 0, "nothing refused was stored");

        // Accepted: 200, stored before the answer, and the profile's change lands without a poll.
        assert_eq!(good.send(&url).await, 200);
        assert_eq!(stored_events(&app).await, 1);
        wait_for("the webhook's profile to be read", Duration::from_secs(10), || async {
            let row = store.record("kl", PROFILES, &ids[0]).await.unwrap().unwrap();
            row.data["properties"]["email_marketing"] == "SUBSCRIBED"
        })
        .await;
        // Redelivered: 200, not stored again; a batch with one new event stores only that one.
        assert_eq!(good.send(&url).await, 200);
        assert_eq!(stored_events(&app).await, 1, "a redelivered event is not stored twice");
        let another = sim.event(SUBSCRIBED_TOPIC, &ids[1]);
        let batch = Delivery::signed(&sim, envelope(&sim, vec![event, another]));
        assert_eq!(batch.send(&url).await, 200);
        assert_eq!(stored_events(&app).await, 2);

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
async fn pushes_create_each_profile_once_under_a_fault_storm_and_repeated_calls() {
    on_each_database(|db| async move {
        let sim = KlaviyoSim::start(KlaviyoSimConfig::default()).await.unwrap();
        let conn = klaviyo_connection("kl", &sim.base_url(), FAST, "sweep_interval = \"1h\"")
            .replace("sweep_interval = \"1s\"\n", "")
            .replace("poll_interval = \"200ms\"", "poll_interval = \"1h\"");
        let app = spawn_app(&db, &conn, &format!("api_token = \"{API_TOKEN}\"")).await;
        let client = reqwest::Client::new();
        let url = app.url("/v1/connections/kl/writes");
        sim.set_faults(Faults {
            server_error: 0.3,
            rate_limited: 0.1,
            retry_after: Duration::from_millis(200),
            truncated_json: 0.05,
            connection_reset: 0.05,
            ..Faults::default()
        });
        let mut writes = Vec::new();
        for i in 0..16 {
            // Half keyed by the idempotency key alone (it becomes the external_id), half matched on email.
            let body = if i % 2 == 0 {
                json!({"object": PROFILES, "properties": {"first_name": format!("W{i}"), "plan": "pro"}})
            } else {
                json!({"object": PROFILES, "match": {"email": format!("w{i}@example.com")}, "properties": {"first_name": format!("W{i}")}})
            };
            let key = format!("kl-key-{i}");
            let (status, answer) = post_write(&client, &url, API_TOKEN, &key, &body).await;
            assert_eq!(status, 202, "{answer}");
            let (again, answer2) = post_write(&client, &url, API_TOKEN, &key, &body).await;
            assert_eq!(again, 202);
            assert_eq!(answer["id"], answer2["id"], "the same key is the same write");
            writes.push(answer["id"].as_i64().unwrap());
        }
        wait_for("every write to be done", Duration::from_secs(25), || async {
            let mut done = 0;
            for id in &writes {
                if get_write(&client, &app, API_TOKEN, *id).await["status"] == "done" {
                    done += 1;
                }
            }
            done == writes.len()
        })
        .await;
        sim.set_faults(Faults::none());
        for i in 0..16 {
            let creates = if i % 2 == 0 {
                sim.creates_for("external_id", &format!("kl-key-{i}"))
            } else {
                sim.creates_for("email", &format!("w{i}@example.com"))
            };
            assert_eq!(creates, 1, "write {i} created exactly one profile");
        }
        let truth = sim.records();
        assert_eq!(truth.len(), 16);
        let pro = truth.iter().find(|p| p.attributes["external_id"] == "kl-key-0").unwrap();
        assert_eq!(pro.attributes["properties"]["plan"], "pro", "custom keys land in properties");
        let done = get_write(&client, &app, API_TOKEN, writes[0]).await;
        assert_eq!(done["remote_id"], pro.id.as_str(), "the write records Klaviyo's profile id");

        // A write whose identifiers name two different profiles: Klaviyo's 409, dead-lettered with its message.
        let conflict = json!({"object": PROFILES, "match": {"email": "w1@example.com"}, "properties": {"external_id": "kl-key-0"}});
        let (status, answer) = post_write(&client, &url, API_TOKEN, "kl-conflict", &conflict).await;
        assert_eq!(status, 202);
        let id = answer["id"].as_i64().unwrap();
        wait_for("the conflicting write to be dead", Duration::from_secs(10), || async {
            get_write(&client, &app, API_TOKEN, id).await["status"] == "dead"
        })
        .await;
        let dead = get_write(&client, &app, API_TOKEN, id).await;
        assert!(dead["last_error"].as_str().unwrap().contains("duplicate_profile"), "{dead}");
        assert_eq!(sim.records().len(), 16, "the conflict created nothing");
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_push_and_webhook_load_never_exceeds_the_burst_or_the_steady_window() {
    on_each_database(|db| async move {
        // Klaviyo's two windows scaled down so both bind within seconds: 10 per second, 40 per 5 seconds.
        let (burst, steady) = ((10, Duration::from_secs(1)), (40, Duration::from_secs(5)));
        let sim = KlaviyoSim::start(KlaviyoSimConfig {
            rate_limits: vec![burst, steady],
            ..KlaviyoSimConfig::default()
        })
        .await
        .unwrap();
        let ids = sim.seed(PROFILES, 1_000, None);
        let limits = r#"[{ requests = 10, per = "1s" }, { requests = 40, per = "5s" }]"#;
        let conn = klaviyo_connection("kl", &sim.base_url(), limits, "")
            .replace("sweep_interval = \"1s\"", "sweep_interval = \"3s\"");
        let app = spawn_app(&db, &conn, &format!("api_token = \"{API_TOKEN}\"")).await;
        let client = reqwest::Client::new();
        let mut writes = Vec::new();
        for (i, id) in ids.iter().take(8).enumerate() {
            let body = json!({"object": PROFILES, "properties": {"first_name": format!("Load {i}")}});
            let (status, answer) = post_write(
                &client,
                &app.url("/v1/connections/kl/writes"),
                API_TOKEN,
                &format!("load-{i}"),
                &body,
            )
            .await;
            assert_eq!(status, 202);
            writes.push(answer["id"].as_i64().unwrap());
            let status = sim
                .send_webhook(&app.url("/webhooks/kl"), &[sim.event(SUBSCRIBED_TOPIC, id)])
                .await
                .unwrap();
            assert_eq!(status.as_u16(), 200);
        }
        let store = app.handle.store.clone();
        wait_for("the pull and the writes to finish", Duration::from_secs(25), || async {
            let mut done = 0;
            for id in &writes {
                if get_write(&client, &app, API_TOKEN, *id).await["status"] == "done" {
                    done += 1;
                }
            }
            done == writes.len() && store.records("kl", PROFILES).await.unwrap().len() >= 1_008
        })
        .await;
        // Polls and sweeps go on: keep the load up until the steady window has been full for a while.
        let log = sim.log();
        wait_for("60 requests of sustained load", Duration::from_secs(20), || async {
            log.len() >= 60
        })
        .await;
        assert_eq!(
            sim.rate_limit_excess(),
            0,
            "Klaviyo refused no request for its rate limit"
        );
        assert_eq!(log.count_status(429), 0);
        let busiest_burst = log.max_in_any_window(burst.1);
        let busiest_steady = log.max_in_any_window(steady.1);
        assert!(busiest_burst <= burst.0 as usize, "{busiest_burst} in one second");
        assert!(busiest_steady <= steady.0 as usize, "{busiest_steady} in five seconds");
        assert!(
            busiest_steady >= steady.0 as usize * 3 / 4,
            "the budget was used, not starved: {busiest_steady}"
        );
        let operations: HashSet<String> = log.snapshot().into_iter().map(|r| r.operation).collect();
        for op in ["get_profiles", "profile_import"] {
            assert!(operations.contains(op), "{op} shared the budget: {operations:?}");
        }
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_connection_refreshes_expired_tokens_and_parks_when_the_grant_is_revoked() {
    on_each_database(|db| async move {
        let sim = KlaviyoSim::start(KlaviyoSimConfig {
            oauth: Some(OAuthSimConfig {
                access_ttl: Duration::from_secs(3600),
                ..OAuthSimConfig::default()
            }),
            ..KlaviyoSimConfig::default()
        })
        .await
        .unwrap();
        sim.seed(PROFILES, 120, None);
        let oauth = format!(
            r#"oauth = {{ token_url = "{}/oauth/token", client_id = "sim-client-id", client_secret = "sim-client-secret", refresh_token = "sim-refresh-token" }}"#,
            sim.base_url()
        );
        let conn = klaviyo_connection("kl", &sim.base_url(), FAST, &oauth)
            .replace("api_key = \"pk_test_klaviyo_sim_key\"\n", "");
        let app = spawn_with_credentials_key(&db, &conn).await;
        let store = app.handle.store.clone();
        wait_for("the OAuth connection's first pull", Duration::from_secs(20), || async {
            store.records("kl", PROFILES).await.unwrap().len() == 120
        })
        .await;
        let issuer = sim.oauth().unwrap();
        let first = issuer.refreshes();
        assert!(first >= 1);
        // Every access token expires: the next request is refused, the token refreshed once, the sync goes on.
        issuer.expire_access_tokens();
        sim.seed(PROFILES, 5, None);
        wait_for("a pull after the refresh", Duration::from_secs(20), || async {
            store.records("kl", PROFILES).await.unwrap().len() == 125
        })
        .await;
        assert!(issuer.refreshes() > first, "the token was refreshed");
        // The user uninstalls the app: the refresh is refused and the connection parks in auth_failed.
        issuer.revoke_refresh_tokens();
        issuer.expire_access_tokens();
        wait_for("the connection to park", Duration::from_secs(20), || async {
            app.handle.metrics.render().contains("crmsyncd_connection_state{connection=\"kl\",state=\"auth_failed\"} 1")
        })
        .await;
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

/// The daemon with `connections` and a credentials key, which OAuth connections need to seal rotated tokens.
async fn spawn_with_credentials_key(db: &TestDatabase, connections: &str) -> TestApp {
    support::spawn_app_with_database(db, connections, "", &format!("credentials_key = \"{CREDENTIALS_KEY}\"")).await
}
