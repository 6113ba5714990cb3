//! Pushing writes: the API's idempotency contract and exactly-once creates under retries and faults.

mod support;

use std::time::Duration;

use crmsyncd_sim::Faults;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig};
use crmsyncd_sim::odoo::{OdooSim, OdooSimConfig};
use serde_json::{Value, json};
use support::{get_write, hubspot_connection, odoo_connection, on_each_database, post_write, spawn_app, wait_for};

const TOKEN: &str = "api-token-for-tests";

fn api_line() -> String {
    format!("api_token = \"{TOKEN}\"")
}

/// Waits until every write in `ids` reports status "done".
async fn wait_all_done(client: &reqwest::Client, app: &support::TestApp, ids: &[i64]) {
    wait_for("every write to be done", Duration::from_secs(60), || async {
        let mut done = 0;
        for id in ids {
            if get_write(client, app, TOKEN, *id).await["status"] == "done" {
                done += 1;
            }
        }
        done == ids.len()
    })
    .await;
}

/// A HubSpot simulator and a daemon with one connection "hs" to it and the API enabled.
async fn hubspot_app(db: &crmsyncd::testing::TestDatabase) -> (HubSpotSim, support::TestApp) {
    let sim = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
    let app = spawn_app(
        db,
        &hubspot_connection("hs", &sim.base_url(), &["contacts"], ""),
        &api_line(),
    )
    .await;
    (sim, app)
}

fn storm() -> Faults {
    Faults {
        server_error: 0.3,
        rate_limited: 0.1,
        retry_after: Duration::from_millis(200),
        truncated_json: 0.05,
        connection_reset: 0.05,
        ..Faults::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_writes_create_exactly_once_under_faults_and_repeats() {
    on_each_database(|db| async move {
        let (sim, app) = hubspot_app(&db).await;
        let client = reqwest::Client::new();
        let url = app.url("/v1/connections/hs/writes");
        sim.set_faults(storm());
        let mut ids = Vec::new();
        for i in 0..20 {
            let body = json!({"object": "contacts", "match": {"email": format!("w{i}@example.com")}, "properties": {"firstname": format!("W{i}")}});
            let (status, answer) = post_write(&client, &url, TOKEN, &format!("key-{i}"), &body).await;
            assert_eq!(status, 202, "{answer}");
            // The same key and body again: the same answer, no second write.
            let (again, answer2) = post_write(&client, &url, TOKEN, &format!("key-{i}"), &body).await;
            assert_eq!(again, 202);
            assert_eq!(answer["id"], answer2["id"]);
            ids.push(answer["id"].as_i64().unwrap());
        }
        // The same key with another body: 422.
        let (status, _) = post_write(&client, &url, TOKEN, "key-0", &json!({"object": "contacts", "match": {"email": "other@example.com"}, "properties": {}})).await;
        assert_eq!(status, 422);

        wait_all_done(&client, &app, &ids).await;
        sim.set_faults(Faults::none());
        for i in 0..20 {
            assert_eq!(sim.creates_for("contacts", "email", &format!("w{i}@example.com")), 1, "write {i} created once");
        }
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoo_writes_create_exactly_once_under_faults() {
    on_each_database(|db| async move {
        let sim = OdooSim::start(OdooSimConfig::default()).await.unwrap();
        let app = spawn_app(
            &db,
            &odoo_connection("odoo", &sim.base_url(), &["res.partner"], ""),
            &api_line(),
        )
        .await;
        let client = reqwest::Client::new();
        let url = app.url("/v1/connections/odoo/writes");
        sim.set_faults(storm());
        let mut ids = Vec::new();
        for i in 0..15 {
            let body = json!({"object": "res.partner", "properties": {"name": format!("P{i}")}});
            let (status, answer) = post_write(&client, &url, TOKEN, &format!("odoo-key-{i}"), &body).await;
            assert_eq!(status, 202, "{answer}");
            ids.push(answer["id"].as_i64().unwrap());
        }
        wait_all_done(&client, &app, &ids).await;
        sim.set_faults(Faults::none());
        for i in 0..15 {
            assert_eq!(
                sim.creates_with("res.partner", "x_crmsyncd_key", &format!("odoo-key-{i}")),
                1,
                "write {i} created once"
            );
        }
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_write_is_dead_lettered_with_the_crms_message_and_can_be_replayed() {
    let db = crmsyncd::testing::TestDatabase::sqlite().await;
    let (sim, app) = hubspot_app(&db).await;
    let client = reqwest::Client::new();
    let body =
        json!({"object": "contacts", "match": {"email": "bad@example.com"}, "properties": {"invalid_field": "x"}});
    let (status, answer) = post_write(&client, &app.url("/v1/connections/hs/writes"), TOKEN, "bad-1", &body).await;
    assert_eq!(status, 202);
    let id = answer["id"].as_i64().unwrap();
    let get = || get_write(&client, &app, TOKEN, id);
    wait_for("the write to be dead", Duration::from_secs(20), || async {
        get().await["status"] == "dead"
    })
    .await;
    let w = get().await;
    assert!(
        w["last_error"]
            .as_str()
            .unwrap()
            .contains("Property values were not valid"),
        "{w}"
    );
    let metrics = client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("crmsyncd_outbox_dead{connection=\"hs\"} 1"),
        "{metrics}"
    );
    let replay = client
        .post(app.url(&format!("/v1/writes/{id}/replay")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(sim.creates_for("contacts", "email", "bad@example.com"), 0);
    app.stop().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_rejects_missing_or_wrong_tokens_and_missing_keys() {
    let db = crmsyncd::testing::TestDatabase::sqlite().await;
    let (sim, app) = hubspot_app(&db).await;
    let client = reqwest::Client::new();
    let url = app.url("/v1/connections/hs/writes");
    let body = json!({"object": "contacts", "match": {"email": "a@b.c"}, "properties": {}});
    assert_eq!(client.post(&url).json(&body).send().await.unwrap().status(), 401);
    assert_eq!(
        client
            .post(&url)
            .bearer_auth("wrong")
            .header("idempotency-key", "k")
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        400,
        "no Idempotency-Key"
    );
    let unknown_object = json!({"object": "tickets", "match": {"email": "a@b.c"}, "properties": {}});
    assert_eq!(
        client
            .post(&url)
            .bearer_auth(TOKEN)
            .header("idempotency-key", "k2")
            .json(&unknown_object)
            .send()
            .await
            .unwrap()
            .status(),
        422
    );
    let list: Value = client
        .get(app.url("/v1/connections"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["connections"][0]["id"], "hs");
    app.stop().await.unwrap();
    sim.shutdown().await;
}
