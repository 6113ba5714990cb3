//! The CRM fault storm: some connections' simulators answer 30% 5xx, 10% 429 with Retry-After, 5% hangs past the
//! timeout, 1% truncated JSON and 1% connection resets, under record churn with webhooks, next to a healthy
//! neighbour. Checked: every connection converges to its simulator's truth; no simulator ever saw more requests
//! than the configured limit; retries after failures back off exponentially with jitter and honour Retry-After
//! (from the timestamps the simulators recorded); the neighbour's change latency (p50) is not slowed.

use std::time::{Duration, Instant};

use crmsyncd::testing::TestDatabase;
use crmsyncd_sim::faults::Faults;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig};
use crmsyncd_sim::request_log::RequestRecord;
use rand::seq::IndexedRandom;
use serde_json::{Map, Value};

use crate::daemon::{Daemon, hubspot_connection};
use crate::stats::{coefficient_of_variation, median, quantile};
use crate::truth::wait_converged;

/// The configured request limit of every connection, per second; the simulators enforce the same window.
pub const RATE_LIMIT: u32 = 20;
/// The storm connections' retry backoff.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The wait an injected 429 asks for.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Timer and scheduling slack allowed below a computed minimum gap.
const SLACK: Duration = Duration::from_millis(5);

/// The fault mix of the issue.
pub fn storm_faults() -> Faults {
    Faults {
        server_error: 0.30,
        rate_limited: 0.10,
        retry_after: RETRY_AFTER,
        slow: 0.05,
        // Past the connections' 1 s request timeout.
        slow_delay: Duration::from_secs(3),
        truncated_json: 0.01,
        connection_reset: 0.01,
    }
}

/// One storm run.
#[derive(Debug, Clone)]
pub struct StormConfig {
    /// How long the storm lasts.
    pub storm: Duration,
    /// How long the neighbour's latency is measured before the storm.
    pub baseline: Duration,
    /// How many connections are in the storm (each with its own simulator).
    pub storm_connections: usize,
    /// Contacts seeded in each simulator.
    pub records: usize,
    /// Run on PostgreSQL instead of SQLite.
    pub postgres: bool,
}

/// What one storm run measured.
#[derive(Debug, Default, Clone)]
pub struct StormReport {
    pub requests: usize,
    pub failures_injected: usize,
    pub rate_limited_injected: usize,
    pub excess_over_limit: u64,
    pub max_requests_in_any_second: usize,
    pub backoff_gaps_checked: usize,
    pub backoff_too_early: usize,
    pub retry_after_checked: usize,
    pub retry_after_too_early: usize,
    pub median_gap_ratio: f64,
    pub gap_ratio_samples: usize,
    pub first_retry_jitter_cv: f64,
    /// The first few retries that came too early: operation, status, gap, failures before it in the run.
    pub early_examples: Vec<String>,
    pub neighbour_p50_before: Duration,
    pub neighbour_p50_during: Duration,
    pub converged_after: Duration,
    /// Every check that failed; empty when the run passed.
    pub violations: Vec<String>,
}

impl StormReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs one storm and checks it.
pub async fn run(config: &StormConfig) -> anyhow::Result<StormReport> {
    let db = if config.postgres {
        TestDatabase::postgres()
            .await
            .ok_or_else(|| anyhow::anyhow!("PostgreSQL is not reachable"))?
    } else {
        TestDatabase::sqlite().await
    };
    let result = run_on(config, &db).await;
    db.cleanup().await;
    result
}

async fn start_sim(records: usize) -> anyhow::Result<HubSpotSim> {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        rate_limit: Some((RATE_LIMIT, Duration::from_secs(1))),
        ..HubSpotSimConfig::default()
    })
    .await?;
    sim.seed("contacts", records, None);
    Ok(sim)
}

async fn run_on(config: &StormConfig, db: &TestDatabase) -> anyhow::Result<StormReport> {
    let mut storms = Vec::new();
    for _ in 0..config.storm_connections {
        storms.push(start_sim(config.records).await?);
    }
    let calm = start_sim(config.records).await?;
    let backoff = (
        format!("{}ms", BACKOFF_MIN.as_millis()),
        format!("{}ms", BACKOFF_MAX.as_millis()),
    );
    let mut connections = hubspot_connection("calm", &calm.base_url(), "200ms", RATE_LIMIT, ("50ms", "1s"));
    for (i, sim) in storms.iter().enumerate() {
        connections.push_str(&hubspot_connection(
            &format!("storm-{i}"),
            &sim.base_url(),
            "200ms",
            RATE_LIMIT,
            (&backoff.0, &backoff.1),
        ));
    }
    let daemon = Daemon::start(&db.url, &connections).await?;
    let store = daemon.handle.store.clone();
    let mut report = StormReport::default();

    wait_converged(&calm, &store, "calm", Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)?;
    for (i, sim) in storms.iter().enumerate() {
        wait_converged(sim, &store, &format!("storm-{i}"), Duration::from_secs(60))
            .await
            .map_err(anyhow::Error::msg)?;
    }

    let before = probe_latencies(&calm, &store, config.baseline).await?;

    let storm_started = Instant::now();
    let mut churns = Vec::new();
    for (i, sim) in storms.iter().enumerate() {
        sim.set_faults(storm_faults());
        churns.push(sim.spawn_churn(
            Duration::from_millis(250),
            2,
            vec!["contacts".into()],
            Some(daemon.url(&format!("/webhooks/storm-{i}"))),
        ));
    }
    let during = probe_latencies(&calm, &store, config.storm).await?;
    for churn in churns {
        churn.abort();
    }
    // The storm goes on while the connections catch up: convergence has to happen through it.
    let catch_up = Instant::now();
    for (i, sim) in storms.iter().enumerate() {
        if let Err(e) = wait_converged(sim, &store, &format!("storm-{i}"), Duration::from_secs(180)).await {
            report.violations.push(e);
        }
    }
    report.converged_after = catch_up.elapsed();
    let storm_ended = Instant::now();
    for sim in &storms {
        sim.set_faults(Faults::none());
    }

    report.neighbour_p50_before = quantile(&before, 0.5);
    report.neighbour_p50_during = quantile(&during, 0.5);
    // Slowed means a p50 half as long again as before, beyond 100 ms of noise.
    let allowed = report.neighbour_p50_before.mul_f64(1.5) + Duration::from_millis(100);
    if report.neighbour_p50_during > allowed {
        report.violations.push(format!(
            "the healthy neighbour slowed down: p50 {:?} before, {:?} during the storm",
            report.neighbour_p50_before, report.neighbour_p50_during
        ));
    }

    let mut ratios = Vec::new();
    let mut first_gaps = Vec::new();
    for sim in storms.iter().chain(std::iter::once(&calm)) {
        report.excess_over_limit += sim.rate_limit_excess();
        let log = sim.log();
        report.max_requests_in_any_second = report
            .max_requests_in_any_second
            .max(log.max_in_any_window(Duration::from_secs(1)));
    }
    for sim in &storms {
        let mut records: Vec<RequestRecord> = sim
            .log()
            .snapshot()
            .into_iter()
            .filter(|r| r.at >= storm_started && r.at <= storm_ended)
            .collect();
        records.sort_by_key(|r| r.at);
        report.requests += records.len();
        analyse_spacing(&records, &mut report, &mut ratios, &mut first_gaps);
    }
    if report.excess_over_limit > 0 {
        report.violations.push(format!(
            "{} requests went over the {RATE_LIMIT}/s limit",
            report.excess_over_limit
        ));
    }
    if report.backoff_too_early > 0 {
        report.violations.push(format!(
            "{} of {} retries came earlier than the backoff allows",
            report.backoff_too_early, report.backoff_gaps_checked
        ));
    }
    if report.retry_after_too_early > 0 {
        report.violations.push(format!(
            "{} of {} requests after a 429 came before its Retry-After",
            report.retry_after_too_early, report.retry_after_checked
        ));
    }
    report.gap_ratio_samples = ratios.len();
    report.median_gap_ratio = median(&ratios);
    if ratios.len() >= 5 && !(1.4..=3.0).contains(&report.median_gap_ratio) {
        report.violations.push(format!(
            "successive retry gaps grow by a median factor of {:.2}, not about 2",
            report.median_gap_ratio
        ));
    }
    report.first_retry_jitter_cv = coefficient_of_variation(&first_gaps);
    if first_gaps.len() >= 5 && report.first_retry_jitter_cv < 0.05 {
        report.violations.push(format!(
            "first retries are not jittered (coefficient of variation {:.3})",
            report.first_retry_jitter_cv
        ));
    }

    daemon.stop().await?;
    for sim in storms {
        sim.shutdown().await;
    }
    calm.shutdown().await;
    Ok(report)
}

/// The least delay the daemon's backoff allows before retry number `k` (0 for the first): `min * 2^k`, capped at
/// half of `max` (jitter then adds up to as much again).
pub fn least_backoff(k: u32) -> Duration {
    let half_max = BACKOFF_MAX / 2;
    BACKOFF_MIN.saturating_mul(1u32 << k.min(20)).min(half_max)
}

/// Checks the spacing of one connection's requests (sorted by arrival). A request answered 5xx or reset starts or
/// extends a run of failures; the gap after the k-th failure of a run must be at least [`least_backoff`]`(k)` (the
/// daemon's own count can only be higher: a hang or bad JSON also counts there, but not here). After a 429 the
/// next request must wait its Retry-After.
///
/// Growth is measured only on runs whose first gap is below `2 * min`: only a first retry (k = 0) can be that
/// short, so the daemon's count is known to be 0, 1, 2, ... along the run. Other runs start at an unknown count,
/// often already at the cap, where successive gaps are equal by design.
fn analyse_spacing(
    records: &[RequestRecord],
    report: &mut StormReport,
    ratios: &mut Vec<f64>,
    first_gaps: &mut Vec<f64>,
) {
    let mut run: u32 = 0;
    let mut anchored = false;
    let mut previous_gap: Option<Duration> = None;
    for pair in records.windows(2) {
        let (r, next) = (&pair[0], &pair[1]);
        let gap = next.at.duration_since(r.at);
        if r.status == 429 {
            report.rate_limited_injected += 1;
            report.retry_after_checked += 1;
            if gap + SLACK < RETRY_AFTER {
                report.retry_after_too_early += 1;
            }
            run = 0;
            previous_gap = None;
        } else if r.status >= 500 || r.status == 0 {
            report.failures_injected += 1;
            report.backoff_gaps_checked += 1;
            if gap + SLACK < least_backoff(run) {
                report.backoff_too_early += 1;
                if report.early_examples.len() < 5 {
                    report
                        .early_examples
                        .push(format!("{} {} then {:?} (run {run})", r.operation, r.status, gap));
                }
            }
            if run == 0 {
                anchored = gap < least_backoff(0) * 2;
                if anchored {
                    // First retries: jitter spreads them over [min, 2 min).
                    first_gaps.push(gap.as_secs_f64());
                }
            }
            if let Some(prev) = previous_gap
                && anchored
                && least_backoff(run) < BACKOFF_MAX / 2
            {
                ratios.push(gap.as_secs_f64() / prev.as_secs_f64());
            }
            previous_gap = Some(gap);
            run += 1;
        } else {
            run = 0;
            previous_gap = None;
        }
    }
}

/// Changes a random contact of the neighbour's simulator again and again for `duration`, and measures how long
/// each change takes to reach the database.
async fn probe_latencies(
    sim: &HubSpotSim,
    store: &crmsyncd::store::Store,
    duration: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let ids: Vec<String> = sim.records("contacts").into_iter().map(|r| r.id).collect();
    let end = Instant::now() + duration;
    let mut latencies = Vec::new();
    let mut n = 0u64;
    while Instant::now() < end {
        n += 1;
        let id = ids.choose(&mut rand::rng()).expect("seeded").clone();
        let marker = format!("probe-{n}");
        let mut props = Map::new();
        props.insert("firstname".into(), Value::String(marker.clone()));
        sim.update("contacts", &id, props);
        let started = Instant::now();
        loop {
            let row = store.record("calm", "contacts", &id).await?;
            if row.is_some_and(|r| r.data.get("firstname").and_then(Value::as_str) == Some(marker.as_str())) {
                latencies.push(started.elapsed());
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("a change to the healthy neighbour took over 30 s to arrive");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_backoff_doubles_then_caps_at_half_the_max() {
        assert_eq!(least_backoff(0), Duration::from_millis(100));
        assert_eq!(least_backoff(1), Duration::from_millis(200));
        assert_eq!(least_backoff(3), Duration::from_millis(800));
        assert_eq!(least_backoff(4), Duration::from_secs(1));
        assert_eq!(least_backoff(40), Duration::from_secs(1));
    }
}
