//! Odoo end to end: keyset pulls on write_date, late-committed rows, archived rows, hard deletes by sweep, and
//! the token-authenticated webhook.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use crmsyncd::store::Store;
use crmsyncd_sim::odoo::{OdooSim, OdooSimConfig};
use support::{odoo_connection, on_each_database, spawn_app, wait_for, wait_until_ok};

async fn converged(sim: &OdooSim, store: &Store, connection: &str, model: &str) -> Result<(), String> {
    let local: HashMap<String, _> = store
        .records(connection, model)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.remote_id.clone(), r))
        .collect();
    let truth = sim.records(model);
    let live: std::collections::HashSet<String> = truth.iter().map(|r| r.id.to_string()).collect();
    for row in &truth {
        let Some(local) = local.get(&row.id.to_string()) else {
            return Err(format!("{model} {} missing locally", row.id));
        };
        if local.deleted
            || local.data.get("name") != row.fields.get("name")
            || local.data.get("active") != Some(&serde_json::Value::Bool(row.active))
        {
            let cursor = store.cursor(connection, model).await.unwrap();
            return Err(format!(
                "{model} {}: local deleted={} name={:?} active={:?} at {}; CRM name={:?} active={} at {}; cursor {cursor:?}",
                row.id,
                local.deleted,
                local.data.get("name"),
                local.data.get("active"),
                local.remote_updated_at,
                row.fields.get("name"),
                row.active,
                row.write_date,
            ));
        }
    }
    // Every local row the simulator no longer has is marked deleted.
    match local.values().find(|r| !live.contains(&r.remote_id) && !r.deleted) {
        Some(r) => Err(format!("{model} {} gone from the CRM but live locally", r.remote_id)),
        None => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_converges_with_late_commits_archives_and_hard_deletes() {
    on_each_database(|db| async move {
        let sim = OdooSim::start(OdooSimConfig::default()).await.unwrap();
        let at = chrono::Utc::now().naive_utc() - chrono::Duration::hours(1);
        sim.seed("res.partner", 1_200, Some(at));
        let ids = sim.seed("res.partner", 1_000, None);
        sim.seed("crm.lead", 300, None);
        sim.archive("res.partner", ids[0]);
        // A long transaction begins before later writes and commits after them.
        let mut late = sim.begin();
        let late_id = late.create(
            "res.partner",
            serde_json::json!({"name": "Late Partner"}).as_object().unwrap().clone(),
        );
        let app = spawn_app(
            &db,
            &odoo_connection(
                "odoo",
                &sim.base_url(),
                &["res.partner", "crm.lead"],
                "sweep_interval = \"1s\"",
            ),
            "",
        )
        .await;
        let store = app.handle.store.clone();
        let churn = sim.spawn_churn(
            Duration::from_millis(25),
            5,
            vec!["res.partner".into(), "crm.lead".into()],
            None,
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        late.commit();
        sim.unlink("res.partner", ids[1]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        churn.abort();
        for model in ["res.partner", "crm.lead"] {
            wait_until_ok(&format!("{model} to converge"), Duration::from_secs(90), || {
                converged(&sim, &store, "odoo", model)
            })
            .await;
        }
        assert!(
            store
                .record("odoo", "res.partner", &late_id.to_string())
                .await
                .unwrap()
                .is_some(),
            "the late row was seen"
        );
        assert!(
            store
                .record("odoo", "res.partner", &ids[1].to_string())
                .await
                .unwrap()
                .unwrap()
                .deleted,
            "the unlinked row is deleted"
        );
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odoo_webhook_with_the_right_token_triggers_a_read() {
    on_each_database(|db| async move {
        let sim = OdooSim::start(OdooSimConfig::default()).await.unwrap();
        let ids = sim.seed("res.partner", 5, None);
        let conn = odoo_connection("odoo", &sim.base_url(), &["res.partner"], "")
            .replace("poll_interval = \"200ms\"", "poll_interval = \"1h\"");
        let app = spawn_app(&db, &conn, "").await;
        let store = app.handle.store.clone();
        wait_for("initial sync", Duration::from_secs(30), || async {
            store.records("odoo", "res.partner").await.unwrap().len() == 5
        })
        .await;
        sim.write(
            "res.partner",
            ids[2],
            serde_json::json!({"name": "Renamed"}).as_object().unwrap().clone(),
        );
        let wrong = sim
            .send_webhook(&app.url("/webhooks/odoo?token=nope"), "res.partner", ids[2], &["name"])
            .await
            .unwrap();
        assert_eq!(wrong.as_u16(), 401);
        let ok = sim
            .send_webhook(
                &app.url("/webhooks/odoo?token=odoo-hook-token"),
                "res.partner",
                ids[2],
                &["name"],
            )
            .await
            .unwrap();
        assert_eq!(ok.as_u16(), 200);
        wait_for("the webhook's change to land", Duration::from_secs(10), || async {
            store
                .record("odoo", "res.partner", &ids[2].to_string())
                .await
                .unwrap()
                .unwrap()
                .data["name"]
                == "Renamed"
        })
        .await;
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}
