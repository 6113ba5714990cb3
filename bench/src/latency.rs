//! Scenario 5, webhook to record: how long after a webhook's 200 the changed record is visible in `records`, the
//! fetch from the CRM included, under a steady open-loop rate.
//!
//! For each event the bench first changes a contact in the HubSpot simulator (its `phone` becomes a marker, `m<n>`,
//! so the stored row proves it is the new version), then sends the signed v3 webhook naming it, on a fixed
//! schedule whatever the answers (open loop: a slow answer does not slow the sender, so no coordinated omission).
//! An observer follows the `records` change feed (`Store::changes_since`, ~1 ms sleep when caught up) and notes
//! when each marker first appears; a newer marker of the same contact also proves the older change visible.
//!
//! The daemon is the release binary, run as a child process: it gets its own runtime and threads, as in
//! production, instead of sharing the bench's with the sender, the simulator and the observer.
//!
//! The ceiling, on a fresh database in the same run, is the one step the path cannot avoid seen through the same
//! observer: a bare `Store::apply_page` of the one changed record at the same rate, timed from the call to
//! visible. It is the database's commit plus what the bench's own detection adds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use crmsyncd::model::RemoteRecord;
use crmsyncd::store::Store;
use crmsyncd_sim::hubspot::{HubSpotSim, HubSpotSimConfig, sign_v3};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::task::{JoinHandle, JoinSet};

use crate::child::{daemon_binary, free_port, spawn_daemon};
use crate::db::Db;

/// The client secret the daemon's connection verifies with.
const SECRET: &str = "bench-client-secret";
/// Contacts the simulator holds; event `n` changes contact `n % CONTACTS`, so one contact changes every
/// `CONTACTS / rate` seconds.
pub const CONTACTS: usize = 5_000;
/// The property that carries the marker (one the daemon reads by default).
const MARKER: &str = "phone";
/// What the observer sleeps when it has caught up with the change feed: its polling granularity.
const POLL_SLEEP: Duration = Duration::from_millis(1);
/// Rows the observer reads per query.
const FEED_PAGE: u64 = 1000;
/// How long after the last send an answered event may still become visible before it counts as never seen.
const GRACE: Duration = Duration::from_secs(15);
/// The longest the daemon's first pull of the seeded contacts may take.
const FIRST_PULL: Duration = Duration::from_secs(120);

/// One run's setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub db: Db,
    /// Webhooks per second.
    pub rate: u32,
    pub warmup: Duration,
    pub measure: Duration,
    /// The connection's `poll_interval`: its pull passes run during the measurement, as in production.
    pub poll_interval: Duration,
}

/// One run's figures (the warm-up excluded).
pub struct LatencyRun {
    /// Webhooks scheduled in the measured window.
    pub sent: u64,
    /// Webhooks sent per second in the measured window (from the first send to the last).
    pub send_rate: f64,
    /// Webhooks not answered 200.
    pub errors: u64,
    /// Webhooks answered 200 whose change never became visible.
    pub unseen: u64,
    /// Visible − 200 answered, in microseconds (0 when visible before the bench read the answer).
    pub after_answer: Histogram<u64>,
    /// Visible − scheduled send, in microseconds: includes the webhook's own answer time and any sender lag.
    pub after_schedule: Histogram<u64>,
    /// The ceiling: visible − start of a bare `apply_page` of the record, in microseconds.
    pub ceiling: Histogram<u64>,
    /// Ceiling writes never seen (must be 0).
    pub ceiling_unseen: u64,
    /// The observer's mean time between two reads of the change feed during the measurement, in ms.
    pub poll_period_ms: f64,
    /// The simulator's batch reads during the measured window, per webhook answered: one per inbox round, so
    /// its inverse is the events a round takes, and `1 / (rate * reads_per_webhook)` a busy round's length.
    pub reads_per_webhook: f64,
    /// The daemon's mean batch-read time (its `crm_request_duration_seconds`, the whole run), in ms: the fetch's
    /// share of a round.
    pub fetch_mean_ms: f64,
}

impl LatencyRun {
    pub fn ms(histogram: &Histogram<u64>, q: f64) -> f64 {
        histogram.value_at_quantile(q) as f64 / 1000.0
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// When each event's change was first seen in `records`. Event `n` changes contact `n % contacts` to marker `n`,
/// so a row with marker `m` also shows every earlier change of that contact: `m - contacts`, `m - 2 * contacts`, …
struct Seen {
    at: Vec<Option<Instant>>,
    contacts: usize,
}

impl Seen {
    fn new(events: usize, contacts: usize) -> Self {
        Self {
            at: vec![None; events],
            contacts,
        }
    }

    fn mark(&mut self, marker: usize, now: Instant) {
        let mut k = Some(marker);
        while let Some(i) = k {
            match self.at.get_mut(i) {
                Some(Some(_)) => break,
                Some(slot) => *slot = Some(now),
                None => {}
            }
            k = i.checked_sub(self.contacts);
        }
    }
}

/// The marker in a stored record, if it has one.
fn marker_of(data: &Value) -> Option<usize> {
    data.get(MARKER)?.as_str()?.strip_prefix('m')?.parse().ok()
}

/// A change-feed follower: reads `changes_since` in a loop, sleeping [`POLL_SLEEP`] when caught up, and marks
/// the markers of `connection`'s rows as seen. Returns its number of reads and how long it ran.
fn observe(
    store: Store,
    connection: &'static str,
    after_seq: i64,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<anyhow::Result<(u64, Duration)>> {
    tokio::spawn(async move {
        let started = Instant::now();
        let (mut seq, mut reads) = (after_seq, 0u64);
        while !stop.load(Ordering::Acquire) {
            let rows = store.changes_since(seq, FEED_PAGE).await?;
            reads += 1;
            let now = Instant::now();
            {
                let mut seen = seen.lock().expect("seen lock");
                for row in &rows {
                    seq = row.change_seq;
                    if row.connection_id == connection
                        && let Some(marker) = marker_of(&row.data)
                    {
                        seen.mark(marker, now);
                    }
                }
            }
            if (rows.len() as u64) < FEED_PAGE {
                tokio::time::sleep(POLL_SLEEP).await;
            }
        }
        Ok((reads, started.elapsed()))
    })
}

/// Waits until every event in `wanted` is seen, or `GRACE` has passed.
async fn settle(seen: &Mutex<Seen>, wanted: &[usize]) {
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if wanted.iter().all(|&i| seen.lock().expect("seen lock").at[i].is_some()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One run: the ceiling on a fresh database, then the daemon on another.
pub async fn measure(setting: Setting) -> anyhow::Result<LatencyRun> {
    let binary = daemon_binary()?;
    // The ceiling first: an idle machine for both, neither contending with the other.
    let (ceiling, ceiling_unseen) = ceiling(setting).await?;

    let sim = HubSpotSim::start(HubSpotSimConfig::default()).await?;
    let ids = sim.seed("contacts", CONTACTS, None);
    let db = setting.db.fresh().await?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let config = dir.path().join("bench-latency.toml");
    std::fs::write(
        &config,
        daemon_config(port, &db.url, &sim.base_url(), setting.poll_interval),
    )?;
    let mut child = spawn_daemon(&binary, &config)?;

    let observer_store = Store::connect(&db.url).await?;
    let after_seq = first_pull(&observer_store, &mut child).await?;

    let events = (setting.rate as f64 * (setting.warmup + setting.measure).as_secs_f64()) as usize;
    let seen = Arc::new(Mutex::new(Seen::new(events, CONTACTS)));
    let stop = Arc::new(AtomicBool::new(false));
    let observer = observe(observer_store.clone(), "bench", after_seq, seen.clone(), stop.clone());

    let uri = format!("http://127.0.0.1:{port}/webhooks/bench");
    let client = reqwest::Client::builder().no_proxy().build()?;
    let period = Duration::from_secs_f64(1.0 / setting.rate as f64);
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + setting.warmup;
    let mut sends: JoinSet<(usize, Instant, Instant, bool)> = JoinSet::new();
    for n in 0..events {
        let scheduled = start + period * n as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let mut change = serde_json::Map::new();
        change.insert(MARKER.into(), Value::String(format!("m{n}")));
        let id = &ids[n % CONTACTS];
        sim.update("contacts", id, change);
        let request = signed_event(&client, &uri, id, n);
        sends.spawn(async move {
            let sent = Instant::now();
            let ok = matches!(request.send().await, Ok(answer) if answer.status() == reqwest::StatusCode::OK);
            (n, sent, Instant::now(), ok)
        });
    }
    let schedule_end = start + period * events as u32;
    let mut answered: Vec<Option<(Instant, Instant)>> = vec![None; events];
    while let Some(done) = sends.join_next().await {
        let (n, sent, at, ok) = done?;
        if ok {
            answered[n] = Some((sent, at));
        }
    }
    let measured: Vec<usize> = (0..events)
        .filter(|&n| start + period * n as u32 >= measure_from)
        .collect();
    let wanted: Vec<usize> = measured.iter().copied().filter(|&n| answered[n].is_some()).collect();
    settle(&seen, &wanted).await;
    stop.store(true, Ordering::Release);
    let (reads, observed) = observer.await??;

    let mut run = LatencyRun {
        sent: measured.len() as u64,
        send_rate: 0.0,
        errors: (measured.len() - wanted.len()) as u64,
        unseen: 0,
        after_answer: histogram(),
        after_schedule: histogram(),
        ceiling,
        ceiling_unseen,
        poll_period_ms: observed.as_secs_f64() * 1000.0 / reads.max(1) as f64,
        reads_per_webhook: 0.0,
        fetch_mean_ms: 0.0,
    };
    let sent_at: Vec<Instant> = wanted.iter().filter_map(|&n| answered[n].map(|(s, _)| s)).collect();
    if let (Some(first), Some(last)) = (sent_at.iter().min(), sent_at.iter().max())
        && last > first
    {
        run.send_rate = (sent_at.len() - 1) as f64 / last.duration_since(*first).as_secs_f64();
    }
    {
        let seen = seen.lock().expect("seen lock");
        for &n in &wanted {
            let (_, answer) = answered[n].expect("wanted events were answered");
            let Some(visible) = seen.at[n] else {
                run.unseen += 1;
                continue;
            };
            let scheduled = start + period * n as u32;
            let _ = run
                .after_answer
                .record(visible.saturating_duration_since(answer).as_micros().max(1) as u64);
            let _ = run
                .after_schedule
                .record(visible.saturating_duration_since(scheduled).as_micros().max(1) as u64);
        }
    }
    let reads = sim
        .log()
        .snapshot()
        .iter()
        .filter(|r| r.operation == "batch_read" && r.at >= measure_from && r.at <= schedule_end)
        .count();
    run.reads_per_webhook = reads as f64 / wanted.len().max(1) as f64;

    run.fetch_mean_ms = fetch_mean_ms(&client, port).await?;

    child.start_kill()?;
    let _ = child.wait().await;
    observer_store.close().await;
    db.cleanup().await;
    sim.shutdown().await;
    Ok(run)
}

/// The mean of the daemon's batch-read durations, from its `/metrics`, in ms.
async fn fetch_mean_ms(client: &reqwest::Client, port: u16) -> anyhow::Result<f64> {
    let text = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let series = |suffix: &str| -> f64 {
        let name = format!("{}{suffix}{{", crmsyncd::metrics::names::CRM_REQUEST_DURATION_SECONDS);
        text.lines()
            .filter(|l| l.starts_with(&name) && l.contains("operation=\"batch_read\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (sum, count) = (series("_sum"), series("_count"));
    Ok(if count > 0.0 { 1000.0 * sum / count } else { 0.0 })
}

/// Waits until the daemon's first pull has stored every seeded contact; returns the change feed's position then.
async fn first_pull(store: &Store, child: &mut tokio::process::Child) -> anyhow::Result<i64> {
    let deadline = Instant::now() + FIRST_PULL;
    let (mut seq, mut stored) = (0i64, 0usize);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the daemon exited early: {status}");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the daemon stored {stored} of {CONTACTS} contacts in {FIRST_PULL:?}"
        );
        // The tables appear once the daemon has migrated the database.
        if let Ok(rows) = store.changes_since(seq, FEED_PAGE).await {
            stored += rows.len();
            if let Some(last) = rows.last() {
                seq = last.change_seq;
            }
            if stored >= CONTACTS {
                return Ok(seq);
            }
            if rows.len() as u64 == FEED_PAGE {
                continue;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ceiling: one `apply_page` of the changed record per event, at the same rate (one writer, as the daemon has
/// one per connection: a write that overruns its slot delays the next), seen through the same observer. Runs for
/// the measured seconds, at most 10. Returns the latencies from each call's start and the writes never seen.
async fn ceiling(setting: Setting) -> anyhow::Result<(Histogram<u64>, u64)> {
    let db = setting.db.fresh().await?;
    let store = Store::connect(&db.url).await?;
    store.migrate().await?;
    let observer_store = Store::connect(&db.url).await?;
    let events = (setting.rate as f64 * setting.measure.min(Duration::from_secs(10)).as_secs_f64()) as usize;
    let seen = Arc::new(Mutex::new(Seen::new(events, CONTACTS)));
    let stop = Arc::new(AtomicBool::new(false));
    let observer = observe(observer_store.clone(), "ceiling", 0, seen.clone(), stop.clone());
    let period = Duration::from_secs_f64(1.0 / setting.rate as f64);
    let start = Instant::now() + Duration::from_millis(20);
    let mut began = Vec::with_capacity(events);
    for n in 0..events {
        tokio::time::sleep_until((start + period * n as u32).into()).await;
        let record = RemoteRecord {
            remote_id: (1 + n % CONTACTS).to_string(),
            updated_at: Utc::now(),
            data: json!({ MARKER: format!("m{n}"), "firstname": "Ada", "lastname": "Lovelace" }),
        };
        began.push(Instant::now());
        store.apply_page("ceiling", "contacts", &[record], None).await?;
    }
    let all: Vec<usize> = (0..events).collect();
    settle(&seen, &all).await;
    stop.store(true, Ordering::Release);
    observer.await??;
    let mut latency = histogram();
    let mut unseen = 0;
    {
        let seen = seen.lock().expect("seen lock");
        for (n, began) in began.iter().enumerate() {
            match seen.at[n] {
                Some(visible) => {
                    let _ = latency.record(visible.saturating_duration_since(*began).as_micros().max(1) as u64);
                }
                None => unseen += 1,
            }
        }
    }
    store.close().await;
    observer_store.close().await;
    db.cleanup().await;
    Ok((latency, unseen))
}

fn daemon_config(port: u16, db_url: &str, base_url: &str, poll_interval: Duration) -> String {
    format!(
        r#"
[http]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
max_connections = 4096

[database]
url = "{db_url}"

[[connection]]
id = "bench"
provider = "hubspot"
base_url = "{base_url}"
access_token = "hs-test-token"
webhook_secret = "{SECRET}"
objects = ["contacts"]
poll_interval = "{poll}ms"
rate_limit = {{ requests = 100000, per = "1s" }}
"#,
        poll = poll_interval.as_millis(),
    )
}

/// A signed HubSpot v3 `contact.propertyChange` webhook for contact `id`, event id `n + 1`.
fn signed_event(client: &reqwest::Client, uri: &str, id: &str, n: usize) -> reqwest::RequestBuilder {
    let now = Utc::now().timestamp_millis();
    let body = json!([{
        "eventId": n + 1,
        "subscriptionId": 1,
        "portalId": 1,
        "appId": 1,
        "occurredAt": now,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": id.parse::<u64>().expect("HubSpot ids are numbers"),
        "propertyName": MARKER,
        "propertyValue": format!("m{n}"),
        "changeSource": "CRM",
    }])
    .to_string();
    let signature = sign_v3(SECRET, "POST", uri, body.as_bytes(), now);
    client
        .post(uri)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("x-hubspot-signature-v3", signature)
        .header("x-hubspot-request-timestamp", now.to_string())
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_marker_of_a_contact_marks_its_earlier_changes_seen() {
        let mut seen = Seen::new(10, 3);
        let now = Instant::now();
        seen.mark(7, now);
        let marked: Vec<usize> = (0..10).filter(|&i| seen.at[i].is_some()).collect();
        assert_eq!(marked, [1, 4, 7]);
    }

    #[test]
    fn marking_stops_at_a_change_already_seen() {
        let mut seen = Seen::new(10, 3);
        let (first, later) = (Instant::now(), Instant::now() + Duration::from_secs(1));
        seen.mark(4, first);
        seen.mark(7, later);
        assert_eq!(seen.at[1], Some(first));
        assert_eq!(seen.at[4], Some(first));
        assert_eq!(seen.at[7], Some(later));
    }

    #[test]
    fn only_bench_markers_are_read_from_a_record() {
        assert_eq!(marker_of(&json!({"phone": "m42"})), Some(42));
        assert_eq!(marker_of(&json!({"phone": "+1 555 0100"})), None);
        assert_eq!(marker_of(&json!({"email": "a@b"})), None);
    }
}
