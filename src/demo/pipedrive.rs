//! The Pipedrive simulator in the demo: persons, organizations and deals with 2-second windows, a search index
//! that lags, merges, and v2 webhooks authenticated by HTTP Basic.

use std::time::Duration;

use async_trait::async_trait;
use crmsyncd_sim::pipedrive::{KEY_FIELD, PipedriveSim, PipedriveSimConfig};
use tokio::task::JoinHandle;

use super::DemoCrm;

const ENTITIES: [&str; 3] = ["persons", "organizations", "deals"];

pub(super) struct Demo {
    sim: PipedriveSim,
}

pub(super) async fn start() -> anyhow::Result<Demo> {
    let sim = PipedriveSim::start(PipedriveSimConfig {
        rate_limit: Some((80, Duration::from_secs(2))),
        index_lag: Duration::from_secs(1),
        ..PipedriveSimConfig::default()
    })
    .await?;
    sim.seed("persons", 1_200, None);
    sim.seed("organizations", 400, None);
    sim.seed("deals", 400, None);
    Ok(Demo { sim })
}

#[async_trait]
impl DemoCrm for Demo {
    fn id(&self) -> String {
        "pipedrive-demo".into()
    }

    fn seeded(&self) -> usize {
        2_000
    }

    fn connection(&self) -> String {
        let defaults = PipedriveSimConfig::default();
        format!(
            r#"
[[connection]]
id = "pipedrive-demo"
provider = "pipedrive"
base_url = "{}"
api_token = "{}"
objects = ["persons", "organizations", "deals"]
webhook_user = "{}"
webhook_password = "{}"
push_key_field = "{KEY_FIELD}"
poll_interval = "2s"
sweep_interval = "30s"
"#,
            self.sim.base_url(),
            defaults.api_token,
            defaults.webhook_user,
            defaults.webhook_password,
        )
    }

    fn webhook_path(&self) -> Option<String> {
        Some("/webhooks/pipedrive-demo".into())
    }

    fn churn(&self, daemon: &str) -> Vec<JoinHandle<()>> {
        vec![self.sim.spawn_churn(
            Duration::from_millis(500),
            3,
            ENTITIES.iter().map(|s| s.to_string()).collect(),
            Some(format!("{daemon}/webhooks/pipedrive-demo")),
        )]
    }

    async fn shutdown(self: Box<Self>) {
        self.sim.shutdown().await;
    }
}
