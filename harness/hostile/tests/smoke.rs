//! A short flood (a few hundred connections) against an in-process daemon with a small connection cap and short
//! timeouts: it keeps answering valid webhooks and /healthz, and stores every webhook it acknowledged.

use std::path::Path;
use std::time::Duration;

use crmsyncd::{Application, Config};
use crmsyncd_hostile::{Flood, daemon_config, run, stored_events};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_slow_and_partial_connections_does_not_stop_valid_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let text = daemon_config(0, dir.path(), "smoke-token", 256).replace(
        "[http]\n",
        "[http]\nheader_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"\n",
    );
    let config = Config::parse(&text, Path::new("smoke.toml"), &|_| None).unwrap();
    let db_url = config.database.url.clone();
    let app = Application::build(config).await.unwrap();
    let target = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let report = run(&Flood {
        target,
        connections: 300,
        hold: Duration::from_secs(4),
        webhook_path: "/webhooks/od?token=smoke-token".into(),
        probe_timeout: Duration::from_secs(10),
        probe_every: Duration::from_millis(100),
    })
    .await;
    eprintln!("{report:?}");
    assert!(report.peak_open >= 256, "the flood held the cap: {}", report.peak_open);
    assert!(report.dropped_by_daemon > 0, "the daemon's timeouts closed attackers");
    assert!(
        report.webhooks_ok > 0 && report.health_ok > 0,
        "probes were answered during the flood"
    );
    let _ = stop.send(());
    daemon.await.unwrap().unwrap();
    assert!(
        stored_events(&db_url).await.unwrap() >= report.webhooks_ok,
        "every acknowledged webhook is stored"
    );
}
