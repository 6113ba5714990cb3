//! The Odoo simulator in the demo: partners and leads, token-authenticated webhooks, hard deletes found by sweep.

use std::time::Duration;

use async_trait::async_trait;
use crmsyncd_sim::odoo::{OdooSim, OdooSimConfig};
use tokio::task::JoinHandle;

use super::DemoCrm;

const MODELS: [&str; 2] = ["res.partner", "crm.lead"];

pub(super) struct Demo {
    sim: OdooSim,
}

pub(super) async fn start() -> anyhow::Result<Demo> {
    let sim = OdooSim::start(OdooSimConfig::default()).await?;
    sim.seed("res.partner", 1_500, None);
    sim.seed("crm.lead", 500, None);
    Ok(Demo { sim })
}

#[async_trait]
impl DemoCrm for Demo {
    fn id(&self) -> String {
        "odoo-demo".into()
    }

    fn seeded(&self) -> usize {
        2_000
    }

    fn connection(&self) -> String {
        format!(
            r#"
[[connection]]
id = "odoo-demo"
provider = "odoo"
base_url = "{}"
database = "sim"
username = "api@example.com"
api_key = "odoo-test-key"
models = ["res.partner", "crm.lead"]
webhook_token = "odoo-hook-token"
poll_interval = "2s"
rate_limit = {{ requests = 50, per = "1s" }}
sweep_interval = "30s"
"#,
            self.sim.base_url()
        )
    }

    fn webhook_path(&self) -> Option<String> {
        Some("/webhooks/odoo-demo?token=odoo-hook-token".into())
    }

    fn churn(&self, daemon: &str) -> Vec<JoinHandle<()>> {
        vec![self.sim.spawn_churn(
            Duration::from_millis(500),
            3,
            MODELS.iter().map(|s| s.to_string()).collect(),
            Some(format!("{daemon}/webhooks/odoo-demo?token=odoo-hook-token")),
        )]
    }

    async fn shutdown(self: Box<Self>) {
        self.sim.shutdown().await;
    }
}
