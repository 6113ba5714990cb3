//! A running daemon exports every metric name of the contract.

mod support;

use crmsyncd::metrics::names;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig};
use std::time::Duration;
use support::{hubspot_connection, spawn_app, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_exposes_every_contract_name() {
    let db = crmsyncd::testing::TestDatabase::sqlite().await;
    let sim = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
    sim.seed("contacts", 3, None);
    let app = spawn_app(&db, &hubspot_connection("hs", &sim.base_url(), &["contacts"], ""), "").await;
    let store = app.handle.store.clone();
    wait_for("a first sync", Duration::from_secs(20), || async {
        store.records("hs", "contacts").await.unwrap().len() == 3
    })
    .await;
    // One webhook so the webhook family has a series.
    let r = reqwest::Client::new()
        .post(app.url("/webhooks/hs"))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    for name in names::ALL {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} is not exported:\n{text}"
        );
    }
    assert!(
        text.contains("crmsyncd_records_synced_total{connection=\"hs\",direction=\"pull\",object=\"contacts\"} 3"),
        "{text}"
    );
    app.stop().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_under_sync_returns_and_keeps_the_committed_cursor() {
    let db = crmsyncd::testing::TestDatabase::sqlite().await;
    let sim = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
    sim.seed("contacts", 2_000, None);
    let conn = hubspot_connection("hs", &sim.base_url(), &["contacts"], "page_size = 50").replace(
        "rate_limit = { requests = 1000, per = \"1s\" }",
        "rate_limit = { requests = 20, per = \"1s\" }",
    );
    let app = spawn_app(&db, &conn, "").await;
    let store = app.handle.store.clone();
    wait_for("some pages", Duration::from_secs(20), || async {
        store.records("hs", "contacts").await.unwrap().len() >= 100
    })
    .await;
    app.stop().await.expect("a clean stop in the middle of a pass");
    // The daemon closed its pool on the way out: read with a fresh one.
    let store = crmsyncd::store::Store::connect(&db.url).await.unwrap();
    let rows = store.records("hs", "contacts").await.unwrap();
    assert!(rows.len() < 2_000, "stopped mid-pass");
    let cursor = store
        .cursor("hs", "contacts")
        .await
        .unwrap()
        .expect("cursor committed with the pages");
    let newest_local = rows.iter().map(|r| r.remote_updated_at).max().unwrap();
    assert_eq!(
        cursor.ts, newest_local,
        "the cursor is exactly at the newest committed record"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_live_on_their_own_address_away_from_the_webhook_listener() {
    let db = crmsyncd::testing::TestDatabase::sqlite().await;
    let sim = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
    let port = support::free_port();
    let app = spawn_app(
        &db,
        &hubspot_connection("hs", &sim.base_url(), &["contacts"], ""),
        &format!("metrics_listen = \"127.0.0.1:{port}\""),
    )
    .await;
    let metrics_base = format!("http://{}", app.handle.metrics_addr.expect("a metrics address"));
    let get = |url: String| async move { reqwest::get(url).await.unwrap() };

    let main = get(app.url("/metrics")).await;
    assert_eq!(main.status(), 404, "the address the CRMs reach does not show metrics");
    let own = get(format!("{metrics_base}/metrics")).await;
    assert_eq!(own.status(), 200);
    assert!(own.text().await.unwrap().contains("# TYPE crmsyncd_build_info "));
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            get(format!("{metrics_base}{path}")).await.status(),
            200,
            "{path} on the metrics address"
        );
        assert_eq!(get(app.url(path)).await.status(), 200, "{path} on the main address");
    }
    let webhook = reqwest::Client::new()
        .post(format!("{metrics_base}/webhooks/hs"))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), 404, "no webhooks on the metrics address");
    app.stop().await.unwrap();
    sim.shutdown().await;
}
