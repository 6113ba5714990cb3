//! The supervisor: a crashed connection restarts with backoff while the others keep syncing; too many crashes
//! leave it `failed`; an auth failure parks a connection without a hot loop until it is resumed.

mod support;

use std::time::Duration;

use crmsyncd::actors::ConnectionMsg;
use crmsyncd::metrics::ConnectionState;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig};
use support::{hubspot_connection, spawn_app, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_connection_is_restarted_and_others_keep_syncing() {
    let db = crmsyncd::testing::TestDatabase::sqlite().await;
    let sim_a = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
    let sim_b = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
    sim_a.seed("contacts", 10, None);
    sim_b.seed("contacts", 10, None);
    let connections = format!(
        "{}{}",
        hubspot_connection("a", &sim_a.base_url(), &["contacts"], ""),
        hubspot_connection("b", &sim_b.base_url(), &["contacts"], "")
    );
    let app = spawn_app(&db, &connections, "").await;
    let handle = app.handle.clone();
    let store = handle.store.clone();
    wait_for("both initial syncs", Duration::from_secs(30), || async {
        store.records("a", "contacts").await.unwrap().len() == 10
            && store.records("b", "contacts").await.unwrap().len() == 10
    })
    .await;

    // Crash "a" until the restart budget (5) is spent; "b" keeps syncing the whole time.
    let entry_a = handle.registry.get("a").unwrap();
    for crash in 1..=6 {
        wait_for("a to be running", Duration::from_secs(30), || async {
            entry_a.actor().is_some()
        })
        .await;
        entry_a.notify(ConnectionMsg::Crash);
        wait_for("a to go down", Duration::from_secs(10), || async {
            entry_a.actor().is_none() || handle.metrics.current_state("a") == Some(ConnectionState::Failed)
        })
        .await;
        sim_b.seed("contacts", 1, None);
        let expected = 10 + crash;
        wait_for("b to keep syncing", Duration::from_secs(10), || async {
            store.records("b", "contacts").await.unwrap().len() == expected
        })
        .await;
    }
    wait_for("a to be marked failed", Duration::from_secs(30), || async {
        handle.metrics.current_state("a") == Some(ConnectionState::Failed)
    })
    .await;
    let text = handle.metrics.render();
    assert!(
        text.contains("crmsyncd_actor_restarts_total{connection=\"a\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("crmsyncd_actor_restarts_total{connection=\"b\"} 0"),
        "{text}"
    );
    assert!(entry_a.actor().is_none(), "a failed connection is left down");
    assert_ne!(handle.metrics.current_state("b"), Some(ConnectionState::Failed));
    app.stop().await.unwrap();
    sim_a.shutdown().await;
    sim_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_parks_the_connection_until_resumed() {
    let db = crmsyncd::testing::TestDatabase::sqlite().await;
    let sim = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
    sim.seed("contacts", 5, None);
    let app = spawn_app(
        &db,
        &hubspot_connection("hs", &sim.base_url(), &["contacts"], ""),
        "api_token = \"t\"",
    )
    .await;
    let handle = app.handle.clone();
    sim.set_access_token("rotated-elsewhere");
    wait_for("auth_failed", Duration::from_secs(20), || async {
        handle.metrics.current_state("hs") == Some(ConnectionState::AuthFailed)
    })
    .await;
    // Parked means parked: no requests for several poll intervals (poll_interval is 200 ms).
    let before = sim.log().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sim.log().len(), before, "a parked connection does not call the CRM");

    sim.set_access_token("hs-test-token");
    sim.seed("contacts", 1, None);
    let resumed = reqwest::Client::new()
        .post(app.url("/v1/connections/hs/resume"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 202);
    let store = handle.store.clone();
    wait_for("sync after resume", Duration::from_secs(20), || async {
        store.records("hs", "contacts").await.unwrap().len() == 6
    })
    .await;
    app.stop().await.unwrap();
    sim.shutdown().await;
}
