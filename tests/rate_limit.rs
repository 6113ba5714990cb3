//! The rate gate under load, and 429s answered by waiting as long as the CRM asked.

mod support;

use std::time::Duration;

use crmsyncd_sim::Faults;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig};
use serde_json::json;
use support::{hubspot_connection, spawn_app, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_never_exceeded_under_pull_webhook_and_push_load() {
    let db = crmsyncd::testing::TestDatabase::sqlite().await;
    let limit = 20;
    let sim = HubSpotSim::start(HubSpotSimConfig {
        rate_limit: Some((limit, Duration::from_secs(1))),
        ..HubSpotSimConfig::default()
    })
    .await
    .unwrap();
    let ids = sim.seed("contacts", 1_200, None);
    let conn = hubspot_connection("hs", &sim.base_url(), &["contacts"], "page_size = 50").replace(
        "rate_limit = { requests = 1000, per = \"1s\" }",
        "rate_limit = { requests = 20, per = \"1s\" }",
    );
    let app = spawn_app(&db, &conn, "api_token = \"t\"").await;
    let client = reqwest::Client::new();
    // Pushes and webhook-triggered reads compete with the pull for the same budget.
    for (i, id) in ids.iter().take(15).enumerate() {
        let r = client
            .post(app.url("/v1/connections/hs/writes"))
            .bearer_auth("t")
            .header("idempotency-key", format!("k{i}"))
            .json(&json!({"object": "contacts", "match": {"email": format!("p{i}@example.com")}, "properties": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let event = sim.event("contact.propertyChange", id);
        sim.send_webhook(
            &app.url("/webhooks/hs"),
            &[event],
            crmsyncd_sim::hubspot::SignatureVersion::V3,
        )
        .await
        .unwrap();
    }
    let store = app.handle.store.clone();
    wait_for("the pull to finish", Duration::from_secs(60), || async {
        store.records("hs", "contacts").await.unwrap().len() >= 1_200
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
        busiest >= (limit as usize) * 3 / 4,
        "the budget was used, not starved: {busiest}"
    );
    app.stop().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_requests_for_its_retry_after() {
    let db = crmsyncd::testing::TestDatabase::sqlite().await;
    let sim = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
    sim.seed("contacts", 5, None);
    sim.set_faults(Faults {
        rate_limited: 1.0,
        retry_after: Duration::from_secs(1),
        ..Faults::default()
    });
    let app = spawn_app(&db, &hubspot_connection("hs", &sim.base_url(), &["contacts"], ""), "").await;
    let log = sim.log();
    wait_for("four throttled requests", Duration::from_secs(20), || async {
        log.count_status(429) >= 4
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
            "a request came {gap:?} after a 429 that asked for 1 s"
        );
    }
    let store = app.handle.store.clone();
    wait_for("sync once the CRM recovers", Duration::from_secs(20), || async {
        store.records("hs", "contacts").await.unwrap().len() == 5
    })
    .await;
    let metrics = app.handle.metrics.render();
    assert!(
        !metrics.contains("crmsyncd_crm_throttled_total{connection=\"hs\"} 0"),
        "{metrics}"
    );
    app.stop().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_sharing_a_group_never_exceed_the_accounts_limit_together() {
    let db = crmsyncd::testing::TestDatabase::sqlite().await;
    // One portal, one limit; three connections on it, each alone allowed the whole limit by its own config
    // were it not for the group.
    let limit = 20;
    let sim = HubSpotSim::start(HubSpotSimConfig {
        rate_limit: Some((limit, Duration::from_secs(1))),
        ..HubSpotSimConfig::default()
    })
    .await
    .unwrap();
    sim.seed("contacts", 600, None);
    sim.seed("companies", 600, None);
    sim.seed("deals", 600, None);
    let in_group = |id: &str, object: &str| {
        hubspot_connection(
            id,
            &sim.base_url(),
            &[object],
            "page_size = 20\nrate_limit_group = \"portal\"",
        )
        .replace("rate_limit = { requests = 1000, per = \"1s\" }\n", "")
    };
    let connections = format!(
        "[[rate_limit_group]]\nid = \"portal\"\nrate_limit = {{ requests = {limit}, per = \"1s\" }}\n{}{}{}",
        in_group("a", "contacts"),
        in_group("b", "companies"),
        in_group("c", "deals"),
    );
    let app = spawn_app(&db, &connections, "").await;
    let store = app.handle.store.clone();
    wait_for("all three pulls to finish", Duration::from_secs(60), || async {
        let mut done = true;
        for (id, object) in [("a", "contacts"), ("b", "companies"), ("c", "deals")] {
            done &= store.records(id, object).await.unwrap().len() >= 600;
        }
        done
    })
    .await;
    assert_eq!(sim.rate_limit_excess(), 0, "the account's limit was never exceeded");
    let busiest = sim.log().max_in_any_window(Duration::from_secs(1));
    assert!(
        busiest <= limit as usize,
        "{busiest} requests in one 1 s window (limit {limit})"
    );
    assert!(
        busiest >= (limit as usize) * 3 / 4,
        "the shared budget was used: {busiest}"
    );
    app.stop().await.unwrap();
    sim.shutdown().await;
}
