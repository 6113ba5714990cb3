//! A connection flood against a running daemon: `connections` sockets held open at once, a third idle (connect,
//! send nothing), a third slowloris (a request head one byte at a time), a third partial bodies (a full head,
//! then a body that trickles and never completes). Each attacker reconnects as soon as the daemon drops it, so
//! the pressure stays constant. Meanwhile a prober sends valid webhooks and `/healthz` on fresh connections and
//! records every answer and its latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What to run.
#[derive(Debug, Clone)]
pub struct Flood {
    pub target: SocketAddr,
    /// Attacking sockets to hold open at once.
    pub connections: usize,
    /// How long to hold the flood once every attacker has connected once.
    pub hold: Duration,
    /// `/webhooks/od?token={token}` of the Odoo connection `od` (see [`daemon_config`]), for the valid probes.
    pub webhook_path: String,
    /// How long a probe may take before it counts as failed.
    pub probe_timeout: Duration,
    /// Time between probes.
    pub probe_every: Duration,
}

/// What happened.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub connects: u64,
    pub connect_errors: u64,
    /// Times the daemon closed an attacking socket (its timeouts at work).
    pub dropped_by_daemon: u64,
    pub peak_open: usize,
    pub webhooks_sent: u64,
    /// Webhooks answered 200 (each a distinct event the inbox must hold).
    pub webhooks_ok: u64,
    pub webhooks_failed: u64,
    pub health_sent: u64,
    pub health_ok: u64,
    pub health_failed: u64,
    /// Probe latencies (webhooks and health), milliseconds, sorted.
    pub latencies_ms: Vec<u64>,
    pub ramp_up: Duration,
}

impl Report {
    pub fn percentile(&self, p: f64) -> u64 {
        if self.latencies_ms.is_empty() {
            return 0;
        }
        let i = ((self.latencies_ms.len() - 1) as f64 * p).round() as usize;
        self.latencies_ms[i]
    }
}

struct Counters {
    stop: AtomicBool,
    open: AtomicUsize,
    peak: AtomicUsize,
    connects: AtomicU64,
    connect_errors: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Clone, Copy)]
enum Kind {
    Idle,
    Slowloris,
    PartialBody,
}

async fn attacker(target: SocketAddr, kind: Kind, c: Arc<Counters>, first: Arc<AtomicUsize>) {
    let mut counted_first = false;
    while !c.stop.load(Ordering::Relaxed) {
        let mut stream = match TcpStream::connect(target).await {
            Ok(s) => s,
            Err(_) => {
                c.connect_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        c.connects.fetch_add(1, Ordering::Relaxed);
        let open = c.open.fetch_add(1, Ordering::Relaxed) + 1;
        c.peak.fetch_max(open, Ordering::Relaxed);
        if !counted_first {
            counted_first = true;
            first.fetch_add(1, Ordering::Relaxed);
        }
        let closed = hold(&mut stream, kind, &c.stop).await;
        c.open.fetch_sub(1, Ordering::Relaxed);
        if closed {
            c.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Misbehaves on `stream` until the daemon closes it (true) or the flood stops (false).
async fn hold(stream: &mut TcpStream, kind: Kind, stop: &AtomicBool) -> bool {
    let head: &[u8] = match kind {
        Kind::Idle => b"",
        Kind::Slowloris => b"POST /webhooks/x HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        // A connection that exists, so the daemon reads the body (and waits for it) before it verifies anything.
        Kind::PartialBody => b"POST /webhooks/od HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n{",
    };
    let mut sent = 0;
    if matches!(kind, Kind::PartialBody) {
        if stream.write_all(head).await.is_err() {
            return true;
        }
        sent = head.len();
    }
    let mut buf = [0u8; 1024];
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        // A byte a second (slowloris, partial body), or nothing (idle); watch for the daemon closing on us.
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {} // an answer (408 to a partial body); the close follows
            Err(_) => {}
        }
        let byte: &[u8] = match kind {
            Kind::Idle => continue,
            Kind::Slowloris => &head[sent.min(head.len() - 1)..][..1],
            Kind::PartialBody => b"a",
        };
        sent += 1;
        if stream.write_all(byte).await.is_err() {
            return true;
        }
    }
}

/// One request on a fresh connection: the status, or None (refused, reset, timed out).
pub async fn probe(target: SocketAddr, request: &[u8], timeout: Duration) -> Option<u16> {
    tokio::time::timeout(timeout, async {
        let mut s = TcpStream::connect(target).await.ok()?;
        s.write_all(request).await.ok()?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer);
        text.split_whitespace().nth(1)?.parse().ok()
    })
    .await
    .ok()
    .flatten()
}

/// A valid Odoo webhook for record `id`.
pub fn webhook_request(path: &str, id: u64) -> Vec<u8> {
    let body = format!(r#"{{"_model":"res.partner","_id":{id}}}"#);
    format!(
        "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

/// Runs the flood and the prober; returns when the flood has been held for `hold` after ramp-up.
pub async fn run(flood: &Flood) -> Report {
    let c = Arc::new(Counters {
        stop: AtomicBool::new(false),
        open: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        connects: AtomicU64::new(0),
        connect_errors: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
    });
    let first = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(flood.connections);
    for i in 0..flood.connections {
        let kind = [Kind::Idle, Kind::Slowloris, Kind::PartialBody][i % 3];
        tasks.push(tokio::spawn(attacker(flood.target, kind, c.clone(), first.clone())));
        if i % 500 == 499 {
            tokio::task::yield_now().await;
        }
    }
    let prober_stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let flood = flood.clone();
        let stop = prober_stop.clone();
        tokio::spawn(async move {
            let mut report = Report::default();
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let t = Instant::now();
                let status = probe(
                    flood.target,
                    &webhook_request(&flood.webhook_path, id),
                    flood.probe_timeout,
                )
                .await;
                report.webhooks_sent += 1;
                if status == Some(200) {
                    report.webhooks_ok += 1;
                    report.latencies_ms.push(t.elapsed().as_millis() as u64);
                } else {
                    report.webhooks_failed += 1;
                }
                let t = Instant::now();
                let status = probe(flood.target, HEALTH, flood.probe_timeout).await;
                report.health_sent += 1;
                if status == Some(200) {
                    report.health_ok += 1;
                    report.latencies_ms.push(t.elapsed().as_millis() as u64);
                } else {
                    report.health_failed += 1;
                }
                tokio::time::sleep(flood.probe_every).await;
            }
            report
        })
    };
    // Ramp-up: every attacker has connected once (or a minute has passed).
    let ramp_deadline = Instant::now() + Duration::from_secs(60);
    while first.load(Ordering::Relaxed) < flood.connections && Instant::now() < ramp_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ramp_up = started.elapsed();
    tokio::time::sleep(flood.hold).await;
    prober_stop.store(true, Ordering::Relaxed);
    let mut report = prober.await.expect("the prober does not panic");
    c.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    report.connects = c.connects.load(Ordering::Relaxed);
    report.connect_errors = c.connect_errors.load(Ordering::Relaxed);
    report.dropped_by_daemon = c.dropped.load(Ordering::Relaxed);
    report.peak_open = c.peak.load(Ordering::Relaxed);
    report.latencies_ms.sort_unstable();
    report.ramp_up = ramp_up;
    report
}

/// Open file descriptors of process `pid` (Linux), or None.
pub fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count())
}

/// Resident memory of process `pid` in KiB (Linux), or None.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The config for a daemon under attack: one Odoo connection (its CRM is a closed port: only its webhook route
/// matters), SQLite in `dir`.
pub fn daemon_config(port: u16, dir: &std::path::Path, token: &str, max_connections: usize) -> String {
    format!(
        r#"
[http]
listen = "127.0.0.1:{port}"
max_connections = {max_connections}

[database]
url = "sqlite://{db}?mode=rwc"

[[connection]]
id = "od"
provider = "odoo"
base_url = "http://127.0.0.1:9"
database = "d"
username = "u"
api_key = "k"
models = ["res.partner"]
webhook_token = "{token}"
poll_interval = "1h"
request_timeout = "1s"
connect_timeout = "1s"
"#,
        db = dir.join("hostile.db").display()
    )
}

/// Webhook events stored in the daemon's database.
pub async fn stored_events(url: &str) -> anyhow::Result<u64> {
    use sea_orm::{EntityTrait, PaginatorTrait};
    let store = crmsyncd::store::Store::connect(url).await?;
    Ok(crmsyncd_entities::webhook_events::Entity::find()
        .count(store.db())
        .await?)
}
