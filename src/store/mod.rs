//! The storage layer: synced records and their change order, pull cursors, the webhook inbox and the write
//! outbox, over sea-orm on SQLite (embedded default) or PostgreSQL. The same code and migrations serve both.
//!
//! Every multi-statement write runs in one transaction that, on SQLite, starts with `BEGIN IMMEDIATE`: a
//! deferred transaction that reads and then writes can fail with SQLITE_BUSY without waiting (its snapshot is
//! stale once another writer commits), while an immediate one takes the write lock up front and waits for it
//! under the busy timeout.

mod connect;
mod credentials;
mod cursors;
mod error;
mod group_commit;
mod hash;
mod outbox;
mod records;
mod statistics;
mod webhooks;

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbBackend, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

pub use connect::StoreOptions;
pub use error::{StoreError, is_transient_db_error};
pub use group_commit::InboxWriter;
pub use hash::{canonical_json, content_hash};
pub use outbox::{Enqueued, NewWrite, OutboxCounts, request_hash};
pub use records::PageOutcome;
use statistics::GrowthTracker;
pub use webhooks::{InboxOutcome, NewWebhookEvent, WebhookBatch};

/// Rows per statement for batched inserts, updates and `IN (...)` lists: far below SQLite's (32766) and
/// PostgreSQL's (65535) bind-parameter limits even at 10 parameters a row.
const BATCH: usize = 500;

/// A handle on the database. Cheap to clone: it wraps sea-orm's pooled [`DatabaseConnection`].
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// Shared by clones: when to refresh the planner's statistics (see `statistics.rs`).
    growth: Arc<GrowthTracker>,
}

impl Store {
    /// Opens a pool on `url` (`sqlite://path/to/file.db`, `sqlite::memory:` or `postgres://...`) with the default
    /// [`StoreOptions`]. A SQLite file and its directory are created if missing.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Self::connect_with(url, &StoreOptions::default()).await
    }

    /// [`Store::connect`] with explicit pool and timeout settings.
    pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        Ok(Store::from_connection(connect::open(url, options).await?))
    }

    /// Wraps an existing connection (e.g. one a test or tool opened itself).
    pub fn from_connection(db: DatabaseConnection) -> Store {
        Store {
            db,
            growth: Arc::default(),
        }
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Ok(Migrator::up(&self.db, None).await?)
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }

    /// The underlying connection, for queries the store has no method for.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Closes the pool, waiting for connections in use to be returned. Later calls fail with a transient error.
    pub async fn close(&self) {
        if let Err(e) = self.db.close_by_ref().await {
            tracing::warn!(error = %e, "Database pool did not close cleanly.");
        }
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE` on SQLite; see the module docs).
    async fn begin_write(&self) -> Result<DatabaseTransaction, StoreError> {
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        Ok(self.db.begin_with_options(options).await?)
    }
}

/// `t` at the precision both backends store (PostgreSQL keeps microseconds). Values are cut before they are
/// written or compared, so a timestamp read back equals the one written and an unchanged record stays unchanged.
pub(crate) fn db_time(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// The current time at database precision.
pub(crate) fn now() -> DateTime<Utc> {
    db_time(Utc::now())
}
