//! The crash-safety harness: CRM simulators (HubSpot and Odoo, with churn) in this process, the real `crmsyncd`
//! binary as a child process under steady pull, webhook and push load, killed with SIGKILL at random moments and
//! restarted, again and again. At the end the daemon runs until it has caught up, and the database is compared
//! with the simulators' truth ([`checks`]).

pub mod checks;
mod daemon;
mod load;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crmsyncd::testing::TestDatabase;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig};
use crmsyncd_sim::odoo::{OdooSim, OdooSimConfig};
use rand::Rng;

pub use checks::Problem;
use daemon::Daemon;
use load::{Load, Truth};

/// The database a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" => Ok(Backend::Postgres),
            _ => Err(format!("expected sqlite or postgres, got {s:?}")),
        }
    }
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    pub backend: Backend,
    /// How many times the daemon is killed with SIGKILL.
    pub kills: u32,
    /// The `crmsyncd` binary.
    pub binary: PathBuf,
    /// A kill comes at a random moment between these two times after the start.
    pub min_uptime: Duration,
    pub max_uptime: Duration,
    /// Records each simulator starts with (per object).
    pub seed: usize,
    /// How long the last run may take to catch up.
    pub converge_timeout: Duration,
}

impl Options {
    /// The full run: 50 kills, a few thousand records.
    pub fn full(backend: Backend, kills: u32, binary: PathBuf) -> Options {
        Options {
            backend,
            kills,
            binary,
            min_uptime: Duration::from_millis(300),
            max_uptime: Duration::from_millis(3_000),
            seed: 1_000,
            converge_timeout: Duration::from_secs(180),
        }
    }
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Report {
    pub backend: Backend,
    pub kills: u32,
    pub records_compared: usize,
    pub webhooks_acknowledged: usize,
    pub writes_acknowledged: usize,
    pub elapsed: Duration,
    /// Empty when nothing was lost.
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:?}: {} SIGKILLs in {:.0} s; {} records compared, {} acknowledged webhooks, {} acknowledged writes; {} problems",
            self.backend,
            self.kills,
            self.elapsed.as_secs_f64(),
            self.records_compared,
            self.webhooks_acknowledged,
            self.writes_acknowledged,
            self.problems.len()
        )?;
        for p in self.problems.iter().take(50) {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// Runs the harness once.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let db = match options.backend {
        Backend::Sqlite => TestDatabase::sqlite().await,
        Backend::Postgres => TestDatabase::postgres()
            .await
            .ok_or_else(|| anyhow::anyhow!("PostgreSQL is not reachable"))?,
    };
    let hubspot = HubSpotSim::start(HubSpotSimConfig {
        index_lag: Duration::from_millis(200),
        ..HubSpotSimConfig::default()
    })
    .await?;
    hubspot.seed("contacts", options.seed, None);
    hubspot.seed("companies", options.seed / 4, None);
    let odoo = Arc::new(OdooSim::start(OdooSimConfig::default()).await?);
    odoo.seed("res.partner", options.seed, None);
    odoo.seed("crm.lead", options.seed / 4, None);

    let dir = tempfile::Builder::new().prefix("crmsyncd-crash-").tempdir()?;
    let mut daemon = Daemon::new(&options.binary, dir.path(), &db.url, &hubspot, &odoo)?;
    let load = Load::start(&hubspot, &odoo, &daemon.base_url());

    for kill in 0..options.kills {
        daemon.start()?;
        let uptime = rand::rng().random_range(options.min_uptime..=options.max_uptime);
        tokio::time::sleep(uptime).await;
        daemon.kill().await?;
        if (kill + 1) % 10 == 0 {
            eprintln!(
                "crash: {} kills so far ({:.0} s)",
                kill + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }

    // The last start: the load stops, the daemon catches up, and only then is anything compared.
    daemon.start()?;
    let truth: Truth = load.stop().await;
    let writes = truth
        .finish_writes(&daemon.base_url(), &hubspot, &odoo, options.converge_timeout)
        .await;
    let deadline = tokio::time::Instant::now() + options.converge_timeout;
    let mut problems;
    loop {
        problems = truth.compare_records(&db.url, &hubspot, &odoo).await?;
        if problems.is_empty() || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    daemon.terminate().await?;
    // Read once more from the stopped daemon's database: what it committed is what counts.
    let (records_compared, mut found) = truth.compare_all(&db.url, &hubspot, &odoo).await?;
    problems.clear();
    problems.append(&mut found);
    problems.extend(writes.problems);
    let report = Report {
        backend: options.backend,
        kills: options.kills,
        records_compared,
        webhooks_acknowledged: truth.webhooks_acknowledged(),
        writes_acknowledged: writes.acknowledged,
        elapsed: started.elapsed(),
        problems,
    };
    hubspot.shutdown().await;
    if let Ok(odoo) = Arc::try_unwrap(odoo) {
        odoo.shutdown().await;
    }
    db.cleanup().await;
    if !report.problems.is_empty() {
        // Keep the daemon's log for whoever investigates.
        let kept = dir.keep();
        eprintln!("crash: the daemon's log is in {}", kept.join("daemon.log").display());
    }
    Ok(report)
}
