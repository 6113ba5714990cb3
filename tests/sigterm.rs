//! SIGTERM to the real binary under webhook and pull load: it stops accepting, answers the webhooks in flight,
//! commits its cursors and exits 0 within the grace period (`supervisor.shutdown_grace`, default 10 s), and that
//! grace period is one budget for every stage, not one per stage.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crmsyncd::store::Store;
use crmsyncd::testing::TestDatabase;
use crmsyncd_entities::webhook_events;
use crmsyncd_sim::Faults;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig, SignatureVersion, sign_v3};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use support::{free_port, hubspot_connection, on_each_database, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts the binary with one HubSpot connection "hs"; `supervisor` lines go in `[supervisor]`.
fn spawn_daemon(dir: &std::path::Path, db: &TestDatabase, port: u16, connection: &str, supervisor: &str) -> Child {
    let config = dir.join("crmsyncd.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\n[database]\nurl = \"{}\"\n\n[supervisor]\n{supervisor}\n{connection}",
            db.url
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_crmsyncd"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn sigterm(daemon: &Child) {
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits for the process to exit (at most `limit`); its status and how long that took.
async fn wait_exit(daemon: &mut Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = daemon.kill();
            panic!("the daemon did not exit within {limit:?} of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A signed HubSpot webhook request for one event, sent over a raw socket up to half its body: in flight.
async fn half_sent_webhook(sim: &HubSpotSim, port: u16, object_id: &str) -> (TcpStream, Vec<u8>, String) {
    let event = sim.event("contact.propertyChange", object_id);
    let event_id = event["eventId"].to_string().trim_matches('"').to_string();
    let body = serde_json::to_vec(&[event]).unwrap();
    let uri = format!("http://127.0.0.1:{port}/webhooks/hs");
    let ts = chrono::Utc::now().timestamp_millis();
    let head = format!(
        "POST /webhooks/hs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-HubSpot-Signature-v3: {}\r\nX-HubSpot-Request-Timestamp: {ts}\r\n\r\n",
        body.len(),
        sign_v3("hs-test-secret", "POST", &uri, &body, ts)
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let half = body.len() / 2;
    stream.write_all(&body[..half]).await.unwrap();
    stream.flush().await.unwrap();
    (stream, body[half..].to_vec(), event_id)
}

async fn ready(port: u16) -> bool {
    reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn inbox(store: &Store) -> Vec<String> {
    webhook_events::Entity::find()
        .filter(webhook_events::Column::ConnectionId.eq("hs"))
        .all(store.db())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_stops_accepting_answers_in_flight_webhooks_commits_cursors_and_exits_0() {
    on_each_database(|db| async move {
        let sim = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
        let ids = sim.seed("contacts", 300, None);
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // No shutdown_grace: the default (10 s) applies.
        let connection = hubspot_connection("hs", &sim.base_url(), &["contacts"], "page_size = 20");
        let mut daemon = spawn_daemon(dir.path(), &db, port, &connection, "");
        wait_for("the daemon to be ready", Duration::from_secs(30), || ready(port)).await;

        // Load: churn with its webhooks, remembering which the daemon acknowledged.
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
        let load = tokio::spawn({
            let (sim, stop, acknowledged) = (sim.clone(), stop.clone(), acknowledged.clone());
            let url = format!("http://127.0.0.1:{port}/webhooks/hs");
            async move {
                while !stop.load(Ordering::Acquire) {
                    let events = sim.churn_once(3, &["contacts".to_string()]);
                    if let Ok(status) = sim.send_webhook(&url, &events, SignatureVersion::V3).await
                        && status.is_success()
                    {
                        let mut acked = acknowledged.lock().unwrap();
                        acked.extend(
                            events
                                .iter()
                                .map(|e| e["eventId"].to_string().trim_matches('"').to_string()),
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        let store = Store::connect(&db.url).await.unwrap();
        wait_for("some pages and webhooks", Duration::from_secs(30), || async {
            store.cursor("hs", "contacts").await.unwrap().is_some() && acknowledged.lock().unwrap().len() > 10
        })
        .await;

        let (mut in_flight, rest, in_flight_id) = half_sent_webhook(&sim, port, &ids[0]).await;
        let signalled = Instant::now();
        sigterm(&daemon);
        wait_for("new connections to be refused", Duration::from_secs(5), || async {
            TcpStream::connect(("127.0.0.1", port)).await.is_err()
        })
        .await;
        in_flight.write_all(&rest).await.unwrap();
        let mut answer = Vec::new();
        in_flight.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 2"),
            "the webhook in flight is answered 2xx: {answer}"
        );

        let (status, _) = wait_exit(&mut daemon, Duration::from_secs(30)).await;
        let took = signalled.elapsed();
        stop.store(true, Ordering::Release);
        load.await.unwrap();
        assert!(
            status.success(),
            "SIGTERM ends the daemon with status 0, got {status:?}"
        );
        assert!(
            took < Duration::from_secs(10),
            "exited {took:?} after SIGTERM; the default grace is 10 s"
        );

        let stored = inbox(&store).await;
        assert!(
            stored.contains(&in_flight_id),
            "the in-flight webhook's event was stored"
        );
        for id in acknowledged.lock().unwrap().iter() {
            assert!(stored.contains(id), "acknowledged event {id} is in the inbox");
        }
        // The cursor is committed with the page it follows: its record is stored, at or past it.
        let cursor = store
            .cursor("hs", "contacts")
            .await
            .unwrap()
            .expect("a committed cursor");
        let row = store
            .record("hs", "contacts", &cursor.id)
            .await
            .unwrap()
            .expect("the cursor's record is stored");
        assert!(
            row.remote_updated_at >= cursor.ts,
            "the cursor is not ahead of the data"
        );
        store.close().await;
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_grace_period_is_one_budget_for_every_stage() {
    on_each_database(|db| async move {
        let sim = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
        let ids = sim.seed("contacts", 50, None);
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let connection = hubspot_connection("hs", &sim.base_url(), &["contacts"], "")
            .replace("request_timeout = \"2s\"", "request_timeout = \"60s\"");
        let grace = Duration::from_secs(2);
        let mut daemon = spawn_daemon(dir.path(), &db, port, &connection, "shutdown_grace = \"2s\"");
        wait_for("the daemon to be ready", Duration::from_secs(30), || ready(port)).await;
        let store = Store::connect(&db.url).await.unwrap();
        wait_for("the first page", Duration::from_secs(30), || async {
            store.cursor("hs", "contacts").await.unwrap().is_some()
        })
        .await;
        store.close().await;
        // Both stages stuck: the CRM stops answering (a pull request hangs), and a webhook's body stops halfway.
        sim.set_faults(Faults {
            slow: 1.0,
            slow_delay: Duration::from_secs(120),
            ..Faults::none()
        });
        // Nothing observable marks a request the simulator is holding: give the 200 ms poll time to send one.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (_stalled, _, _) = half_sent_webhook(&sim, port, &ids[0]).await;

        let signalled = Instant::now();
        sigterm(&daemon);
        let (status, took) = wait_exit(&mut daemon, Duration::from_secs(30)).await;
        let took = took.max(signalled.elapsed());
        assert!(
            status.success(),
            "exit status 0 even when stages were cut short, got {status:?}"
        );
        assert!(
            took < grace + Duration::from_millis(1_500),
            "exited {took:?} after SIGTERM with a {grace:?} grace period: the stages must share one budget"
        );
        sim.shutdown().await;
        db
    })
    .await;
}
