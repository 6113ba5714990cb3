//! `crmsyncd demo`: the HubSpot and Odoo simulators on free local ports with a few thousand records that keep
//! changing, a config pointing two connections at them, and the daemon on SQLite in a temporary directory.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use crmsyncd_entities::records;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig};
use crmsyncd_sim::odoo::{OdooSim, OdooSimConfig};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use crate::{Application, Config};

const HUBSPOT_OBJECTS: [&str; 2] = ["contacts", "companies"];
const ODOO_MODELS: [&str; 2] = ["res.partner", "crm.lead"];

/// Runs the demo until Ctrl-C (or for `seconds`).
pub async fn run(seconds: Option<u64>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let hubspot = HubSpotSim::start(HubSpotSimConfig {
        rate_limit: Some((100, Duration::from_secs(10))),
        index_lag: Duration::from_millis(500),
        ..HubSpotSimConfig::default()
    })
    .await?;
    let odoo = OdooSim::start(OdooSimConfig::default()).await?;
    hubspot.seed("contacts", 2_000, None);
    hubspot.seed("companies", 500, None);
    odoo.seed("res.partner", 1_500, None);
    odoo.seed("crm.lead", 500, None);

    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config_path = dir.path().join("crmsyncd.toml");
    std::fs::write(
        &config_path,
        demo_config(port, dir.path(), &hubspot.base_url(), &odoo.base_url()),
    )?;
    let config = Config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let app = Application::build(config).await?;
    let handle = app.handle();
    let base = handle.base_url();
    let hs_hook = format!("{base}/webhooks/hubspot-demo");
    let odoo_hook = format!("{base}/webhooks/odoo-demo?token=odoo-hook-token");

    println!("crmsyncd demo");
    println!("  metrics:       {base}/metrics");
    println!("  health:        {base}/healthz  {base}/readyz");
    println!("  webhooks:      {hs_hook}");
    println!("                 {odoo_hook}");
    println!("  config:        {}", config_path.display());
    println!("  database:      {}", dir.path().join("crmsyncd.db").display());
    println!(
        "  simulators:    HubSpot {}  Odoo {}",
        hubspot.base_url(),
        odoo.base_url()
    );
    println!("Syncing 2,500 HubSpot and 2,000 Odoo records, which keep changing; Ctrl-C to stop.");

    let churn = [
        hubspot.spawn_churn(
            Duration::from_millis(500),
            3,
            HUBSPOT_OBJECTS.iter().map(|s| s.to_string()).collect(),
            Some(hs_hook),
        ),
        odoo.spawn_churn(
            Duration::from_millis(500),
            3,
            ODOO_MODELS.iter().map(|s| s.to_string()).collect(),
            Some(odoo_hook),
        ),
    ];
    let progress = tokio::spawn({
        let handle = handle.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                // During shutdown the pool closes: print nothing rather than zeros.
                let (Some(hs), Some(od)) = (count(&handle, "hubspot-demo").await, count(&handle, "odoo-demo").await)
                else {
                    continue;
                };
                println!("  hubspot-demo: {hs:>6} records   odoo-demo: {od:>6} records");
            }
        }
    });
    let stop = async move {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let result = app.run_until_stopped(stop).await;
    progress.abort();
    for c in churn {
        c.abort();
    }
    hubspot.shutdown().await;
    odoo.shutdown().await;
    result
}

async fn count(handle: &crate::AppHandle, connection: &str) -> Option<u64> {
    records::Entity::find()
        .filter(records::Column::ConnectionId.eq(connection))
        .count(handle.store.db())
        .await
        .ok()
}

fn demo_config(port: u16, dir: &Path, hubspot: &str, odoo: &str) -> String {
    let db = dir.join("crmsyncd.db");
    format!(
        r#"# Written by `crmsyncd demo`: two connections to local simulators.
[http]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[database]
url = "sqlite://{db}?mode=rwc"

[[connection]]
id = "hubspot-demo"
provider = "hubspot"
base_url = "{hubspot}"
access_token = "hs-test-token"
webhook_secret = "hs-test-secret"
objects = ["contacts", "companies"]
poll_interval = "2s"
rate_limit = {{ requests = 100, per = "10s" }}

[[connection]]
id = "odoo-demo"
provider = "odoo"
base_url = "{odoo}"
database = "sim"
username = "api@example.com"
api_key = "odoo-test-key"
models = ["res.partner", "crm.lead"]
webhook_token = "odoo-hook-token"
poll_interval = "2s"
rate_limit = {{ requests = 50, per = "1s" }}
sweep_interval = "30s"
"#,
        db = db.display()
    )
}
