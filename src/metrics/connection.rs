//! The series of one connection, kept as plain counters in one small struct and written straight into the text
//! exposition at scrape time. The struct is the set of series: a connection can export no series that has no
//! field here, which is what bounds the series per connection ([`max_series`]). At 10,000 connections this costs
//! a few hundred bytes per connection, where one `prometheus` crate series costs about as much on its own.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

use super::labels::{ConnectionState, Direction, OAuthOutcome, RequestOutcome, RetryReason, WebhookOutcome};
use super::names;

/// Series every connection exports besides its objects' (see [`max_series`]).
pub const MAX_FIXED_SERIES: usize = 1 // crmsyncd_connection_info
    + ConnectionState::ALL.len()
    + RequestOutcome::ALL.len()
    + 1 // crmsyncd_rate_limit_wait_seconds_total
    + 1 // crmsyncd_crm_throttled_total
    + RetryReason::ALL.len()
    + 1 // crmsyncd_actor_restarts_total
    + WebhookOutcome::ALL.len() - 1 // unknown_connection is never counted under a real connection
    + 2 // crmsyncd_outbox_pending, crmsyncd_outbox_dead
    + OAuthOutcome::ALL.len();

/// Series per object the connection syncs: records synced per direction, and the sync lag.
pub const SERIES_PER_OBJECT: usize = Direction::ALL.len() + 1;

/// The most series that carry one connection's `connection` label, for a connection syncing `objects` objects.
/// Counters appear on their first increment (except the ones alerts need from the start), so an idle connection
/// exports fewer: see [`always_present_series`].
pub const fn max_series(objects: usize) -> usize {
    MAX_FIXED_SERIES + SERIES_PER_OBJECT * objects
}

/// The series a connection exports from its registration on: info, the state one-hot, actor restarts (an alert
/// takes its `increase`), the outbox gauges, and records synced per object and direction.
pub const fn always_present_series(objects: usize) -> usize {
    1 + ConnectionState::ALL.len() + 1 + 2 + Direction::ALL.len() * objects
}

/// One object's series.
struct ObjectSeries {
    name: Box<str>,
    synced: [u64; 2],
    /// Seconds; None until the first complete pass.
    lag: Option<f64>,
}

/// One connection's series.
pub struct ConnectionSeries {
    provider: Mutex<Box<str>>,
    state: AtomicU8,
    requests: [AtomicU64; RequestOutcome::ALL.len()],
    /// Microseconds, so the counter is an integer add.
    rate_limit_wait_us: AtomicU64,
    throttled: AtomicU64,
    retries: [AtomicU64; RetryReason::ALL.len()],
    restarts: AtomicU64,
    webhooks: [AtomicU64; WebhookOutcome::ALL.len()],
    outbox_pending: AtomicI64,
    outbox_dead: AtomicI64,
    oauth: [AtomicU64; OAuthOutcome::ALL.len()],
    objects: Mutex<Vec<ObjectSeries>>,
}

impl ConnectionSeries {
    pub fn new(provider: &str) -> Self {
        Self {
            provider: Mutex::new(provider.into()),
            state: AtomicU8::new(ConnectionState::Starting.index() as u8),
            requests: Default::default(),
            rate_limit_wait_us: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            retries: Default::default(),
            restarts: AtomicU64::new(0),
            webhooks: Default::default(),
            outbox_pending: AtomicI64::new(0),
            outbox_dead: AtomicI64::new(0),
            oauth: Default::default(),
            objects: Mutex::new(Vec::new()),
        }
    }

    pub fn set_provider(&self, provider: &str) {
        *lock(&self.provider) = provider.into();
    }

    /// Makes sure `object` has its series (records synced show 0 before the first record).
    pub fn add_object(&self, object: &str) {
        self.with_object(object, |_| {});
    }

    fn with_object(&self, object: &str, f: impl FnOnce(&mut ObjectSeries)) {
        let mut objects = lock(&self.objects);
        if let Some(o) = objects.iter_mut().find(|o| &*o.name == object) {
            f(o);
        } else {
            let mut o = ObjectSeries {
                name: object.into(),
                synced: [0; 2],
                lag: None,
            };
            f(&mut o);
            objects.push(o);
        }
    }

    pub fn set_state(&self, state: ConnectionState) {
        self.state.store(state.index() as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> ConnectionState {
        ConnectionState::ALL[usize::from(self.state.load(Ordering::Relaxed))]
    }

    pub fn request(&self, outcome: RequestOutcome) {
        self.requests[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rate_limit_waited(&self, micros: u64) {
        self.rate_limit_wait_us.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retry(&self, reason: RetryReason) {
        self.retries[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn webhook(&self, outcome: WebhookOutcome) {
        self.webhooks[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn oauth_refresh(&self, outcome: OAuthOutcome) {
        self.oauth[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_outbox(&self, pending: u64, dead: u64) {
        self.outbox_pending
            .store(i64::try_from(pending).unwrap_or(i64::MAX), Ordering::Relaxed);
        self.outbox_dead
            .store(i64::try_from(dead).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    pub fn records_synced(&self, object: &str, direction: Direction, n: u64) {
        self.with_object(object, |o| o.synced[direction.index()] += n);
    }

    pub fn set_sync_lag(&self, object: &str, seconds: f64) {
        self.with_object(object, |o| o.lag = Some(seconds));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain numbers behind: still valid.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes every per-connection family for `connections` (sorted by id) in the Prometheus text format, plus the
/// webhooks for unknown connections.
pub fn render<'a>(
    out: &mut String,
    connections: impl Iterator<Item = (&'a str, &'a ConnectionSeries)> + Clone,
    unknown_webhooks: u64,
) {
    let all = connections;
    family(
        out,
        names::CONNECTION_INFO,
        "Always 1; the provider label says which CRM a connection talks to.",
        "gauge",
    );
    for (id, c) in all.clone() {
        let provider = lock(&c.provider);
        line(out, names::CONNECTION_INFO, id, &[("provider", &provider)], 1);
    }
    family(
        out,
        names::CONNECTION_STATE,
        "1 for the connection's current state, 0 for the others.",
        "gauge",
    );
    for (id, c) in all.clone() {
        let current = c.state();
        for s in ConnectionState::ALL {
            line(
                out,
                names::CONNECTION_STATE,
                id,
                &[("state", s.as_str())],
                u64::from(s == current),
            );
        }
    }
    family(
        out,
        names::CRM_REQUESTS_TOTAL,
        "Requests sent to CRMs, by outcome class (ok, throttled, unauthorized, client_error, server_error, timeout, error).",
        "counter",
    );
    for (id, c) in all.clone() {
        for o in RequestOutcome::ALL {
            let n = c.requests[o.index()].load(Ordering::Relaxed);
            if n > 0 {
                line(out, names::CRM_REQUESTS_TOTAL, id, &[("outcome", o.as_str())], n);
            }
        }
    }
    family(
        out,
        names::RATE_LIMIT_WAIT_SECONDS_TOTAL,
        "Seconds spent waiting for the rate gate.",
        "counter",
    );
    for (id, c) in all.clone() {
        let us = c.rate_limit_wait_us.load(Ordering::Relaxed);
        if us > 0 {
            line_f64(out, names::RATE_LIMIT_WAIT_SECONDS_TOTAL, id, &[], us as f64 / 1e6);
        }
    }
    family(
        out,
        names::CRM_THROTTLED_TOTAL,
        "429 answers received from the CRM.",
        "counter",
    );
    for (id, c) in all.clone() {
        let n = c.throttled.load(Ordering::Relaxed);
        if n > 0 {
            line(out, names::CRM_THROTTLED_TOTAL, id, &[], n);
        }
    }
    family(
        out,
        names::RETRIES_TOTAL,
        "Retries after a failure: of the CRM (rate_limited, transient) or of the database (database).",
        "counter",
    );
    for (id, c) in all.clone() {
        for r in RetryReason::ALL {
            let n = c.retries[r.index()].load(Ordering::Relaxed);
            if n > 0 {
                line(out, names::RETRIES_TOTAL, id, &[("reason", r.as_str())], n);
            }
        }
    }
    family(
        out,
        names::ACTOR_RESTARTS_TOTAL,
        "Restarts of a connection actor after a failure or panic.",
        "counter",
    );
    for (id, c) in all.clone() {
        line(
            out,
            names::ACTOR_RESTARTS_TOTAL,
            id,
            &[],
            c.restarts.load(Ordering::Relaxed),
        );
    }
    family(out, names::WEBHOOKS_TOTAL, "Webhook requests by outcome.", "counter");
    for (id, c) in all.clone() {
        for o in WebhookOutcome::ALL {
            let n = c.webhooks[o.index()].load(Ordering::Relaxed);
            if n > 0 && o != WebhookOutcome::UnknownConnection {
                line(out, names::WEBHOOKS_TOTAL, id, &[("outcome", o.as_str())], n);
            }
        }
    }
    if unknown_webhooks > 0 {
        line(
            out,
            names::WEBHOOKS_TOTAL,
            "unknown",
            &[("outcome", WebhookOutcome::UnknownConnection.as_str())],
            unknown_webhooks,
        );
    }
    family(out, names::OUTBOX_PENDING, "Writes waiting to be pushed.", "gauge");
    for (id, c) in all.clone() {
        line_i64(out, names::OUTBOX_PENDING, id, c.outbox_pending.load(Ordering::Relaxed));
    }
    family(out, names::OUTBOX_DEAD, "Writes that failed permanently.", "gauge");
    for (id, c) in all.clone() {
        line_i64(out, names::OUTBOX_DEAD, id, c.outbox_dead.load(Ordering::Relaxed));
    }
    family(
        out,
        names::OAUTH_REFRESHES_TOTAL,
        "OAuth2 access-token refreshes, by outcome (ok, rejected: the CRM refused the grant, error).",
        "counter",
    );
    for (id, c) in all.clone() {
        for o in OAuthOutcome::ALL {
            let n = c.oauth[o.index()].load(Ordering::Relaxed);
            if n > 0 {
                line(out, names::OAUTH_REFRESHES_TOTAL, id, &[("outcome", o.as_str())], n);
            }
        }
    }
    family(
        out,
        names::RECORDS_SYNCED_TOTAL,
        "Records written locally (pull) or to the CRM (push).",
        "counter",
    );
    for (id, c) in all.clone() {
        for o in lock(&c.objects).iter() {
            for d in Direction::ALL {
                line(
                    out,
                    names::RECORDS_SYNCED_TOTAL,
                    id,
                    &[("direction", d.as_str()), ("object", &o.name)],
                    o.synced[d.index()],
                );
            }
        }
    }
    family(
        out,
        names::SYNC_LAG_SECONDS,
        "Seconds since the start of the last complete pull pass.",
        "gauge",
    );
    for (id, c) in all {
        for o in lock(&c.objects).iter() {
            if let Some(lag) = o.lag {
                line_f64(out, names::SYNC_LAG_SECONDS, id, &[("object", &o.name)], lag);
            }
        }
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `name{connection="id",labels...} ` without the value; `labels` come sorted by name, after `connection`.
fn start(out: &mut String, name: &str, connection: &str, labels: &[(&str, &str)]) {
    out.push_str(name);
    out.push_str("{connection=\"");
    escape(out, connection);
    out.push('"');
    for (k, v) in labels {
        out.push(',');
        out.push_str(k);
        out.push_str("=\"");
        escape(out, v);
        out.push('"');
    }
    out.push_str("} ");
}

fn line(out: &mut String, name: &str, connection: &str, labels: &[(&str, &str)], value: u64) {
    start(out, name, connection, labels);
    let _ = writeln!(out, "{value}");
}

fn line_i64(out: &mut String, name: &str, connection: &str, value: i64) {
    start(out, name, connection, &[]);
    let _ = writeln!(out, "{value}");
}

fn line_f64(out: &mut String, name: &str, connection: &str, labels: &[(&str, &str)], value: f64) {
    start(out, name, connection, labels);
    let _ = writeln!(out, "{value}");
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape(out: &mut String, value: &str) {
    if !value.contains(['\\', '"', '\n']) {
        out.push_str(value);
        return;
    }
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}
