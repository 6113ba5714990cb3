//! The HubSpot simulator in the demo: contacts and companies, HubSpot's free-tier limit, a lagging search index,
//! signed v3 webhooks.

use std::time::Duration;

use async_trait::async_trait;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig};
use tokio::task::JoinHandle;

use super::DemoCrm;

const OBJECTS: [&str; 2] = ["contacts", "companies"];

pub(super) struct Demo {
    sim: HubSpotSim,
}

pub(super) async fn start() -> anyhow::Result<Demo> {
    let sim = HubSpotSim::start(HubSpotSimConfig {
        rate_limit: Some((100, Duration::from_secs(10))),
        index_lag: Duration::from_millis(500),
        ..HubSpotSimConfig::default()
    })
    .await?;
    sim.seed("contacts", 2_000, None);
    sim.seed("companies", 500, None);
    Ok(Demo { sim })
}

#[async_trait]
impl DemoCrm for Demo {
    fn id(&self) -> String {
        "hubspot-demo".into()
    }

    fn seeded(&self) -> usize {
        2_500
    }

    fn connection(&self) -> String {
        format!(
            r#"
[[connection]]
id = "hubspot-demo"
provider = "hubspot"
base_url = "{}"
access_token = "hs-test-token"
webhook_secret = "hs-test-secret"
objects = ["contacts", "companies"]
poll_interval = "2s"
rate_limit = {{ requests = 100, per = "10s" }}
archived_poll_interval = "30s"
"#,
            self.sim.base_url()
        )
    }

    fn webhook_path(&self) -> Option<String> {
        Some("/webhooks/hubspot-demo".into())
    }

    fn churn(&self, daemon: &str) -> Vec<JoinHandle<()>> {
        vec![self.sim.spawn_churn(
            Duration::from_millis(500),
            3,
            OBJECTS.iter().map(|s| s.to_string()).collect(),
            Some(format!("{daemon}/webhooks/hubspot-demo")),
        )]
    }

    async fn shutdown(self: Box<Self>) {
        self.sim.shutdown().await;
    }
}
