//! The databases a benchmark can run on. PostgreSQL is measured over TCP and over its Unix socket: the two differ
//! where the client's socket options matter (Nagle's algorithm and delayed ACKs on TCP).

use crmsyncd::testing::TestDatabase;

/// The same server through its Unix socket (Debian's default directory).
const POSTGRES_SOCKET: &str = "postgres://postgres@localhost/test?host=/var/run/postgresql";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
    PostgresSocket,
}

impl Db {
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        match name {
            "sqlite" => Ok(Db::Sqlite),
            "postgres" => Ok(Db::Postgres),
            "postgres-socket" => Ok(Db::PostgresSocket),
            other => anyhow::bail!("--db: unknown database {other:?}; expected sqlite, postgres or postgres-socket"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Db::Sqlite => "sqlite",
            Db::Postgres => "postgres",
            Db::PostgresSocket => "postgres-socket",
        }
    }

    /// A fresh, empty database of this kind.
    pub async fn fresh(self) -> anyhow::Result<TestDatabase> {
        let database = match self {
            Db::Sqlite => return Ok(TestDatabase::sqlite().await),
            // Over TCP, where the test suite finds it (`CRMSYNCD_TEST_POSTGRES_URL` or 127.0.0.1:5432).
            Db::Postgres => TestDatabase::postgres().await,
            Db::PostgresSocket => TestDatabase::postgres_at(POSTGRES_SOCKET).await,
        };
        database.ok_or_else(|| anyhow::anyhow!("PostgreSQL ({}) is not reachable", self.name()))
    }
}
