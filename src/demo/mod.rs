//! `crmsyncd demo`: CRM simulators on free local ports with a few thousand records that keep changing (and send
//! webhooks where the CRM does), a config pointing one connection at each, and the daemon on SQLite in a
//! temporary directory. One file per CRM says how its simulator is started, seeded and churned.

mod creatio;
mod hubspot;
mod klaviyo;
mod odoo;
mod pipedrive;
mod salesforce;
mod zoho;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use base64::Engine;
use crmsyncd_entities::records;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tokio::task::JoinHandle;

use crate::config::ProviderKind;
use crate::{Application, Config};

/// One CRM in the demo: its simulator, seeded, and what the daemon needs to reach it.
#[async_trait]
trait DemoCrm: Send + Sync {
    /// The connection id (`hubspot-demo`).
    fn id(&self) -> String;
    /// How many records it starts with, for the banner.
    fn seeded(&self) -> usize;
    /// The `[[connection]]` table for it.
    fn connection(&self) -> String;
    /// The webhook path and query the CRM calls (`/webhooks/odoo-demo?token=...`), or None for a CRM that only
    /// polls.
    fn webhook_path(&self) -> Option<String>;
    /// Starts changing records, sending webhooks to `daemon` (the daemon's base URL) where the CRM does.
    fn churn(&self, daemon: &str) -> Vec<JoinHandle<()>>;
    async fn shutdown(self: Box<Self>);
}

/// The CRMs `--crm` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmSelection(pub Vec<ProviderKind>);

impl std::str::FromStr for CrmSelection {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_crms(text).map(CrmSelection)
    }
}

/// Reads `--crm`: `all`, or names separated by commas (`hubspot,zoho`).
pub fn parse_crms(text: &str) -> Result<Vec<ProviderKind>, String> {
    if text.trim() == "all" {
        return Ok(ProviderKind::ALL.to_vec());
    }
    let mut kinds = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let kind = ProviderKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown CRM {name:?}; expected \"all\" or some of {}", names.join(", "))
            })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return Err("name at least one CRM, or \"all\"".into());
    }
    Ok(kinds)
}

async fn start(kind: ProviderKind) -> anyhow::Result<Box<dyn DemoCrm>> {
    Ok(match kind {
        ProviderKind::HubSpot => Box::new(hubspot::start().await?),
        ProviderKind::Odoo => Box::new(odoo::start().await?),
        ProviderKind::Klaviyo => Box::new(klaviyo::start().await?),
        ProviderKind::Creatio => Box::new(creatio::start().await?),
        ProviderKind::Salesforce => Box::new(salesforce::start().await?),
        ProviderKind::Pipedrive => Box::new(pipedrive::start().await?),
        ProviderKind::Zoho => Box::new(zoho::start().await?),
    })
}

/// Runs the demo with `crms` until Ctrl-C (or for `seconds`).
pub async fn run(crms: &[ProviderKind], seconds: Option<u64>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let mut sims = Vec::new();
    for kind in crms {
        sims.push(
            start(*kind)
                .await
                .with_context(|| format!("starting the {kind} simulator"))?,
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config_path = dir.path().join("crmsyncd.toml");
    std::fs::write(&config_path, demo_config(port, dir.path(), &sims))?;
    let config = Config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let app = Application::build(config).await?;
    let handle = app.handle();
    let base = handle.base_url();

    println!("crmsyncd demo");
    println!("  metrics:   {base}/metrics");
    println!("  health:    {base}/healthz  {base}/readyz");
    println!("  config:    {}", config_path.display());
    println!("  database:  {}", dir.path().join("crmsyncd.db").display());
    for sim in &sims {
        let hook = sim
            .webhook_path()
            .map_or_else(|| "(polls only)".to_string(), |p| format!("{base}{p}"));
        println!("  {:<16} {:>6} records, webhooks: {hook}", sim.id(), sim.seeded());
    }
    println!("The records keep changing; Ctrl-C to stop.");

    let churn: Vec<JoinHandle<()>> = sims.iter().flat_map(|s| s.churn(&base)).collect();
    let ids: Vec<String> = sims.iter().map(|s| s.id()).collect();
    let progress = tokio::spawn({
        let handle = handle.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                let mut line = String::from(" ");
                for id in &ids {
                    // During shutdown the pool closes: print nothing rather than zeros.
                    let Some(n) = count(&handle, id).await else {
                        return;
                    };
                    line.push_str(&format!(" {id}: {n:>6}"));
                }
                println!("{line}");
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
    for sim in sims {
        sim.shutdown().await;
    }
    result
}

async fn count(handle: &crate::AppHandle, connection: &str) -> Option<u64> {
    records::Entity::find()
        .filter(records::Column::ConnectionId.eq(connection))
        .count(handle.store.db())
        .await
        .ok()
}

fn demo_config(port: u16, dir: &Path, sims: &[Box<dyn DemoCrm>]) -> String {
    let db = dir.join("crmsyncd.db");
    // A fresh key per run: it seals the OAuth tokens of the CRMs that use OAuth.
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let mut text = format!(
        r#"# Written by `crmsyncd demo`: one connection to each local simulator.
[http]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[database]
url = "sqlite://{db}?mode=rwc"
credentials_key = "{key}"
"#,
        db = db.display()
    );
    for sim in sims {
        text.push_str(&sim.connection());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crms_are_parsed_from_all_or_a_list() {
        assert_eq!(parse_crms("all").unwrap(), ProviderKind::ALL);
        assert_eq!(
            parse_crms("odoo, hubspot,odoo").unwrap(),
            vec![ProviderKind::Odoo, ProviderKind::HubSpot]
        );
        assert!(parse_crms("odoo,nope").unwrap_err().contains("\"nope\""));
        assert!(parse_crms(" , ").is_err());
    }
}
