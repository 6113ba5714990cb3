//! The Salesforce simulator in the demo: accounts and contacts over SOQL, OAuth with the token endpoint's
//! `instance_url`, a daily API allocation, late commits, and Outbound Messages authenticated by a URL token.

use std::time::Duration;

use async_trait::async_trait;
use crmsyncd_sim::salesforce::{SalesforceSim, SalesforceSimConfig};
use tokio::task::JoinHandle;

use super::DemoCrm;

const OBJECTS: [&str; 2] = ["Account", "Contact"];
const HOOK_TOKEN: &str = "sf-outbound-token";

pub(super) struct Demo {
    sim: SalesforceSim,
}

pub(super) async fn start() -> anyhow::Result<Demo> {
    let sim = SalesforceSim::start(SalesforceSimConfig::default()).await?;
    sim.seed("Account", 500, None);
    sim.seed("Contact", 1_500, None);
    Ok(Demo { sim })
}

#[async_trait]
impl DemoCrm for Demo {
    fn id(&self) -> String {
        "salesforce-demo".into()
    }

    fn seeded(&self) -> usize {
        2_000
    }

    fn connection(&self) -> String {
        let oauth = &self.sim.config().oauth;
        format!(
            r#"
[[connection]]
id = "salesforce-demo"
provider = "salesforce"
base_url = "{base}"
objects = ["Account", "Contact"]
webhook_token = "{HOOK_TOKEN}"
poll_interval = "2s"
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
        Some(format!("/webhooks/salesforce-demo?token={HOOK_TOKEN}"))
    }

    fn churn(&self, daemon: &str) -> Vec<JoinHandle<()>> {
        vec![self.sim.spawn_churn(
            Duration::from_millis(500),
            3,
            OBJECTS.iter().map(|s| s.to_string()).collect(),
            Some(format!("{daemon}/webhooks/salesforce-demo?token={HOOK_TOKEN}")),
        )]
    }

    async fn shutdown(self: Box<Self>) {
        self.sim.shutdown().await;
    }
}
