//! A short database outage (the `outage` command runs long ones). Needs PostgreSQL: skipped with a message when
//! it is unreachable, unless `CRMSYNCD_REQUIRE_POSTGRES=1`.

use std::time::Duration;

use crmsyncd::testing::TestDatabase;
use crmsyncd_faults::outage::{OutageConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_answers_503_pauses_actors_and_resumes_within_5s_losing_nothing() {
    let Some(probe) = TestDatabase::postgres().await else {
        eprintln!("skipped: PostgreSQL is not reachable");
        return;
    };
    probe.cleanup().await;
    let report = run(&OutageConfig {
        outage: Duration::from_secs(5),
        records: 50,
    })
    .await
    .unwrap();
    eprintln!("{report:#?}");
    assert!(report.passed(), "{:?}", report.violations);
}
