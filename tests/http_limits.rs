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
