//! The Creatio simulator in the demo: contacts and accounts over OData, forms login with sessions that expire,
//! no webhooks (Creatio has none: the connection polls), hard deletes found by sweep.

use std::time::Duration;

use async_trait::async_trait;
use crmsyncd_sim::creatio::{CreatioSim, CreatioSimConfig};
use tokio::task::JoinHandle;

use super::DemoCrm;

const ENTITIES: [&str; 2] = ["Contact", "Account"];

pub(super) struct Demo {
    sim: CreatioSim,
}

pub(super) async fn start() -> anyhow::Result<Demo> {
    let sim = CreatioSim::start(CreatioSimConfig {
        session_ttl: Duration::from_secs(60),
        ..CreatioSimConfig::default()
    })
    .await?;
    sim.seed("Contact", 1_500, None);
    sim.seed("Account", 500, None);
    Ok(Demo { sim })
}

#[async_trait]
impl DemoCrm for Demo {
    fn id(&self) -> String {
        "creatio-demo".into()
    }

    fn seeded(&self) -> usize {
        2_000
    }

    fn connection(&self) -> String {
        let defaults = CreatioSimConfig::default();
        format!(
            r#"
[[connection]]
id = "creatio-demo"
provider = "creatio"
base_url = "{}"
username = "{}"
password = "{}"
objects = ["Contact", "Account"]
poll_interval = "2s"
rate_limit = {{ requests = 20, per = "1s" }}
sweep_interval = "30s"
"#,
            self.sim.base_url(),
            defaults.username,
            defaults.password,
        )
    }

    fn webhook_path(&self) -> Option<String> {
        None
    }

    fn churn(&self, _daemon: &str) -> Vec<JoinHandle<()>> {
        vec![self.sim.spawn_churn(
            Duration::from_millis(500),
            3,
            ENTITIES.iter().map(|s| s.to_string()).collect(),
            None,
        )]
    }

    async fn shutdown(self: Box<Self>) {
        self.sim.shutdown().await;
    }
}
