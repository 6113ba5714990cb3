//! The databases a benchmark can run on. PostgreSQL is measured over TCP and over its Unix socket: the two differ
//! where the client's socket options matter (Nagle's algorithm and delayed ACKs on TCP).

use crmsyncd::testing::TestDatabase;

/// PostgreSQL over TCP, as the test suite finds it.
const POSTGRES_TCP: &str = "postgres://postgres@127.0.0.1:5432/test";
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

    /// A fresh, empty database of this kind.
    pub async fn fresh(self) -> anyhow::Result<TestDatabase> {
        let server = match self {
            Db::Sqlite => return Ok(TestDatabase::sqlite().await),
            Db::Postgres => POSTGRES_TCP,
            Db::PostgresSocket => POSTGRES_SOCKET,
        };
        TestDatabase::postgres_at(server)
            .await
            .ok_or_else(|| anyhow::anyhow!("PostgreSQL is not reachable at {server}"))
    }
}
