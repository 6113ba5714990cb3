//! HubSpot end to end: the daemon pulls from the simulator until the local table equals the simulator's data.

mod support;

use std::time::Duration;

use chrono::Utc;
use crmsyncd::model::RemoteRecord;
use crmsyncd::store::Store;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig, SignatureVersion};
use support::{hubspot_connection, on_each_database, spawn_app, wait_for, wait_until_ok};

/// Properties the daemon requests by default and the simulator seeds.
fn compared_properties(object: &str) -> &'static [&'static str] {
    match object {
        "contacts" => &["email", "firstname", "lastname"],
        "companies" => &["name", "domain"],
        _ => &[],
    }
}

/// True when every live simulator record is stored with the same properties and modified time, and every
/// archived one is absent or marked deleted.
async fn converged(sim: &HubSpotSim, store: &Store, connection: &str, object: &str) -> Result<(), String> {
    let local = store.records(connection, object).await.unwrap();
    let local: std::collections::HashMap<String, _> = local.into_iter().map(|r| (r.remote_id.clone(), r)).collect();
    for record in sim.records(object) {
        match local.get(&record.id) {
            None if record.archived => {}
            None => return Err(format!("{object} {} missing locally", record.id)),
            Some(row) if record.archived => {
                if !row.deleted {
                    return Err(format!(
                        "{object} {} archived in the CRM but not deleted locally",
                        record.id
                    ));
                }
            }
            Some(row) => {
                if row.deleted || row.remote_updated_at.timestamp_millis() != record.updated_at.timestamp_millis() {
                    return Err(format!(
                        "{object} {}: local deleted={} at {} vs CRM at {}",
                        record.id, row.deleted, row.remote_updated_at, record.updated_at
                    ));
                }
                for p in compared_properties(object) {
                    if row.data.get(*p) != record.properties.get(*p) {
                        return Err(format!("{object} {} property {p} differs", record.id));
                    }
                }
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_converges_through_equal_timestamps_the_search_cap_and_index_lag() {
    on_each_database(|db| async move {
        let sim = HubSpotSim::start(HubSpotSimConfig {
            index_lag: Duration::from_millis(300),
            search_cap: 1_000,
            ..HubSpotSimConfig::default()
        })
        .await
        .unwrap();
        // A block of equal timestamps larger than the cap, then ordinary records.
        let block_at = Utc::now() - chrono::Duration::hours(2);
        sim.seed("contacts", 1_500, Some(block_at));
        sim.seed("contacts", 1_500, None);
        sim.seed("companies", 400, None);
        let app = spawn_app(
            &db,
            // Small pages: many page boundaries for the churn to fall between.
            &hubspot_connection("hs", &sim.base_url(), &["contacts", "companies"], "page_size = 50"),
            "",
        )
        .await;
        // Concurrent modification (with the webhooks HubSpot would send, so deletes are seen too).
        let churn = sim.spawn_churn(
            Duration::from_millis(25),
            5,
            vec!["contacts".into(), "companies".into()],
            Some(app.url("/webhooks/hs")),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        churn.abort();
        let store = app.handle.store.clone();
        for object in ["contacts", "companies"] {
            wait_until_ok(&format!("{object} to converge"), Duration::from_secs(90), || {
                converged(&sim, &store, "hs", object)
            })
            .await;
        }
        let cursor = store
            .cursor("hs", "contacts")
            .await
            .unwrap()
            .expect("a cursor was stored");
        let newest = sim.records("contacts").iter().map(|r| r.updated_at).max().unwrap();
        assert!(cursor.ts <= newest, "the cursor never passes the newest record");
        assert_eq!(sim.rate_limit_excess(), 0);
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_fast_path_updates_and_deletes_records() {
    on_each_database(|db| async move {
        let sim = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
        let ids = sim.seed("contacts", 20, None);
        // A long poll interval: only the webhook can bring the change in time.
        let extra = "";
        let conn = hubspot_connection("hs", &sim.base_url(), &["contacts"], extra)
            .replace("poll_interval = \"200ms\"", "poll_interval = \"1h\"");
        let app = spawn_app(&db, &conn, "").await;
        let store = app.handle.store.clone();
        wait_for("initial sync", Duration::from_secs(30), || async {
            store.records("hs", "contacts").await.unwrap().len() == 20
        })
        .await;

        let mut props = serde_json::Map::new();
        props.insert("firstname".into(), "Changed".into());
        sim.update("contacts", &ids[0], props);
        sim.delete("contacts", &ids[1]);
        let events = vec![
            sim.event("contact.propertyChange", &ids[0]),
            sim.event("contact.deletion", &ids[1]),
        ];
        let status = sim
            .send_webhook(&app.url("/webhooks/hs"), &events, SignatureVersion::V3)
            .await
            .unwrap();
        assert_eq!(status.as_u16(), 200);
        wait_for("the webhook's changes to land", Duration::from_secs(10), || async {
            let changed = store.record("hs", "contacts", &ids[0]).await.unwrap().unwrap();
            let deleted = store.record("hs", "contacts", &ids[1]).await.unwrap().unwrap();
            changed.data["firstname"] == "Changed" && deleted.deleted
        })
        .await;
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_without_webhooks_are_found_in_the_archived_list() {
    on_each_database(|db| async move {
        let sim = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
        let ids = sim.seed("contacts", 40, None);
        // Archived before the daemon ever ran: it must never show up as live.
        sim.delete("contacts", &ids[0]);
        let app = spawn_app(&db, &hubspot_connection("hs", &sim.base_url(), &["contacts"], ""), "").await;
        let store = app.handle.store.clone();
        let live = || async {
            store
                .records("hs", "contacts")
                .await
                .unwrap()
                .iter()
                .filter(|r| !r.deleted)
                .count()
        };
        wait_for("initial sync", Duration::from_secs(30), || async { live().await == 39 }).await;
        // Deleted with no webhook at all: only the archived list can tell.
        for id in &ids[1..4] {
            sim.delete("contacts", id);
        }
        wait_for(
            "the archived records to be marked deleted",
            Duration::from_secs(20),
            || async {
                let mut all = true;
                for id in &ids[1..4] {
                    all &= store
                        .record("hs", "contacts", id)
                        .await
                        .unwrap()
                        .is_some_and(|r| r.deleted);
                }
                all
            },
        )
        .await;
        assert!(
            store
                .record("hs", "contacts", &ids[0])
                .await
                .unwrap()
                .is_none_or(|r| r.deleted),
            "a record archived before the first pass is never live"
        );
        assert_eq!(live().await, 36);
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_while_the_daemon_was_down_after_a_cut_short_pass_is_applied() {
    on_each_database(|db| async move {
        let sim = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
        let ids = sim.seed("contacts", 30, None);
        // Arrange what a SIGKILL after the first page leaves: that page and its cursor committed, no completed
        // pass, the delete log never read.
        let store = Store::connect(&db.url).await.unwrap();
        store.migrate().await.unwrap();
        let first_page: Vec<RemoteRecord> = sim.records("contacts")[..10]
            .iter()
            .map(|r| RemoteRecord {
                remote_id: r.id.clone(),
                updated_at: r.updated_at,
                data: serde_json::Value::Object(r.properties.clone()),
            })
            .collect();
        let cursor = first_page.iter().map(RemoteRecord::position).max();
        store
            .apply_page("hs", "contacts", &first_page, cursor.as_ref())
            .await
            .unwrap();
        store.close().await;
        // Deleted while the daemon is down, with no webhook; then more than the overlap passes before it is back,
        // so only a delete-log read reaching back to that first page can see it.
        sim.delete("contacts", &ids[0]);
        tokio::time::sleep(Duration::from_millis(600)).await;

        let conn = hubspot_connection("hs", &sim.base_url(), &["contacts"], "")
            .replace("overlap = \"2s\"", "overlap = \"200ms\"");
        let app = spawn_app(&db, &conn, "").await;
        let store = app.handle.store.clone();
        wait_for("the first delete-log read", Duration::from_secs(30), || async {
            store
                .cursor_row("hs", "contacts")
                .await
                .unwrap()
                .is_some_and(|row| row.swept_at.is_some())
        })
        .await;
        let deleted = store.record("hs", "contacts", &ids[0]).await.unwrap().unwrap();
        assert!(
            deleted.deleted,
            "a record synced by the cut-short pass and deleted while the daemon was down is marked deleted"
        );
        wait_until_ok("contacts to converge", Duration::from_secs(30), || {
            converged(&sim, &store, "hs", "contacts")
        })
        .await;
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}
