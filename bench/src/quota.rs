//! Scenario 3, quota use: five HubSpot connections sharing one account limit (100 requests per 10 s, as HubSpot's
//! private apps) and one Odoo connection with a limit of its own, against simulators that enforce those limits on
//! a sliding window, with more work waiting than the limits allow. The ceiling is the limit itself: the figure is
//! the share of it the daemon used, and the simulators' own count of requests over the limit must stay zero.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::db::Db;
use crmsyncd::{Application, Config};
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig};
use crmsyncd_sim::odoo::{OdooSim, OdooSimConfig};
use crmsyncd_sim::request_log::{RequestLog, max_in_window};

/// HubSpot's private-app limit, shared by the five connections.
const HUBSPOT_LIMIT: (u32, Duration) = (100, Duration::from_secs(10));
/// The Odoo connection's own limit (Odoo documents none; a proxy in front of it would set one like this).
const ODOO_LIMIT: (u32, Duration) = (20, Duration::from_secs(1));
const HUBSPOT_CONNECTIONS: usize = 5;

/// One limit's figures over the measured interval.
#[derive(Debug, Clone)]
pub struct QuotaUse {
    pub name: &'static str,
    /// Requests the simulator saw in the measured interval.
    pub requests: usize,
    /// Requests the limit allowed in that interval.
    pub allowed: f64,
    /// Requests answered 429.
    pub refused: usize,
    /// The most requests in any window of the limit's length (over the whole run).
    pub busiest_window: usize,
    pub limit: u32,
}

impl QuotaUse {
    pub fn share(&self) -> f64 {
        self.requests as f64 / self.allowed
    }

    fn from_log(name: &'static str, log: &RequestLog, limit: (u32, Duration), from: Instant, to: Instant) -> Self {
        let records = log.snapshot();
        let mut times: Vec<Instant> = records.iter().map(|r| r.at).collect();
        times.sort();
        Self {
            name,
            requests: times.iter().filter(|&&t| t >= from && t < to).count(),
            allowed: limit.0 as f64 * (to - from).as_secs_f64() / limit.1.as_secs_f64(),
            refused: records.iter().filter(|r| r.status == 429).count(),
            busiest_window: max_in_window(&times, limit.1),
            limit: limit.0,
        }
    }
}

/// Runs the daemon against both simulators for `warmup + measure` and reports each limit's use over `measure`.
pub async fn measure(db: Db, warmup: Duration, measure: Duration) -> anyhow::Result<Vec<QuotaUse>> {
    let db = db.fresh().await?;
    let hubspot = HubSpotSim::start(HubSpotSimConfig {
        rate_limit: Some(HUBSPOT_LIMIT),
        ..HubSpotSimConfig::default()
    })
    .await?;
    // More than the budget can read in the run: 100 per 10 s at 100 records a page is 60k records a minute.
    hubspot.seed("contacts", 100_000, None);
    let odoo = OdooSim::start(OdooSimConfig {
        rate_limit: Some(ODOO_LIMIT),
        ..OdooSimConfig::default()
    })
    .await?;
    odoo.seed("res.partner", 100_000, None);

    let mut text = format!(
        r#"
[http]
listen = "127.0.0.1:0"

[database]
url = "{url}"

[[rate_limit_group]]
id = "portal"
rate_limit = {{ requests = {hs_n}, per = "{hs_per}s" }}

[[connection]]
id = "odoo"
provider = "odoo"
base_url = "{odoo}"
database = "sim"
username = "api@example.com"
api_key = "odoo-test-key"
models = ["res.partner"]
page_size = 50
poll_interval = "1s"
rate_limit = {{ requests = {od_n}, per = "{od_per}s" }}
"#,
        url = db.url,
        hs_n = HUBSPOT_LIMIT.0,
        hs_per = HUBSPOT_LIMIT.1.as_secs(),
        odoo = odoo.base_url(),
        od_n = ODOO_LIMIT.0,
        od_per = ODOO_LIMIT.1.as_secs(),
    );
    for n in 1..=HUBSPOT_CONNECTIONS {
        text.push_str(&format!(
            r#"
[[connection]]
id = "hubspot-{n}"
provider = "hubspot"
base_url = "{base}"
access_token = "hs-test-token"
objects = ["contacts"]
page_size = 100
poll_interval = "1s"
rate_limit_group = "portal"
"#,
            base = hubspot.base_url()
        ));
    }
    let config = Config::parse(&text, Path::new("bench-quota.toml"), &|_| None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let app = Application::build(config).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let from = Instant::now() + warmup;
    let to = from + measure;
    tokio::time::sleep_until((to).into()).await;
    let figures = vec![
        QuotaUse::from_log(
            "hubspot (5 connections, one group)",
            &hubspot.log(),
            HUBSPOT_LIMIT,
            from,
            to,
        ),
        QuotaUse::from_log("odoo (its own limit)", &odoo.log(), ODOO_LIMIT, from, to),
    ];
    let _ = stop.send(());
    running.await??;
    hubspot.shutdown().await;
    odoo.shutdown().await;
    db.cleanup().await;
    Ok(figures)
}
