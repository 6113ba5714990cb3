//! Reloading the config (SIGHUP): added connections start, removed ones stop, changed ones restart, and the
//! others keep running untouched; a config with problems changes nothing.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crmsyncd::Config;
use crmsyncd::actors::ReloadSummary;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig};
use crmsyncd_sim::odoo::{OdooSim, OdooSimConfig};
use support::{hubspot_connection, odoo_connection, spawn_app, wait_for};

fn config(port: u16, db: &str, connections: &str) -> Config {
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\n[database]\nurl = \"{db}\"\n{connections}"
    );
    Config::parse(&text, Path::new("reload.toml"), &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_starts_stops_and_restarts_only_what_changed() {
    let db = crmsyncd::testing::TestDatabase::sqlite().await;
    let hubspot = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
    let odoo = OdooSim::start(OdooSimConfig::default()).await.unwrap();
    hubspot.seed("contacts", 20, None);
    hubspot.seed("companies", 20, None);
    hubspot.seed("deals", 20, None);
    odoo.seed("res.partner", 20, None);
    let keep = hubspot_connection("keep", &hubspot.base_url(), &["contacts"], "");
    let change = hubspot_connection("change", &hubspot.base_url(), &["companies"], "");
    let drop = hubspot_connection("drop", &hubspot.base_url(), &["deals"], "");
    let app = spawn_app(&db, &format!("{keep}{change}{drop}"), "").await;
    let store = app.handle.store.clone();
    let synced = |id: &'static str, object: &'static str, n: usize| {
        let store = store.clone();
        async move {
            store
                .records(id, object)
                .await
                .unwrap()
                .iter()
                .filter(|r| !r.deleted)
                .count()
                == n
        }
    };
    wait_for("the first syncs", Duration::from_secs(30), || async {
        synced("keep", "contacts", 20).await
            && synced("change", "companies", 20).await
            && synced("drop", "deals", 20).await
    })
    .await;
    let actor_of = |id: &str| app.handle.registry.get(id).and_then(|e| e.actor()).map(|a| a.get_id());
    let keep_actor = actor_of("keep").expect("keep runs");
    let change_actor = actor_of("change").expect("change runs");

    let changed = change.replace("poll_interval = \"200ms\"", "poll_interval = \"300ms\"");
    let added = odoo_connection("added", &odoo.base_url(), &["res.partner"], "");
    let port = app.handle.addr.port();
    let summary = app
        .handle
        .reload(config(port, &db.url, &format!("{keep}{changed}{added}")))
        .await
        .unwrap();
    assert_eq!(
        summary,
        ReloadSummary {
            added: vec!["added".into()],
            removed: vec!["drop".into()],
            restarted: vec!["change".into()],
            unchanged: vec!["keep".into()],
        }
    );
    assert_eq!(
        actor_of("keep"),
        Some(keep_actor),
        "an unchanged connection keeps its actor"
    );
    let restarted = actor_of("change").expect("the changed connection runs again");
    assert_ne!(restarted, change_actor, "a changed connection got a new actor");
    assert!(app.handle.registry.get("drop").is_none());
    let webhook = reqwest::Client::new()
        .post(app.url("/webhooks/drop"))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), 404, "a removed connection takes no webhooks");

    hubspot.seed("contacts", 5, None);
    hubspot.seed("companies", 5, None);
    wait_for(
        "every remaining connection to sync",
        Duration::from_secs(30),
        || async {
            synced("keep", "contacts", 25).await
                && synced("change", "companies", 25).await
                && synced("added", "res.partner", 20).await
        },
    )
    .await;
    let metrics = app.handle.metrics.render();
    assert!(
        !metrics.contains("crmsyncd_connection_state{connection=\"drop\""),
        "{metrics}"
    );
    app.stop().await.unwrap();
    hubspot.shutdown().await;
    odoo.shutdown().await;
}

/// The ids `GET /v1/connections` lists.
async fn listed(base: &str) -> Option<Vec<String>> {
    let answer: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/v1/connections"))
        .bearer_auth("t")
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(
        answer
            .get("connections")?
            .as_array()?
            .iter()
            .filter_map(|c| c["id"].as_str().map(String::from))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
    let port = support::free_port();
    let path = dir.path().join("crmsyncd.toml");
    let write = |connections: &str| {
        let text = format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\napi_token = \"t\"\n\n[database]\nurl = \"sqlite://{}?mode=rwc\"\n{connections}",
            dir.path().join("crmsyncd.db").display()
        );
        std::fs::write(&path, text).unwrap();
    };
    write(&hubspot_connection("a", &sim.base_url(), &["contacts"], ""));
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_crmsyncd"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let hup = |pid: u32| {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        )
    };
    wait_for("the daemon to run connection a", Duration::from_secs(30), || async {
        listed(&base).await == Some(vec!["a".into()])
    })
    .await;

    write(&hubspot_connection("b", &sim.base_url(), &["contacts"], ""));
    hup(daemon.id());
    wait_for("the reload to swap a for b", Duration::from_secs(30), || async {
        listed(&base).await == Some(vec!["b".into()])
    })
    .await;

    write("[[connection]]\nid = \"c\"\nprovider = \"nowhere\"\n");
    hup(daemon.id());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        listed(&base).await,
        Some(vec!["b".into()]),
        "a broken file changes nothing"
    );
    assert!(daemon.try_wait().unwrap().is_none(), "and the daemon keeps running");

    assert!(
        Command::new("kill")
            .args(["-TERM", &daemon.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || daemon.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    sim.shutdown().await;
}
