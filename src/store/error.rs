//! The store's error type, and the one place that decides which database failures are transient.

use std::path::PathBuf;

use sea_orm::{DbErr, RuntimeErr, sqlx};

/// A storage failure. Callers branch on [`StoreError::is_transient`]: a transient failure (database down, busy,
/// locked, pool exhausted) means "try again later" (a webhook answers 503, an actor backs off); anything else is a
/// bug or a configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached, or was too busy to answer in time.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] DbErr),
    /// The database answered with an error that retrying will not fix.
    #[error("database error: {0}")]
    Database(#[source] DbErr),
    /// The database URL is not one crmsyncd can use.
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    /// The directory for a SQLite database file could not be created.
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database is not in the state the migrations leave it in (e.g. the change counter row is missing).
    #[error("unexpected database state: {0}")]
    Inconsistent(String),
    /// The inbox's group-commit writer has stopped (the daemon is shutting down); nothing was stored.
    #[error("the inbox writer has stopped")]
    WriterGone,
    /// The database did not answer within the time the caller could wait (a webhook cannot hold the CRM for long).
    #[error("database did not answer within {0:?}")]
    TimedOut(std::time::Duration),
}

impl StoreError {
    /// True when retrying later may succeed: the database is unreachable, busy, locked, or the pool timed out.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::WriterGone | StoreError::TimedOut(_)
        )
    }
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        if is_transient_db_error(&err) {
            StoreError::Unavailable(err)
        } else {
            StoreError::Database(err)
        }
    }
}

/// Classifies a database error as transient (worth retrying later) or not. This is the only place that decides.
pub fn is_transient_db_error(err: &DbErr) -> bool {
    match err {
        // Pool timed out or closed.
        DbErr::ConnectionAcquire(_) => true,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => is_transient_sqlx_error(e),
        _ => false,
    }
}

fn is_transient_sqlx_error(err: &sqlx::Error) -> bool {
    match err {
        // Refused, reset, closed mid-query; pool exhausted or shut down; SQLite worker thread gone.
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Extended result codes keep the primary code in the low byte: SQLITE_BUSY (5) covers
                // BUSY_SNAPSHOT, BUSY_RECOVERY, BUSY_TIMEOUT; SQLITE_LOCKED (6) covers LOCKED_SHAREDCACHE.
                // SQLITE_FULL (13), a full disk, clears when space is freed: the daemon must wait, not crash.
                matches!(code.parse::<i32>().map(|c| c & 0xff), Ok(5 | 6 | 13))
            } else if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
                is_transient_sqlstate(code)
            } else {
                false
            }
        }
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs that mean "not now" rather than "never".
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources (too many connections, out of memory, disk full)
        || code.starts_with("57") // operator intervention: shutdown, cannot connect now, statement timeout
        || matches!(code, "40001" | "40P01" | "55P03") // serialization failure, deadlock, lock not available
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sea_orm::ConnAcquireErr;

    use super::*;

    fn sqlx_err(e: sqlx::Error) -> Arc<sqlx::Error> {
        Arc::new(e)
    }

    #[test]
    fn unreachable_or_exhausted_database_is_transient() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let transient = [
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            DbErr::Conn(RuntimeErr::SqlxError(sqlx_err(sqlx::Error::Io(refused)))),
            DbErr::Query(RuntimeErr::SqlxError(sqlx_err(sqlx::Error::PoolTimedOut))),
            DbErr::Exec(RuntimeErr::SqlxError(sqlx_err(sqlx::Error::PoolClosed))),
        ];
        for err in transient {
            assert!(is_transient_db_error(&err), "{err} should be transient");
            assert!(StoreError::from(err).is_transient());
        }
    }

    #[test]
    fn logic_and_data_errors_are_not_transient() {
        let permanent = [
            DbErr::RecordNotFound("x".into()),
            DbErr::Custom("x".into()),
            DbErr::Query(RuntimeErr::SqlxError(sqlx_err(sqlx::Error::RowNotFound))),
            DbErr::Conn(RuntimeErr::Internal("bad url".into())),
        ];
        for err in permanent {
            assert!(!is_transient_db_error(&err), "{err} should not be transient");
            assert!(!StoreError::from(err).is_transient());
        }
        assert!(!StoreError::InvalidUrl("mysql://".into()).is_transient());
    }

    /// A real SQLITE_FULL from SQLite itself: `max_page_count` makes a database "full" without filling a disk.
    #[tokio::test]
    async fn sqlite_disk_full_is_transient() {
        use sea_orm::{ConnectionTrait, Database};
        let db = Database::connect("sqlite::memory:").await.unwrap();
        db.execute_unprepared("CREATE TABLE t (x BLOB)").await.unwrap();
        db.execute_unprepared("PRAGMA max_page_count = 4").await.unwrap();
        let err = db
            .execute_unprepared("INSERT INTO t VALUES (randomblob(1000000))")
            .await
            .expect_err("the database is full");
        assert!(err.to_string().contains("full"), "{err}");
        assert!(is_transient_db_error(&err), "{err} should be transient");
        assert!(StoreError::from(err).is_transient());
    }

    #[test]
    fn postgres_sqlstates_for_contention_and_outages_are_transient() {
        for code in [
            "08006", "08001", "53300", "57P01", "57P03", "57014", "40001", "40P01", "55P03",
        ] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "23503", "42P01", "28P01", "22P02"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
    }
}
