//! The Klaviyo simulator in the demo: profiles, both of Klaviyo's windows, reads that lag writes, signed webhooks.

use std::time::Duration;

use async_trait::async_trait;
use crmsyncd_sim::klaviyo::{DOCUMENTED_LIMITS, KlaviyoSim, KlaviyoSimConfig, PROFILES};
use tokio::task::JoinHandle;

use super::DemoCrm;

pub(super) struct Demo {
    sim: KlaviyoSim,
}

pub(super) async fn start() -> anyhow::Result<Demo> {
    let sim = KlaviyoSim::start(KlaviyoSimConfig {
        rate_limits: DOCUMENTED_LIMITS.to_vec(),
        read_lag: Duration::from_millis(300),
        ..KlaviyoSimConfig::default()
    })
    .await?;
    sim.seed(PROFILES, 2_000, None);
    Ok(Demo { sim })
}

#[async_trait]
impl DemoCrm for Demo {
    fn id(&self) -> String {
        "klaviyo-demo".into()
    }

    fn seeded(&self) -> usize {
        2_000
    }

    fn connection(&self) -> String {
        format!(
            r#"
[[connection]]
id = "klaviyo-demo"
provider = "klaviyo"
base_url = "{}"
api_key = "{}"
webhook_secret = "{}"
poll_interval = "2s"
sweep_interval = "30s"
"#,
            self.sim.base_url(),
            KlaviyoSimConfig::default().api_key,
            self.sim.webhook_secret(),
        )
    }

    fn webhook_path(&self) -> Option<String> {
        Some("/webhooks/klaviyo-demo".into())
    }

    fn churn(&self, daemon: &str) -> Vec<JoinHandle<()>> {
        vec![self.sim.spawn_churn(
            Duration::from_millis(500),
            3,
            vec![PROFILES.to_string()],
            Some(format!("{daemon}/webhooks/klaviyo-demo")),
        )]
    }

    async fn shutdown(self: Box<Self>) {
        self.sim.shutdown().await;
    }
}
