//! SQLite's own failures are transient, not crashes: a write lock held by another process ("database is
//! locked") and a full disk (SQLITE_FULL). The daemon keeps running through them and catches up afterwards.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crmsyncd::testing::TestDatabase;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig, SignatureVersion};
use sea_orm::sqlx::{self, Connection};
use serde_json::{Map, Value};
use support::{TestApp, hubspot_connection, spawn_app, wait_for};

fn firstname(value: &str) -> Map<String, Value> {
    let mut props = Map::new();
    props.insert("firstname".into(), Value::String(value.into()));
    props
}

async fn has_firstname(app: &TestApp, id: &str, value: &str) -> bool {
    app.handle
        .store
        .record("hs", "contacts", id)
        .await
        .ok()
        .flatten()
        .is_some_and(|r| r.data.get("firstname").and_then(Value::as_str) == Some(value))
}

async fn database_retries(app: &TestApp) -> f64 {
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("crmsyncd_retries_total{") && l.contains("reason=\"database\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn ready(app: &TestApp) -> bool {
    reqwest::get(app.url("/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_by_another_process_is_waited_out_and_caught_up() {
    let db = TestDatabase::sqlite().await;
    let sim = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
    let ids = sim.seed("contacts", 20, None);
    let app = spawn_app(&db, &hubspot_connection("hs", &sim.base_url(), &["contacts"], ""), "").await;
    wait_for("the initial sync", Duration::from_secs(30), || async {
        app.handle.store.records("hs", "contacts").await.unwrap().len() == 20
    })
    .await;

    // Another process takes the write lock for longer than the daemon's busy timeout (5 s).
    let mut locker = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut locker).await.unwrap();
    sim.update("contacts", &ids[0], firstname("while-locked"));
    let event = sim.event("contact.propertyChange", &ids[0]);
    let status = sim
        .send_webhook(
            &app.url("/webhooks/hs"),
            std::slice::from_ref(&event),
            SignatureVersion::V3,
        )
        .await
        .unwrap();
    assert_eq!(
        status.as_u16(),
        503,
        "a webhook that cannot be stored is refused, not acknowledged"
    );
    wait_for(
        "the actor to back off on the database",
        Duration::from_secs(15),
        || async { database_retries(&app).await >= 1.0 },
    )
    .await;
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    drop(locker);

    wait_for("the change to arrive after the lock", Duration::from_secs(15), || {
        has_firstname(&app, &ids[0], "while-locked")
    })
    .await;
    let status = sim
        .send_webhook(&app.url("/webhooks/hs"), &[event], SignatureVersion::V3)
        .await
        .unwrap();
    assert!(status.is_success(), "webhooks are accepted again: {status}");
    assert!(ready(&app).await);
    // The lock lasted about 5-7 s; a 0.25-2 s backoff retries a handful of times, a hot loop thousands.
    let retries = database_retries(&app).await;
    assert!(retries <= 30.0, "{retries} database retries: a hot loop");
    app.stop().await.unwrap();
    sim.shutdown().await;
    db.cleanup().await;
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = std::env::temp_dir().join(format!("crmsyncd-full-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!("mount -t tmpfs failed: {status}"));
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes zeros to `path` until the disk is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_is_waited_out_and_caught_up() {
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root {
        eprintln!("skipped: mounting a small tmpfs to fill needs root");
        return;
    }
    let disk = match Tmpfs::mount("4m") {
        Ok(disk) => disk,
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let mut db = TestDatabase::sqlite().await;
    db.url = format!("sqlite://{}?mode=rwc", disk.0.join("crmsyncd.db").display());
    let sim = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
    let ids = sim.seed("contacts", 20, None);
    let app = spawn_app(&db, &hubspot_connection("hs", &sim.base_url(), &["contacts"], ""), "").await;
    wait_for("the initial sync", Duration::from_secs(30), || async {
        app.handle.store.records("hs", "contacts").await.unwrap().len() == 20
    })
    .await;

    let filler = disk.0.join("filler");
    fill(&filler);
    // Big changes, so the writes need new pages.
    let big = "x".repeat(200_000);
    for id in &ids {
        sim.update("contacts", id, firstname(&format!("full-{id}-{big}")));
    }
    wait_for(
        "the actor to back off on the full disk",
        Duration::from_secs(20),
        || async { database_retries(&app).await >= 1.0 },
    )
    .await;
    assert!(!has_firstname(&app, &ids[0], &format!("full-{}-{big}", ids[0])).await);

    std::fs::remove_file(&filler).unwrap();
    for id in &ids {
        sim.update("contacts", id, firstname(&format!("freed-{id}")));
    }
    for id in &ids {
        let expected = format!("freed-{id}");
        wait_for(
            "the changes to arrive once space is free",
            Duration::from_secs(20),
            || has_firstname(&app, id, &expected),
        )
        .await;
    }
    assert!(ready(&app).await, "the daemon is still up and ready");
    app.stop().await.unwrap();
    sim.shutdown().await;
    drop(disk);
}
