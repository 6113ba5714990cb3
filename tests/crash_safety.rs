//! The crash harness, short: the real binary under pull, webhook and push load, killed with SIGKILL three times
//! at random moments, then compared with the simulators' truth. The full run is
//! `cargo run -p crmsyncd-crash --release -- --db sqlite|postgres --kills 50` (docs/RELIABILITY.md).

use std::path::PathBuf;
use std::time::Duration;

use crmsyncd::testing::TestDatabase;
use crmsyncd_crash::{Backend, Options, run};

fn short(backend: Backend) -> Options {
    Options {
        backend,
        kills: 3,
        binary: PathBuf::from(env!("CARGO_BIN_EXE_crmsyncd")),
        min_uptime: Duration::from_millis(500),
        max_uptime: Duration::from_millis(2_000),
        seed: 200,
        converge_timeout: Duration::from_secs(60),
    }
}

async fn lose_nothing(backend: Backend) {
    let report = run(&short(backend)).await.unwrap();
    eprint!("{report}");
    assert!(report.problems.is_empty(), "lost or wrong after SIGKILLs:\n{report}");
    assert!(report.records_compared > 0 && report.webhooks_acknowledged > 0 && report.writes_acknowledged > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sigkills_under_load_lose_nothing_on_sqlite() {
    lose_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sigkills_under_load_lose_nothing_on_postgres() {
    let Some(probe) = TestDatabase::postgres().await else {
        eprintln!("PostgreSQL is not reachable; skipped");
        return;
    };
    probe.cleanup().await;
    lose_nothing(Backend::Postgres).await;
}
