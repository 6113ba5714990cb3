//! Test databases: a fresh SQLite file in a temporary directory, and a fresh PostgreSQL database when a server is
//! reachable. Every test gets its own, so tests can run in parallel.
//!
//! PostgreSQL is found at `postgres://postgres@127.0.0.1:5432/test` unless `CRMSYNCD_TEST_POSTGRES_URL` says
//! otherwise. With `CRMSYNCD_REQUIRE_POSTGRES=1` (set in CI) an unreachable server fails the test instead of being
//! skipped silently.

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use tempfile::TempDir;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const POSTGRES_URL_ENV: &str = "CRMSYNCD_TEST_POSTGRES_URL";
const REQUIRE_POSTGRES_ENV: &str = "CRMSYNCD_REQUIRE_POSTGRES";

/// A database for one test. Keep it alive for the test's duration; call [`TestDatabase::cleanup`] at the end.
#[derive(Debug)]
pub struct TestDatabase {
    /// The URL to give [`crate::store::Store::connect`] (or the daemon's config).
    pub url: String,
    /// `"sqlite"` or `"postgres"`.
    pub backend: &'static str,
    /// Keeps a SQLite database's directory until the struct is dropped.
    _dir: Option<TempDir>,
    /// For PostgreSQL: the server URL to drop the database through, and the database's name.
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// A SQLite database, plus a PostgreSQL one when a server answers within about two seconds.
    pub async fn all() -> Vec<TestDatabase> {
        let mut databases = vec![Self::sqlite().await];
        databases.extend(Self::postgres().await);
        databases
    }

    /// A SQLite database file in a fresh temporary directory (the file is created on first connect).
    pub async fn sqlite() -> TestDatabase {
        let dir = tempfile::Builder::new()
            .prefix("crmsyncd-test-")
            .tempdir()
            .expect("creating a temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("crmsyncd.db").display());
        TestDatabase {
            url,
            backend: "sqlite",
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A fresh, empty PostgreSQL database `crmsyncd_t_<random hex>`, or `None` if no server answers (a panic
    /// instead when `CRMSYNCD_REQUIRE_POSTGRES=1`).
    pub async fn postgres() -> Option<TestDatabase> {
        let server = std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        Self::postgres_at(&server).await
    }

    /// As [`TestDatabase::postgres`], on the server at `server` (a URL whose path names a database to connect to
    /// while creating the new one; its query, such as `host=/var/run/postgresql` for a Unix socket, is kept).
    pub async fn postgres_at(server: &str) -> Option<TestDatabase> {
        let server = server.to_owned();
        let required = std::env::var(REQUIRE_POSTGRES_ENV).is_ok_and(|v| v == "1");
        let admin = match connect_admin(&server).await {
            Ok(admin) => admin,
            Err(e) if required => panic!(
                "{REQUIRE_POSTGRES_ENV}=1 but PostgreSQL at {server} is unreachable ({e}); \
                 start it or point {POSTGRES_URL_ENV} at one"
            ),
            Err(_) => return None,
        };
        let name = format!("crmsyncd_t_{:016x}", rand::random::<u64>());
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("creating test database {name} on {server}: {e}"));
        let _ = admin.close().await;

        let mut url = url::Url::parse(&server).unwrap_or_else(|e| panic!("{POSTGRES_URL_ENV} {server:?}: {e}"));
        url.set_path(&format!("/{name}"));
        Some(TestDatabase {
            url: url.into(),
            backend: "postgres",
            _dir: None,
            postgres: Some((server, name)),
        })
    }

    /// Drops a PostgreSQL database (best effort; connections still open are cut). A SQLite directory goes when
    /// the struct is dropped.
    pub async fn cleanup(mut self) {
        if let Some((server, name)) = self.postgres.take() {
            drop_database(&server, &name).await;
        }
    }
}

impl Drop for TestDatabase {
    /// A test that panics never reaches [`TestDatabase::cleanup`]; drop its PostgreSQL database anyway, on a
    /// thread with its own runtime because `drop` cannot await.
    fn drop(&mut self) {
        if let Some((server, name)) = self.postgres.take() {
            let _ = std::thread::spawn(move || {
                if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    runtime.block_on(drop_database(&server, &name));
                }
            })
            .join();
        }
    }
}

async fn drop_database(server: &str, name: &str) {
    if let Ok(admin) = connect_admin(server).await {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
        let _ = admin.close().await;
    }
}

async fn connect_admin(url: &str) -> Result<DatabaseConnection, String> {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(1)
        .connect_timeout(Duration::from_secs(2))
        .acquire_timeout(Duration::from_secs(2))
        .sqlx_logging(false);
    match tokio::time::timeout(Duration::from_millis(2500), Database::connect(options)).await {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2.5 s".into()),
    }
}
