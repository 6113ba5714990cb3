//! A short fault storm (the `storm` command runs long ones): converges, stays under the limit, backs off.

use std::time::Duration;

use crmsyncd_faults::storm::{StormConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_fault_storm_converges_within_the_rate_limit_with_backoff_and_spares_the_neighbour() {
    let report = run(&StormConfig {
        storm: Duration::from_secs(8),
        baseline: Duration::from_secs(3),
        storm_connections: 2,
        records: 100,
        postgres: false,
    })
    .await
    .unwrap();
    eprintln!("{report:#?}");
    assert!(report.passed(), "{:?}", report.violations);
    assert!(report.failures_injected > 0, "the storm injected failures");
}
