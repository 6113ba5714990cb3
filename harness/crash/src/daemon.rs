//! The real `crmsyncd` binary as a child process: its config, its log, start, SIGKILL and SIGTERM.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crmsyncd_sim::hubspot::HubSpotSim;
use crmsyncd_sim::odoo::OdooSim;
use tokio::process::{Child, Command};

/// The bearer token of the daemon's `/v1` API.
pub(crate) const API_TOKEN: &str = "crash-harness-token";
pub(crate) const HUBSPOT: &str = "hubspot";
pub(crate) const ODOO: &str = "odoo";
pub(crate) const ODOO_HOOK_TOKEN: &str = "odoo-hook-token";

pub(crate) struct Daemon {
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Daemon {
    /// Writes the config (one connection to each simulator, the same port for every start).
    pub(crate) fn new(
        binary: &Path,
        dir: &Path,
        db_url: &str,
        hubspot: &HubSpotSim,
        odoo: &OdooSim,
    ) -> std::io::Result<Daemon> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = dir.join("crmsyncd.toml");
        std::fs::write(&config, config_text(port, db_url, hubspot, odoo))?;
        Ok(Daemon {
            binary: binary.to_owned(),
            config,
            log: dir.join("daemon.log"),
            port,
            child: None,
        })
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn start(&mut self) -> std::io::Result<()> {
        let log = OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.binary)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, then reap it.
    pub(crate) async fn kill(&mut self) -> std::io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// SIGTERM, and wait (at most a minute) for exit status 0.
    pub(crate) async fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id().ok_or_else(|| anyhow::anyhow!("the daemon already exited"))?;
        let sent = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("the daemon did not exit within 60 s of SIGTERM"))??;
        anyhow::ensure!(status.success(), "the daemon exited with {status} after SIGTERM");
        Ok(())
    }
}

fn config_text(port: u16, db_url: &str, hubspot: &HubSpotSim, odoo: &OdooSim) -> String {
    format!(
        r#"# Written by the crash harness.
[http]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
api_token = "{API_TOKEN}"

[database]
url = "{db_url}"

[supervisor]
min_backoff = "100ms"
max_backoff = "2s"
shutdown_grace = "10s"

[[connection]]
id = "{HUBSPOT}"
provider = "hubspot"
base_url = "{hubspot_url}"
access_token = "hs-test-token"
webhook_secret = "hs-test-secret"
objects = ["contacts", "companies"]
page_size = 50
poll_interval = "300ms"
archived_poll_interval = "1s"
overlap = "2s"
rate_limit = {{ requests = 1000, per = "1s" }}
request_timeout = "5s"
connect_timeout = "1s"
retry_backoff = {{ min = "50ms", max = "1s" }}

[[connection]]
id = "{ODOO}"
provider = "odoo"
base_url = "{odoo_url}"
database = "sim"
username = "api@example.com"
api_key = "odoo-test-key"
models = ["res.partner", "crm.lead"]
webhook_token = "{ODOO_HOOK_TOKEN}"
page_size = 50
poll_interval = "300ms"
sweep_interval = "2s"
overlap = "5s"
rate_limit = {{ requests = 1000, per = "1s" }}
request_timeout = "5s"
connect_timeout = "1s"
retry_backoff = {{ min = "50ms", max = "1s" }}
"#,
        hubspot_url = hubspot.base_url(),
        odoo_url = odoo.base_url(),
    )
}
