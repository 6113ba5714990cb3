//! The endpoint's own protections: a client that never finishes its request head is cut off.

mod support;

use std::time::{Duration, Instant};

use support::spawn_app;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_head_is_cut_off_after_the_header_read_timeout() {
    let db = crmsyncd::testing::TestDatabase::sqlite().await;
    let app = spawn_app(&db, "", "header_read_timeout = \"500ms\"").await;
    let mut stream = tokio::net::TcpStream::connect(app.handle.addr).await.unwrap();
    // Half a request head, then nothing (slowloris).
    stream
        .write_all(b"POST /webhooks/x HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the daemon closed the connection");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "not before the timeout"
    );
    // The daemon still serves others.
    let health = reqwest::get(app.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_until_one_closes() {
    let db = crmsyncd::testing::TestDatabase::sqlite().await;
    let app = spawn_app(&db, "", "max_connections = 2\nheader_read_timeout = \"30s\"").await;
    // Two connections hold both places without finishing a request.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(app.handle.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    // Give the daemon time to accept both: proof that it has is the third request not being answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = app.url("/healthz");
    let third = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !third.is_finished(),
        "a third connection is not served while two hold the cap"
    );
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(20), third)
        .await
        .expect("served once a place frees up")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    drop(held);
    app.stop().await.unwrap();
}
