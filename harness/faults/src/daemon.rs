//! Starting the daemon in this process with a given config, and reading its metrics.

use std::path::Path;

use crmsyncd::{AppHandle, Application, Config};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A daemon running in this process; stopped (as by SIGTERM) on [`Daemon::stop`] or drop.
pub struct Daemon {
    pub handle: AppHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Daemon {
    /// Starts the daemon on `database_url` with `connections` (`[[connection]]` tables).
    pub async fn start(database_url: &str, connections: &str) -> anyhow::Result<Daemon> {
        let port = free_port()?;
        let text = format!(
            r#"
[http]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[database]
url = "{database_url}"

[supervisor]
min_backoff = "100ms"
max_backoff = "2s"
max_restarts = 1000
healthy_after = "60s"
shutdown_grace = "5s"

{connections}
"#
        );
        let config = Config::parse(&text, Path::new("faults.toml"), &|_| None).map_err(|e| anyhow::anyhow!("{e}"))?;
        let app = Application::build(config).await?;
        let handle = app.handle();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        Ok(Daemon {
            handle,
            stop: Some(tx),
            task: Some(task),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.base_url())
    }

    /// `crmsyncd_retries_total` for `connection` and `reason`, read from `/metrics` (0 when absent).
    pub async fn retries(&self, client: &reqwest::Client, connection: &str, reason: &str) -> anyhow::Result<f64> {
        let text = client.get(self.url("/metrics")).send().await?.text().await?;
        Ok(counter(
            &text,
            crmsyncd::metrics::names::RETRIES_TOTAL,
            &[("connection", connection), ("reason", reason)],
        ))
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The sum of the samples of `family` whose labels include every one of `labels`, in Prometheus text format.
pub fn counter(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A free local port (bound then released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `[[connection]]` table for a HubSpot simulator at `base_url`, syncing contacts.
pub fn hubspot_connection(id: &str, base_url: &str, poll: &str, rate: u32, backoff: (&str, &str)) -> String {
    format!(
        r#"
[[connection]]
id = "{id}"
provider = "hubspot"
base_url = "{base_url}"
access_token = "hs-test-token"
webhook_secret = "hs-test-secret"
objects = ["contacts"]
poll_interval = "{poll}"
rate_limit = {{ requests = {rate}, per = "1s" }}
overlap = "2s"
archived_poll_interval = "1s"
request_timeout = "1s"
connect_timeout = "1s"
retry_backoff = {{ min = "{min}", max = "{max}" }}
page_size = 50
"#,
        min = backoff.0,
        max = backoff.1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_sums_matching_samples() {
        let text = "# HELP x\ncrmsyncd_retries_total{connection=\"a\",reason=\"database\"} 3\n\
                    crmsyncd_retries_total{connection=\"b\",reason=\"database\"} 5\n";
        let got = counter(
            text,
            "crmsyncd_retries_total",
            &[("connection", "a"), ("reason", "database")],
        );
        assert_eq!(got, 3.0);
        assert_eq!(counter(text, "crmsyncd_retries_total", &[("reason", "database")]), 8.0);
    }
}
