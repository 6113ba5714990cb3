//! Scenario 4, many connections: N HubSpot connections, each with its own id, against one HubSpot simulator,
//! polling every 60 s. The daemon is the real release binary, run as a child process so its memory and CPU are
//! its own (the simulator lives in this process). Measured per run: the time from spawn until
//! `crmsyncd_connection_actors` reaches N (the gauge an operator watches), RSS once all actors are up and again
//! after the measured window (about one poll interval, so every connection has polled once), the peak (VmHWM),
//! the daemon's CPU over that window as a share of one core, and `/metrics` scrapes (time, body size, series).
//!
//! Reference in the same run: the same daemon with no connections (its fixed RSS), and N bare ractor actors in
//! this process, each with a governor rate limiter and a pending timer (the minimal prototype).

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use crmsyncd::metrics::names;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::child::{cpu_seconds, daemon_binary, free_port, peak_rss, pid_of, rss, spawn_daemon, sum_of};
use crate::db::Db;

/// What one run is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub connections: usize,
    pub db: Db,
    pub poll_interval: Duration,
    /// How long CPU is measured once all actors are up (RSS is read again at its end).
    pub window: Duration,
    pub scrapes: usize,
}

/// One run's figures.
#[derive(Debug, Clone)]
pub struct ManyRun {
    pub connections: usize,
    /// From spawn until `crmsyncd_connection_actors` = N.
    pub startup: Duration,
    /// VmRSS once all actors are up, and at the end of the window; VmHWM at the end.
    pub rss_started: u64,
    pub rss_after_window: u64,
    pub peak_rss: u64,
    /// The same daemon with no connections, VmRSS a second after it answered `/metrics`.
    pub baseline_rss: u64,
    /// The daemon's utime+stime over the window, in % of one core.
    pub cpu_percent: f64,
    pub window: Duration,
    /// CRM requests the daemon made during the window (`crmsyncd_crm_requests_total`, all outcomes).
    pub requests_in_window: f64,
    pub scrape_ms: Vec<f64>,
    pub body_bytes: usize,
    pub series: usize,
    /// Series carrying a real connection's `connection` label, divided by N.
    pub series_per_connection: f64,
}

impl ManyRun {
    /// RSS above the empty daemon's, per connection, after the window.
    pub fn bytes_per_connection(&self) -> f64 {
        (self.rss_after_window.saturating_sub(self.baseline_rss)) as f64 / self.connections as f64
    }
}

pub async fn measure(setting: Setting) -> anyhow::Result<ManyRun> {
    let binary = daemon_binary()?;
    let sim = HubSpotSim::start(HubSpotSimConfig::default()).await?;
    sim.seed("contacts", 5, None);
    let base_url = sim.base_url();
    let dir = tempfile::tempdir()?;

    // The empty daemon, for its fixed memory.
    let baseline_rss = {
        let db = setting.db.fresh().await?;
        let port = free_port()?;
        let config = dir.path().join("empty.toml");
        std::fs::write(
            &config,
            daemon_config(&base_url, &db.url, port, 0, setting.poll_interval),
        )?;
        let mut daemon = Daemon::spawn(&binary, &config, port)?;
        daemon.wait_for_actors(0, Duration::from_secs(60)).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss(daemon.pid)?;
        daemon.stop().await;
        db.cleanup().await;
        rss
    };

    let db = setting.db.fresh().await?;
    let port = free_port()?;
    let config = dir.path().join("many.toml");
    std::fs::write(
        &config,
        daemon_config(&base_url, &db.url, port, setting.connections, setting.poll_interval),
    )?;
    let started = Instant::now();
    let mut daemon = Daemon::spawn(&binary, &config, port)?;
    let startup_limit = Duration::from_secs(600);
    daemon.wait_for_actors(setting.connections, startup_limit).await?;
    let startup = started.elapsed();
    let rss_started = rss(daemon.pid)?;

    let requests_before = sum_of(&daemon.scrape().await?.0, names::CRM_REQUESTS_TOTAL);
    let cpu_before = cpu_seconds(daemon.pid)?;
    let window_started = Instant::now();
    tokio::time::sleep(setting.window).await;
    let cpu_after = cpu_seconds(daemon.pid)?;
    let window = window_started.elapsed();
    let rss_after_window = rss(daemon.pid)?;
    let peak = peak_rss(daemon.pid)?;
    let requests_after = sum_of(&daemon.scrape().await?.0, names::CRM_REQUESTS_TOTAL);

    let mut scrape_ms = Vec::new();
    let mut last = String::new();
    for _ in 0..setting.scrapes {
        let (text, took) = daemon.scrape().await?;
        scrape_ms.push(took.as_secs_f64() * 1000.0);
        last = text;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.stop().await;
    db.cleanup().await;
    sim.shutdown().await;

    let series = last.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count();
    let per_connection = last
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("connection=\"") && !l.contains("connection=\"unknown\""))
        .count();
    Ok(ManyRun {
        connections: setting.connections,
        startup,
        rss_started,
        rss_after_window,
        peak_rss: peak,
        baseline_rss,
        cpu_percent: 100.0 * (cpu_after - cpu_before) / window.as_secs_f64(),
        window,
        requests_in_window: requests_after - requests_before,
        scrape_ms,
        body_bytes: last.len(),
        series,
        series_per_connection: per_connection as f64 / setting.connections.max(1) as f64,
    })
}

/// The daemon as a child process.
struct Daemon {
    child: tokio::process::Child,
    pid: u32,
    metrics: String,
    client: reqwest::Client,
}

impl Daemon {
    fn spawn(binary: &std::path::Path, config: &std::path::Path, port: u16) -> anyhow::Result<Self> {
        let child = spawn_daemon(binary, config)?;
        let pid = pid_of(&child)?;
        Ok(Self {
            child,
            pid,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
            client: reqwest::Client::new(),
        })
    }

    /// Waits until `crmsyncd_connection_actors` says `n`.
    async fn wait_for_actors(&mut self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let want = format!("\n{} {n}\n", names::CONNECTION_ACTORS);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the daemon exited early: {status}");
            }
            anyhow::ensure!(Instant::now() < deadline, "{n} actors were not up within {limit:?}");
            if let Ok((text, _)) = self.scrape().await
                && text.contains(&want)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One `/metrics` scrape: the body and the time until all of it arrived.
    async fn scrape(&self) -> anyhow::Result<(String, Duration)> {
        let started = Instant::now();
        let text = self
            .client
            .get(&self.metrics)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok((text, started.elapsed()))
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn daemon_config(base_url: &str, db_url: &str, port: u16, connections: usize, poll: Duration) -> String {
    let mut out = format!("[http]\nlisten = \"127.0.0.1:{port}\"\n\n[database]\nurl = \"{db_url}\"\n");
    for i in 0..connections {
        out.push_str(&format!(
            "\n[[connection]]\nid = \"hs-{i:06}\"\nprovider = \"hubspot\"\nbase_url = \"{base_url}\"\naccess_token = \"hs-test-token\"\nobjects = [\"contacts\"]\npoll_interval = \"{}ms\"\n",
            poll.as_millis()
        ));
    }
    out
}

/// The reference: `n` bare ractor actors in this process, each holding a governor rate limiter and a pending
/// timer. Returns this process's RSS growth per actor, in bytes.
pub async fn bare_actor_bytes(n: usize) -> anyhow::Result<f64> {
    let pid = std::process::id();
    let before = rss(pid)?;
    let mut actors = Vec::with_capacity(n);
    for _ in 0..n {
        let (actor, handle) = Actor::spawn(None, BareActor, ()).await?;
        actors.push((actor, handle));
    }
    let after = rss(pid)?;
    for (actor, handle) in actors {
        actor.stop(None);
        let _ = handle.await;
    }
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

struct BareActor;

struct BareState {
    limiter: governor::DefaultDirectRateLimiter,
    _timer: tokio::task::AbortHandle,
}

impl Actor for BareActor {
    type Msg = ();
    type State = BareState;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<()>, _: ()) -> Result<BareState, ActorProcessingErr> {
        let quota = governor::Quota::per_second(NonZeroU32::new(10).expect("non-zero"));
        Ok(BareState {
            limiter: governor::RateLimiter::direct(quota),
            _timer: myself.send_after(Duration::from_secs(3600), || ()).abort_handle(),
        })
    }

    async fn handle(&self, _: ActorRef<()>, _: (), state: &mut BareState) -> Result<(), ActorProcessingErr> {
        let _ = state.limiter.check();
        Ok(())
    }
}
