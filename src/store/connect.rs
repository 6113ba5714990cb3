//! Opening the database: pool sizes, timeouts and the SQLite pragmas crmsyncd relies on.

use std::path::Path;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};

use super::StoreError;

/// Pool and timeout settings. [`Default`] suits the daemon; tests and tools may shrink them.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Pool size; `None` picks per backend (4 for a SQLite file, 1 for in-memory SQLite, 16 for PostgreSQL).
    pub max_connections: Option<u32>,
    /// How long to wait to open a connection or get one from the pool before failing (transiently).
    pub acquire_timeout: Duration,
    /// How long a SQLite statement waits on another connection's lock before failing with SQLITE_BUSY.
    pub sqlite_busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: None,
            acquire_timeout: Duration::from_secs(5),
            sqlite_busy_timeout: Duration::from_secs(5),
        }
    }
}

pub(super) async fn open(url: &str, options: &StoreOptions) -> Result<DatabaseConnection, StoreError> {
    let mut connect = ConnectOptions::new(url);
    connect
        .connect_timeout(options.acquire_timeout)
        .acquire_timeout(options.acquire_timeout)
        // sqlx logs every statement at info level; that would drown the daemon's own log lines.
        .sqlx_logging(false);

    if url.starts_with("sqlite:") {
        let parsed: SqliteConnectOptions = url.parse().map_err(|e| StoreError::InvalidUrl(format!("{url}: {e}")))?;
        let busy_timeout = options.sqlite_busy_timeout;
        if is_in_memory(url) {
            // Every connection would otherwise see its own empty database, and the database vanishes when the
            // last connection closes: keep exactly one, forever.
            connect
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
            connect.map_sqlx_sqlite_opts(move |o| o.busy_timeout(busy_timeout).foreign_keys(true));
        } else {
            create_parent_dir(parsed.get_filename())?;
            connect.max_connections(options.max_connections.unwrap_or(4));
            connect.map_sqlx_sqlite_opts(move |o| {
                // WAL lets readers run while one writer commits; NORMAL is durable across application crashes
                // (only a power loss can drop the last commits) and much faster than FULL under WAL.
                o.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(busy_timeout)
                    .foreign_keys(true)
            });
        }
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        connect
            .max_connections(options.max_connections.unwrap_or(16))
            .min_connections(1)
            .set_application_name("crmsyncd");
        // sqlx keeps statements prepared, and after five runs PostgreSQL may switch one to a generic plan made
        // without the parameters' values: the page lookup `remote_id IN (...)` then stopped using the index as
        // the table grew, and a pull slowed to about a thousand rows a second (docs/BENCHMARKS.md, pull).
        // Planning each statement for its own values costs far less than that.
        connect.map_sqlx_postgres_opts(|o| o.options([("plan_cache_mode", "force_custom_plan")]));
    } else {
        let scheme = url.split(':').next().unwrap_or_default();
        return Err(StoreError::InvalidUrl(format!(
            "unsupported scheme {scheme:?}: use sqlite:// or postgres://"
        )));
    }

    Ok(Database::connect(connect).await?)
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

fn create_parent_dir(file: &Path) -> Result<(), StoreError> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })
        }
        _ => Ok(()),
    }
}
