//! Shared helpers for the integration tests: start the daemon in-process on a free port against simulators,
//! with a fresh database, and wait for conditions with a deadline.

#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use crmsyncd::testing::TestDatabase;
use crmsyncd::{AppHandle, Application, Config};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A daemon running in this process.
pub struct TestApp {
    pub handle: AppHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.base_url())
    }

    /// Stops the daemon as SIGTERM would and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A free local port (bound then released; the daemon binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A credentials key (32 bytes, base64) for tests whose connections use OAuth.
pub const CREDENTIALS_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// Starts the daemon on `db` with `connections` (TOML `[[connection]]` tables) and `http_extra` lines in `[http]`.
/// Restart backoff is short so supervision tests finish quickly.
pub async fn spawn_app(db: &TestDatabase, connections: &str, http_extra: &str) -> TestApp {
    spawn_app_with_database(db, connections, http_extra, "").await
}

/// [`spawn_app`] with `database_extra` lines in `[database]` (e.g. `credentials_key` for OAuth connections).
pub async fn spawn_app_with_database(
    db: &TestDatabase,
    connections: &str,
    http_extra: &str,
    database_extra: &str,
) -> TestApp {
    let port = free_port();
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
{http_extra}

[database]
url = "{url}"
{database_extra}

[supervisor]
min_backoff = "100ms"
max_backoff = "2s"
max_restarts = 5
healthy_after = "60s"
shutdown_grace = "5s"

{connections}
"#,
        url = db.url
    );
    let config = Config::parse(&text, Path::new("test.toml"), &|_| None).unwrap_or_else(|e| panic!("{e}"));
    start(config).await
}

pub async fn start(config: Config) -> TestApp {
    // Logs are captured per test and shown only when it fails.
    crmsyncd::telemetry::init();
    let app = Application::build(config).await.expect("the daemon builds");
    let handle = app.handle();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        handle,
        stop: Some(tx),
        task: Some(task),
    }
}

/// `POST {url}` (a `/v1/connections/{id}/writes` URL) with the bearer `token` and `Idempotency-Key: key`: the
/// status and the JSON answer.
pub async fn post_write(client: &reqwest::Client, url: &str, token: &str, key: &str, body: &Value) -> (u16, Value) {
    let response = client
        .post(url)
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `GET /v1/writes/{id}` with the bearer `token`.
pub async fn get_write(client: &reqwest::Client, app: &TestApp, token: &str, id: i64) -> Value {
    client
        .get(app.url(&format!("/v1/writes/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `check` until it returns true or `timeout` passes; panics with `what` on timeout.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` until it returns Ok or `timeout` passes; on timeout panics with the last mismatch it reported.
pub async fn wait_until_ok<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let outcome = check().await;
        let Err(last) = outcome else { return };
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}; last mismatch: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `[[connection]]` table for a HubSpot simulator.
pub fn hubspot_connection(id: &str, base_url: &str, objects: &[&str], extra: &str) -> String {
    let objects: Vec<String> = objects.iter().map(|o| format!("\"{o}\"")).collect();
    format!(
        r#"
[[connection]]
id = "{id}"
provider = "hubspot"
base_url = "{base_url}"
access_token = "hs-test-token"
webhook_secret = "hs-test-secret"
objects = [{objects}]
poll_interval = "200ms"
rate_limit = {{ requests = 1000, per = "1s" }}
overlap = "2s"
archived_poll_interval = "1s"
request_timeout = "2s"
connect_timeout = "1s"
retry_backoff = {{ min = "50ms", max = "1s" }}
{extra}
"#,
        objects = objects.join(", ")
    )
}

/// A `[[connection]]` table for an Odoo simulator.
pub fn odoo_connection(id: &str, base_url: &str, models: &[&str], extra: &str) -> String {
    let models: Vec<String> = models.iter().map(|o| format!("\"{o}\"")).collect();
    format!(
        r#"
[[connection]]
id = "{id}"
provider = "odoo"
base_url = "{base_url}"
database = "sim"
username = "api@example.com"
api_key = "odoo-test-key"
models = [{models}]
webhook_token = "odoo-hook-token"
poll_interval = "200ms"
rate_limit = {{ requests = 1000, per = "1s" }}
overlap = "5s"
request_timeout = "2s"
connect_timeout = "1s"
retry_backoff = {{ min = "50ms", max = "1s" }}
{extra}
"#,
        models = models.join(", ")
    )
}

/// Runs `test` once per test database (SQLite, and PostgreSQL when reachable), cleaning each up.
pub async fn on_each_database<F, Fut>(test: F)
where
    F: Fn(TestDatabase) -> Fut,
    Fut: Future<Output = TestDatabase>,
{
    for db in TestDatabase::all().await {
        let backend = db.backend;
        eprintln!("--- on {backend}");
        let db = test(db).await;
        db.cleanup().await;
    }
}
