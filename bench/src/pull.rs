//! Scenario 2, pull throughput: one connection syncing a large object from a simulator with its rate limit off,
//! into SQLite or PostgreSQL. The daemon is the real release binary, run as a child process so that its peak
//! memory is its own (the simulator's copy of the data lives in this process). The ceiling, measured in the same
//! run on a fresh database, is the store's bare bulk upsert of the same records in pages of the same size.

use std::time::{Duration, Instant};

use crate::child::{cpu_seconds, daemon_binary, free_port, peak_rss, pid_of, spawn_daemon, stop_gracefully, sum_of};
use crate::db::Db;
use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use crmsyncd::Config;
use crmsyncd::connections::ConnectionFactory;
use crmsyncd::metrics::{Metrics, names};
use crmsyncd::model::{Cursor, RemoteRecord};
use crmsyncd::store::Store;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig};
use crmsyncd_sim::odoo::{OdooSim, OdooSimConfig};
use serde_json::Value;

/// Which simulator the connection pulls from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crm {
    HubSpot,
    Odoo,
}

impl Crm {
    pub fn name(self) -> &'static str {
        match self {
            Crm::HubSpot => "hubspot",
            Crm::Odoo => "odoo",
        }
    }

    /// Records per request: HubSpot's search answers at most 200; Odoo's `search_read` takes any limit.
    fn page_size(self) -> usize {
        match self {
            Crm::HubSpot => 200,
            Crm::Odoo => 1000,
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone)]
pub struct PullRun {
    pub records: usize,
    /// Records per second from the daemon's start until every record was stored.
    pub daemon_rate: f64,
    /// The bare bulk upsert's rows per second, same records and page size.
    pub ceiling_rate: f64,
    /// The provider alone reading every page from the simulator, storing nothing: records per second.
    pub fetch_rate: f64,
    /// The daemon's peak resident memory (VmHWM), in bytes.
    pub peak_rss: u64,
    /// The daemon's CPU time (user + system) over the run, in seconds: with the wall time, it tells whether the
    /// daemon or the simulator (in this process) was the bottleneck.
    pub daemon_cpu: f64,
    /// Wall seconds from the daemon's start until every record was stored.
    pub elapsed: f64,
}

pub async fn measure(crm: Crm, db: Db, records: usize) -> anyhow::Result<PullRun> {
    let binary = daemon_binary()?;
    let (base_url, truth, hubspot, odoo) = match crm {
        Crm::HubSpot => {
            let sim = HubSpotSim::start(HubSpotSimConfig::default()).await?;
            sim.seed("contacts", records, None);
            let truth: Vec<RemoteRecord> = sim
                .records("contacts")
                .into_iter()
                .map(|r| RemoteRecord {
                    remote_id: r.id,
                    updated_at: r.updated_at,
                    data: Value::Object(r.properties),
                })
                .collect();
            (sim.base_url(), truth, Some(sim), None)
        }
        Crm::Odoo => {
            let sim = OdooSim::start(OdooSimConfig::default()).await?;
            sim.seed("res.partner", records, None);
            let truth: Vec<RemoteRecord> = sim
                .records("res.partner")
                .into_iter()
                .map(|r| RemoteRecord {
                    remote_id: r.id.to_string(),
                    updated_at: Utc.from_utc_datetime(&r.write_date),
                    data: Value::Object(r.fields),
                })
                .collect();
            (sim.base_url(), truth, None, Some(sim))
        }
    };
    let ceiling_rate = bulk_upsert_rate(db, &truth, crm.page_size()).await?;
    drop(truth);

    let db = db.fresh().await?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let config = dir.path().join("bench-pull.toml");
    let config_text = daemon_config(crm, &base_url, &db.url, port);
    std::fs::write(&config, &config_text)?;
    let started = Instant::now();
    let mut child = spawn_daemon(&binary, &config)?;
    let pid = pid_of(&child)?;
    let client = reqwest::Client::new();
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let deadline = started + Duration::from_secs(600);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the daemon exited early: {status}");
        }
        anyhow::ensure!(Instant::now() < deadline, "the pull did not finish in 10 minutes");
        if let Ok(answer) = client.get(&metrics).send().await
            && let Ok(text) = answer.text().await
            && sum_of(&text, names::RECORDS_SYNCED_TOTAL) >= records as f64
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let peak_rss = peak_rss(pid)?;
    let daemon_cpu = cpu_seconds(pid)?;
    stop_gracefully(&mut child, pid).await?;
    let stored = count_records(&db.url).await?;
    anyhow::ensure!(stored == records, "{stored} records stored, {records} expected");
    db.cleanup().await;
    // After the daemon, so that any cache the simulator keeps favours the ceiling, not the daemon.
    let fetch_rate = fetch_rate(&config_text, &config, records).await?;
    // A dropped simulator keeps serving (and holding its records) until shut down; runs must not pile up.
    if let Some(sim) = hubspot {
        sim.shutdown().await;
    }
    if let Some(sim) = odoo {
        sim.shutdown().await;
    }
    Ok(PullRun {
        records,
        daemon_rate: records as f64 / elapsed.as_secs_f64(),
        ceiling_rate,
        fetch_rate,
        peak_rss,
        daemon_cpu,
        elapsed: elapsed.as_secs_f64(),
    })
}

fn daemon_config(crm: Crm, base_url: &str, db_url: &str, port: u16) -> String {
    let connection = match crm {
        Crm::HubSpot => format!(
            r#"
[[connection]]
id = "bench"
provider = "hubspot"
base_url = "{base_url}"
access_token = "hs-test-token"
objects = ["contacts"]
page_size = 200
rate_limit = {{ requests = 1000000, per = "1s" }}
"#
        ),
        Crm::Odoo => format!(
            r#"
[[connection]]
id = "bench"
provider = "odoo"
base_url = "{base_url}"
database = "sim"
username = "api@example.com"
api_key = "odoo-test-key"
models = ["res.partner"]
page_size = 1000
rate_limit = {{ requests = 1000000, per = "1s" }}
"#
        ),
    };
    format!(
        r#"
[http]
listen = "127.0.0.1:{port}"

[database]
url = "{db_url}"
{connection}"#
    )
}

async fn count_records(url: &str) -> anyhow::Result<usize> {
    let store = Store::connect(url).await?;
    let mut total = 0;
    for object in ["contacts", "res.partner"] {
        total += store.records("bench", object).await?.len();
    }
    store.close().await;
    Ok(total)
}

/// Records per second of the connection's provider alone, built from the daemon's own config: every page read
/// from the simulator and parsed, nothing stored. The simulator shares this machine's two cores, so this is the
/// rate the source can serve at: a pull cannot beat it, however fast the store.
async fn fetch_rate(config_text: &str, path: &std::path::Path, records: usize) -> anyhow::Result<f64> {
    let config = Config::parse(config_text, path, &|_| None)?;
    let scratch = Db::Sqlite.fresh().await?;
    let store = Store::connect(&scratch.url).await?;
    let factory = ConnectionFactory::new(&config, &store, Arc::new(Metrics::new()));
    let entry = factory
        .entries(&config)?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("the bench config has no connection"))?;
    let object = entry.provider.objects()[0].clone();
    let started = Instant::now();
    let mut seen = HashSet::new();
    let mut token = None;
    loop {
        let page = entry.provider.pull_page(&object, DateTime::UNIX_EPOCH, token).await?;
        seen.extend(page.records.into_iter().map(|r| r.remote_id));
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(
        seen.len() == records,
        "the provider read {} records, {records} expected",
        seen.len()
    );
    store.close().await;
    scratch.cleanup().await;
    Ok(records as f64 / elapsed.as_secs_f64())
}

/// Rows per second of the store's own bulk upsert (`apply_page`, pages of `page` records with their cursor), on
/// a fresh database: what the daemon could reach if fetching and parsing cost nothing.
async fn bulk_upsert_rate(db: Db, records: &[RemoteRecord], page: usize) -> anyhow::Result<f64> {
    let db = db.fresh().await?;
    let store = Store::connect(&db.url).await?;
    store.migrate().await?;
    let mut sorted: Vec<&RemoteRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.position());
    let pages: Vec<Vec<RemoteRecord>> = sorted
        .chunks(page)
        .map(|c| c.iter().map(|r| (*r).clone()).collect())
        .collect();
    let started = Instant::now();
    for page in &pages {
        let cursor: Option<Cursor> = page.last().map(RemoteRecord::position);
        store.apply_page("ceiling", "objects", page, cursor.as_ref()).await?;
    }
    let rate = records.len() as f64 / started.elapsed().as_secs_f64();
    store.close().await;
    db.cleanup().await;
    Ok(rate)
}
