//! `cargo build --release --bin crmsyncd && cargo run -p crmsyncd-hostile --release -- --connections 10000`:
//! starts the real daemon binary, floods it, probes it, and checks it kept answering, stored every
//! acknowledged webhook, and still shuts down cleanly.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use crmsyncd_hostile::{Flood, daemon_config, open_fds, probe, rss_kib, run, stored_events};

#[derive(Parser)]
struct Args {
    /// Attacking connections held open at once.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Seconds to hold the flood after ramp-up.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// The daemon's http.max_connections (it caps this below its open-file limit).
    #[arg(long, default_value_t = 16_384)]
    max_connections: usize,
    /// The daemon binary (default: $CARGO_TARGET_DIR or ./target, release).
    #[arg(long)]
    binary: Option<PathBuf>,
}

const TOKEN: &str = "hostile-harness-webhook-token";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_fd_limit();
    let binary = args.binary.clone().unwrap_or_else(|| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        PathBuf::from(target).join("release/crmsyncd")
    });
    if !binary.exists() {
        bail!("{} not found: cargo build --release --bin crmsyncd", binary.display());
    }
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = dir.path().join("crmsyncd.toml");
    std::fs::write(&config, daemon_config(port, dir.path(), TOKEN, args.max_connections))?;
    let mut daemon = Command::new(&binary)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log"))?)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = daemon.id();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let outcome = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while probe(
            target,
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            Duration::from_secs(1),
        )
        .await
            != Some(200)
        {
            if Instant::now() > deadline {
                bail!("the daemon did not come up");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let fds_before = open_fds(pid);
        let sampler = tokio::spawn(async move {
            let (mut max_fds, mut max_rss) = (0, 0);
            loop {
                max_fds = max_fds.max(open_fds(pid).unwrap_or(0));
                max_rss = max_rss.max(rss_kib(pid).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(500)).await;
                if open_fds(pid).is_none() {
                    return (max_fds, max_rss);
                }
            }
        });
        let started = Instant::now();
        let report = run(&Flood {
            target,
            connections: args.connections,
            hold: Duration::from_secs(args.seconds),
            webhook_path: format!("/webhooks/od?token={TOKEN}"),
            probe_timeout: Duration::from_secs(15),
            probe_every: Duration::from_millis(100),
        })
        .await;
        let elapsed = started.elapsed();
        let alive_after = probe(
            target,
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            Duration::from_secs(15),
        )
        .await;
        Ok((report, elapsed, fds_before, alive_after, sampler))
    });
    let (report, elapsed, fds_before, alive_after, sampler) = match outcome {
        Ok(o) => o,
        Err(e) => {
            let _ = daemon.kill();
            return Err(e);
        }
    };
    let crashed = daemon.try_wait()?;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let exit = daemon.wait()?;
    let (max_fds, max_rss) = runtime.block_on(sampler)?;
    let stored = runtime.block_on(stored_events(&format!(
        "sqlite://{}?mode=rw",
        dir.path().join("hostile.db").display()
    )))?;
    println!("connections held      {}", args.connections);
    println!("ramp-up               {:.1?}", report.ramp_up);
    println!("run time              {elapsed:.1?}");
    println!(
        "attacker connects     {} ({} connect errors)",
        report.connects, report.connect_errors
    );
    println!("dropped by daemon     {}", report.dropped_by_daemon);
    println!("peak open (client)    {}", report.peak_open);
    println!("daemon fds            {fds_before:?} before, {max_fds} peak");
    println!("daemon RSS peak       {} MiB", max_rss / 1024);
    println!(
        "webhooks              {} sent, {} ok, {} failed",
        report.webhooks_sent, report.webhooks_ok, report.webhooks_failed
    );
    println!(
        "healthz               {} sent, {} ok, {} failed",
        report.health_sent, report.health_ok, report.health_failed
    );
    println!(
        "probe latency ms      p50 {} p99 {} max {}",
        report.percentile(0.5),
        report.percentile(0.99),
        report.latencies_ms.last().copied().unwrap_or(0)
    );
    println!("inbox events          {stored} (acknowledged {})", report.webhooks_ok);
    println!(
        "after the flood       /healthz {alive_after:?}; crashed during: {}",
        crashed.is_some()
    );
    println!("exit on SIGTERM       {exit}");
    let mut problems = Vec::new();
    if crashed.is_some() {
        problems.push("the daemon died during the flood".to_string());
    }
    if alive_after != Some(200) {
        problems.push("no /healthz after the flood".into());
    }
    if report.webhooks_ok == 0 || report.health_ok == 0 {
        problems.push("no probe was answered during the flood".into());
    }
    if stored < report.webhooks_ok {
        problems.push(format!("{} acknowledged webhooks, {stored} stored", report.webhooks_ok));
    }
    if !exit.success() {
        problems.push(format!("exit {exit} on SIGTERM"));
    }
    if problems.is_empty() {
        println!("RESULT: ok");
        Ok(())
    } else {
        bail!("RESULT: failed: {}", problems.join("; "))
    }
}

/// The harness holds as many sockets as it attacks with.
fn raise_fd_limit() {
    let _ = crmsyncd::http::fd_limit::raise_to_hard_limit();
}
