//! The Zoho simulator in the demo: leads and contacts in an org on UTC+05:30, OAuth with Zoho's 200-status
//! refusals, API credits and a concurrency limit, and notification channels the daemon subscribes and renews.

use std::time::Duration;

use async_trait::async_trait;
use crmsyncd_sim::zoho::{ZohoSim, ZohoSimConfig};
use tokio::task::JoinHandle;

use super::DemoCrm;

const MODULES: [&str; 2] = ["Leads", "Contacts"];

pub(super) struct Demo {
    sim: ZohoSim,
}

pub(super) async fn start() -> anyhow::Result<Demo> {
    let sim = ZohoSim::start(ZohoSimConfig {
        max_concurrent: Some(10),
        ..ZohoSimConfig::default()
    })
    .await?;
    sim.seed("Leads", 1_000, None);
    sim.seed("Contacts", 1_000, None);
    Ok(Demo { sim })
}

#[async_trait]
impl DemoCrm for Demo {
    fn id(&self) -> String {
        "zoho-demo".into()
    }

    fn seeded(&self) -> usize {
        2_000
    }

    fn connection(&self) -> String {
        let oauth = ZohoSimConfig::default().oauth;
        format!(
            r#"
[[connection]]
id = "zoho-demo"
provider = "zoho"
base_url = "{base}"
modules = ["Leads", "Contacts"]
notify_token = "zoho-demo-notify-token"
poll_interval = "2s"
rate_limit = {{ requests = 50, per = "1s" }}
oauth = {{ token_url = "{token_url}", client_id = "{client_id}", client_secret = "{client_secret}", refresh_token = "{refresh_token}" }}
"#,
            base = self.sim.base_url(),
            token_url = self.sim.token_url(),
            client_id = oauth.client_id,
            client_secret = oauth.client_secret,
            refresh_token = oauth.refresh_token,
        )
    }

    fn webhook_path(&self) -> Option<String> {
        Some("/webhooks/zoho-demo (subscribed by the daemon)".into())
    }

    fn churn(&self, _daemon: &str) -> Vec<JoinHandle<()>> {
        // Zoho notifies the channel the daemon subscribed; no URL to give it.
        vec![self.sim.spawn_churn(
            Duration::from_millis(500),
            3,
            MODULES.iter().map(|s| s.to_string()).collect(),
            None,
        )]
    }

    async fn shutdown(self: Box<Self>) {
        self.sim.shutdown().await;
    }
}
