//! Every answer of the webhook endpoint, and proof that nothing refused is stored.

mod support;

use std::time::Duration;

use crmsyncd_entities::webhook_events;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig, sign_v3};
use sea_orm::{EntityTrait, PaginatorTrait};
use support::{hubspot_connection, on_each_database, spawn_app, wait_for};

const SECRET: &str = "hs-test-secret";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A signed v3 request for `url` (the exact URL signed, as HubSpot does).
fn signed(client: &reqwest::Client, url: &str, body: &str, ts: i64, secret: &str) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header(
            "x-hubspot-signature-v3",
            sign_v3(secret, "POST", url, body.as_bytes(), ts),
        )
        .header("x-hubspot-request-timestamp", ts.to_string())
        .body(body.to_string())
}

/// Sends `chunks` chunks of `size` bytes with `Transfer-Encoding: chunked` (no Content-Length) and returns the
/// status code of the answer.
async fn chunked_post(addr: std::net::SocketAddr, path: &str, chunks: usize, size: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head =
        format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..chunks {
        let chunk = format!("{size:x}\r\n{}\r\n", "x".repeat(size));
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break; // the server may answer and close before the body ends
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_webhook_answer_matches_the_table_and_refusals_store_nothing() {
    on_each_database(|db| async move {
        let sim = HubSpotSim::start(HubSpotSimConfig::default()).await.unwrap();
        sim.seed("contacts", 3, None);
        let app = spawn_app(
            &db,
            &hubspot_connection("hs", &sim.base_url(), &["contacts"], ""),
            "max_body_bytes = 2048",
        )
        .await;
        let url = app.url("/webhooks/hs");
        let client = reqwest::Client::new();
        let stored = || async { webhook_events::Entity::find().count(app.handle.store.db()).await.unwrap() };
        let good = r#"[{"eventId":1001,"subscriptionId":1,"portalId":1,"appId":1,"occurredAt":1,"subscriptionType":"contact.propertyChange","attemptNumber":0,"objectId":1,"propertyName":"firstname","propertyValue":"x","changeSource":"CRM"}]"#;

        // Unknown connection: 404.
        let r = signed(&client, &app.url("/webhooks/nope"), good, now_ms(), SECRET).send().await.unwrap();
        assert_eq!(r.status(), 404);
        // Wrong method: 405.
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 405);
        // Missing signature: 401.
        let r = client.post(&url).body(good).send().await.unwrap();
        assert_eq!(r.status(), 401);
        // Wrong secret: 401.
        let r = signed(&client, &url, good, now_ms(), "not-the-secret").send().await.unwrap();
        assert_eq!(r.status(), 401);
        // Signed for another URL (another connection's): 401.
        let other = app.url("/webhooks/other");
        let r = client
            .post(&url)
            .header("x-hubspot-signature-v3", sign_v3(SECRET, "POST", &other, good.as_bytes(), now_ms()))
            .header("x-hubspot-request-timestamp", now_ms().to_string())
            .body(good)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        // Stale timestamp (a replay from six minutes ago), correctly signed: 401.
        let r = signed(&client, &url, good, now_ms() - 6 * 60 * 1000, SECRET).send().await.unwrap();
        assert_eq!(r.status(), 401);
        // Over the size limit with Content-Length: 413.
        let big = "x".repeat(4096);
        let r = signed(&client, &url, &big, now_ms(), SECRET).send().await.unwrap();
        assert_eq!(r.status(), 413);
        // Over the size limit, chunked without Content-Length: 413.
        assert_eq!(chunked_post(app.handle.addr, "/webhooks/hs", 8, 512).await, 413);
        // Valid signature, malformed body: 400.
        let r = signed(&client, &url, r#"{"not":"an array"}"#, now_ms(), SECRET).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(stored().await, 0, "nothing refused was stored");

        // Valid: 200, stored before the answer.
        let r = signed(&client, &url, good, now_ms(), SECRET).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(stored().await, 1, "the event was committed before the 200");
        // Redelivery: 200, not stored again.
        let r = signed(&client, &url, good, now_ms(), SECRET).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(stored().await, 1, "a redelivered event is not stored twice");

        let metrics = client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        for outcome in ["accepted", "duplicate", "unauthorized", "malformed", "too_large", "unknown_connection"] {
            assert!(
                metrics.contains(&format!("outcome=\"{outcome}\"")),
                "outcome {outcome} counted in:\n{metrics}"
            );
        }

        // Database unavailable: 503 and /readyz fails; nothing is acknowledged.
        app.handle.store.close().await;
        let second = good.replace("1001", "1002");
        let r = signed(&client, &url, &second, now_ms(), SECRET).send().await.unwrap();
        assert_eq!(r.status(), 503);
        let ready = client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503);
        let health = client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200, "the process is alive even when the database is not");
        app.stop().await.unwrap();
        sim.shutdown().await;
        db
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_ok_when_database_and_supervisor_are_up() {
    let db = crmsyncd::testing::TestDatabase::sqlite().await;
    let app = spawn_app(&db, "", "").await;
    let client = reqwest::Client::new();
    wait_for("readyz", Duration::from_secs(10), || async {
        client
            .get(app.url("/readyz"))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
    app.stop().await.unwrap();
}
