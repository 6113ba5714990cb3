//! The database outage: PostgreSQL made unreachable (a cuttable TCP proxy between the daemon and the server, so
//! the machine's server keeps running) for a while under webhook and pull load. Checked: no webhook sent during
//! the outage is answered 2xx (nothing was stored); `/readyz` fails; the actors pause (their database retries
//! and CRM requests during the outage are counted and bounded) instead of spinning; within 5 s of the proxy
//! coming back, `/readyz`, webhooks and pulls work again by themselves; and at the end both connections equal
//! their simulators' truth — the webhook-only one proves that no acknowledged webhook was lost.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crmsyncd::testing::TestDatabase;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig, SignatureVersion};
use rand::seq::IndexedRandom;
use serde_json::{Map, Value};

use crate::daemon::{Daemon, hubspot_connection};
use crate::proxy::CuttableProxy;
use crate::truth::wait_converged;

/// How soon after the database is back everything must work again.
pub const RESUME_WITHIN: Duration = Duration::from_secs(5);
/// The fewest milliseconds the actors' database backoff waits; more retries than the outage allows at this
/// spacing means a hot loop.
const LEAST_DATABASE_BACKOFF_MS: u64 = 250;

/// One outage run.
#[derive(Debug, Clone)]
pub struct OutageConfig {
    /// How long PostgreSQL stays unreachable.
    pub outage: Duration,
    /// Contacts seeded in each simulator.
    pub records: usize,
}

/// What one outage run measured.
#[derive(Debug, Default, Clone)]
pub struct OutageReport {
    pub webhooks_sent: usize,
    pub webhooks_acknowledged: usize,
    pub webhooks_during_outage: usize,
    /// Webhooks sent while the database was unreachable and answered 2xx anyway: must be 0.
    pub acknowledged_during_outage: usize,
    pub readyz_failed_during_outage: bool,
    pub database_retries_during_outage: f64,
    pub crm_requests_during_outage: usize,
    pub readyz_back_after: Duration,
    pub webhook_back_after: Duration,
    pub pull_back_after: Duration,
    pub converged_after: Duration,
    pub violations: Vec<String>,
}

impl OutageReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Webhooks sent by the load, as a CRM sends them: a refused one is sent again a second later until accepted.
#[derive(Default)]
struct WebhookLog {
    /// (sent at, answered at, status) of every attempt.
    attempts: Vec<(Instant, Instant, u16)>,
}

/// Runs one outage and checks it. Needs PostgreSQL.
pub async fn run(config: &OutageConfig) -> anyhow::Result<OutageReport> {
    let db = TestDatabase::postgres()
        .await
        .ok_or_else(|| anyhow::anyhow!("PostgreSQL is not reachable"))?;
    let result = run_on(config, &db).await;
    db.cleanup().await;
    result
}

async fn run_on(config: &OutageConfig, db: &TestDatabase) -> anyhow::Result<OutageReport> {
    let mut url = url::Url::parse(&db.url)?;
    let upstream: SocketAddr = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    )
    .parse()?;
    let proxy = CuttableProxy::start(upstream).await?;
    url.set_port(Some(proxy.addr().port()))
        .map_err(|()| anyhow::anyhow!("cannot set the port"))?;

    let hooks = start_sim(config.records).await?;
    let pulls = start_sim(config.records).await?;
    // `hooks` learns changes only from webhooks (its poll is an hour away): what it ends with is what the
    // webhook endpoint acknowledged. `pulls` polls.
    let mut connections = hubspot_connection("hooks", &hooks.base_url(), "1h", 50, ("100ms", "2s"));
    connections.push_str(&hubspot_connection(
        "pulls",
        &pulls.base_url(),
        "200ms",
        50,
        ("100ms", "2s"),
    ));
    let daemon = Daemon::start(url.as_str(), &connections).await?;
    let store = daemon.handle.store.clone();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut report = OutageReport::default();

    wait_converged(&hooks, &store, "hooks", Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)?;
    wait_converged(&pulls, &store, "pulls", Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)?;

    // Load: a change with its webhook on `hooks`, and a change on `pulls`, every 100 ms.
    let log = Arc::new(Mutex::new(WebhookLog::default()));
    let load = {
        let (hooks, pulls, log) = (hooks.clone(), pulls.clone(), log.clone());
        let url = daemon.url("/webhooks/hooks");
        tokio::spawn(async move {
            let ids: Vec<String> = hooks.records("contacts").into_iter().map(|r| r.id).collect();
            let pull_ids: Vec<String> = pulls.records("contacts").into_iter().map(|r| r.id).collect();
            let mut n = 0u64;
            loop {
                n += 1;
                let id = ids.choose(&mut rand::rng()).expect("seeded").clone();
                hooks.update("contacts", &id, firstname(&format!("load-{n}")));
                let event = hooks.event("contact.propertyChange", &id);
                let pull_id = pull_ids.choose(&mut rand::rng()).expect("seeded").clone();
                pulls.update("contacts", &pull_id, firstname(&format!("load-{n}")));
                // Deliver like a CRM: again and again until a 2xx.
                let (hooks, log, url) = (hooks.clone(), log.clone(), url.clone());
                tokio::spawn(async move {
                    loop {
                        let sent = Instant::now();
                        let status = hooks
                            .send_webhook(&url, std::slice::from_ref(&event), SignatureVersion::V3)
                            .await
                            .map_or(0, |s| s.as_u16());
                        log.lock().unwrap().attempts.push((sent, Instant::now(), status));
                        if (200..300).contains(&status) {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The outage.
    let retries_before =
        daemon.retries(&client, "hooks", "database").await? + daemon.retries(&client, "pulls", "database").await?;
    proxy.cut();
    let cut_at = Instant::now();
    let mut readyz_failed = false;
    while cut_at.elapsed() < config.outage {
        // /readyz is answered within its 2 s ping timeout.
        if let Ok(r) = client.get(daemon.url("/readyz")).send().await
            && r.status().as_u16() == 503
        {
            readyz_failed = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let retries_after =
        daemon.retries(&client, "hooks", "database").await? + daemon.retries(&client, "pulls", "database").await?;
    proxy.restore().await?;
    let restored_at = Instant::now();
    report.readyz_failed_during_outage = readyz_failed;
    report.database_retries_during_outage = retries_after - retries_before;
    report.crm_requests_during_outage = [&hooks, &pulls]
        .iter()
        .map(|sim| {
            sim.log()
                .snapshot()
                .iter()
                .filter(|r| r.at > cut_at && r.at < restored_at)
                .count()
        })
        .sum();

    // Back: /readyz, a fresh webhook, a fresh pull, each within RESUME_WITHIN.
    report.readyz_back_after = until(RESUME_WITHIN * 3, || async {
        client
            .get(daemon.url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let probe_id = hooks.records("contacts")[0].id.clone();
    hooks.update("contacts", &probe_id, firstname("after-outage"));
    let event = hooks.event("contact.propertyChange", &probe_id);
    let hook_url = daemon.url("/webhooks/hooks");
    report.webhook_back_after = until(RESUME_WITHIN * 3, || async {
        hooks
            .send_webhook(&hook_url, std::slice::from_ref(&event), SignatureVersion::V3)
            .await
            .is_ok_and(|s| s.is_success())
    })
    .await;
    let pull_id = pulls.records("contacts")[0].id.clone();
    pulls.update("contacts", &pull_id, firstname("after-outage"));
    report.pull_back_after = until(RESUME_WITHIN * 3, || async {
        store
            .record("pulls", "contacts", &pull_id)
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.data.get("firstname").and_then(Value::as_str) == Some("after-outage"))
    })
    .await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    load.abort();
    // Let the deliveries still being retried land.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(15) {
        let pending = {
            let log = log.lock().unwrap();
            log.attempts.len()
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if log.lock().unwrap().attempts.len() == pending {
            break;
        }
    }
    let converged = Instant::now();
    for (sim, id) in [(&hooks, "hooks"), (&pulls, "pulls")] {
        if let Err(e) = wait_converged(sim, &store, id, Duration::from_secs(30)).await {
            report.violations.push(e);
        }
    }
    report.converged_after = converged.elapsed();

    {
        let log = log.lock().unwrap();
        report.webhooks_sent = log.attempts.len();
        report.webhooks_acknowledged = log.attempts.iter().filter(|a| (200..300).contains(&a.2)).count();
        // Sent after the cut (plus a moment for commits already in flight) and answered before the restore.
        let during: Vec<_> = log
            .attempts
            .iter()
            .filter(|(sent, answered, _)| *sent > cut_at + Duration::from_millis(100) && *answered < restored_at)
            .collect();
        report.webhooks_during_outage = during.len();
        report.acknowledged_during_outage = during.iter().filter(|a| (200..300).contains(&a.2)).count();
    }

    if report.acknowledged_during_outage > 0 {
        report.violations.push(format!(
            "{} webhooks were answered 2xx while the database was unreachable",
            report.acknowledged_during_outage
        ));
    }
    if report.webhooks_during_outage == 0 {
        report.violations.push("no webhook was sent during the outage".into());
    }
    if !report.readyz_failed_during_outage {
        report.violations.push("/readyz never failed during the outage".into());
    }
    // Two connections, each retrying at most once per least backoff.
    let most = 2.0 * config.outage.as_millis() as f64 / LEAST_DATABASE_BACKOFF_MS as f64;
    if report.database_retries_during_outage > most {
        report.violations.push(format!(
            "{} database retries in {:?}: the actors spin",
            report.database_retries_during_outage, config.outage
        ));
    }
    if report.crm_requests_during_outage as f64 > most {
        report.violations.push(format!(
            "{} CRM requests during the outage: the actors spin",
            report.crm_requests_during_outage
        ));
    }
    for (what, after) in [
        ("/readyz", report.readyz_back_after),
        ("webhooks", report.webhook_back_after),
        ("pulls", report.pull_back_after),
    ] {
        if after > RESUME_WITHIN {
            report
                .violations
                .push(format!("{what} resumed {after:?} after the database came back"));
        }
    }

    daemon.stop().await?;
    hooks.shutdown().await;
    pulls.shutdown().await;
    Ok(report)
}

async fn start_sim(records: usize) -> anyhow::Result<HubSpotSim> {
    let sim = HubSpotSim::start(HubSpotSimConfig::default()).await?;
    sim.seed("contacts", records, None);
    Ok(sim)
}

fn firstname(value: &str) -> Map<String, Value> {
    let mut props = Map::new();
    props.insert("firstname".into(), Value::String(value.into()));
    props
}

/// How long until `check` holds, polled every 50 ms; `limit` when it never does within `limit`.
async fn until<F, Fut>(limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    limit
}
