//! The daemon's one Prometheus registry. Each daemon instance owns its own (tests run several in one process).

pub mod names;

use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// A connection's lifecycle state, exported as `crmsyncd_connection_state{state}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    Starting,
    Syncing,
    Idle,
    BackingOff,
    AuthFailed,
    Failed,
}

impl ConnectionState {
    pub const ALL: [ConnectionState; 6] = [
        ConnectionState::Starting,
        ConnectionState::Syncing,
        ConnectionState::Idle,
        ConnectionState::BackingOff,
        ConnectionState::AuthFailed,
        ConnectionState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Starting => "starting",
            ConnectionState::Syncing => "syncing",
            ConnectionState::Idle => "idle",
            ConnectionState::BackingOff => "backing_off",
            ConnectionState::AuthFailed => "auth_failed",
            ConnectionState::Failed => "failed",
        }
    }
}

/// What became of one webhook request, exported as `crmsyncd_webhooks_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    Accepted,
    Duplicate,
    Unauthorized,
    Malformed,
    TooLarge,
    Unavailable,
    UnknownConnection,
}

impl WebhookOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Accepted => "accepted",
            WebhookOutcome::Duplicate => "duplicate",
            WebhookOutcome::Unauthorized => "unauthorized",
            WebhookOutcome::Malformed => "malformed",
            WebhookOutcome::TooLarge => "too_large",
            WebhookOutcome::Unavailable => "unavailable",
            WebhookOutcome::UnknownConnection => "unknown_connection",
        }
    }
}

/// Direction of a synced record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Pull,
    Push,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Pull => "pull",
            Direction::Push => "push",
        }
    }
}

/// The registry and every metric family in it.
pub struct Metrics {
    registry: Registry,
    crm_requests: IntCounterVec,
    crm_request_duration: HistogramVec,
    records_synced: IntCounterVec,
    sync_lag: GaugeVec,
    rate_limit_wait: CounterVec,
    crm_throttled: IntCounterVec,
    retries: IntCounterVec,
    actor_restarts: IntCounterVec,
    connection_state: IntGaugeVec,
    connection_info: IntGaugeVec,
    webhooks: IntCounterVec,
    outbox_pending: IntGaugeVec,
    outbox_dead: IntGaugeVec,
    oauth_refreshes: IntCounterVec,
    build_info: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        use names::*;
        let registry = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let metrics = Self {
            crm_requests: counter(
                CRM_REQUESTS_TOTAL,
                "Requests sent to CRMs, by operation and HTTP status (or error/timeout).",
                &["connection", "provider", "operation", "status"],
            ),
            crm_request_duration: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(CRM_REQUEST_DURATION_SECONDS, "Time for one CRM request.").buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    ]),
                    &["connection", "provider", "operation"],
                )
                .expect("valid metric"),
            ),
            records_synced: counter(
                RECORDS_SYNCED_TOTAL,
                "Records written locally (pull) or to the CRM (push).",
                &["connection", "object", "direction"],
            ),
            sync_lag: reg(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        SYNC_LAG_SECONDS,
                        "Seconds since the start of the last complete pull pass.",
                    ),
                    &["connection", "object"],
                )
                .expect("valid metric"),
            ),
            rate_limit_wait: reg(
                &registry,
                CounterVec::new(
                    Opts::new(
                        RATE_LIMIT_WAIT_SECONDS_TOTAL,
                        "Seconds spent waiting for the rate gate.",
                    ),
                    &["connection"],
                )
                .expect("valid metric"),
            ),
            crm_throttled: counter(
                CRM_THROTTLED_TOTAL,
                "429 answers received from the CRM.",
                &["connection"],
            ),
            retries: counter(
                RETRIES_TOTAL,
                "Retries after a failure: of the CRM (rate_limited, transient) or of the database (database).",
                &["connection", "reason"],
            ),
            actor_restarts: counter(
                ACTOR_RESTARTS_TOTAL,
                "Restarts of a connection actor after a failure or panic.",
                &["connection"],
            ),
            connection_state: gauge(
                CONNECTION_STATE,
                "1 for the connection's current state, 0 for the others.",
                &["connection", "state"],
            ),
            connection_info: gauge(
                CONNECTION_INFO,
                "Always 1; the provider label says which CRM a connection talks to.",
                &["connection", "provider"],
            ),
            webhooks: counter(
                WEBHOOKS_TOTAL,
                "Webhook requests by outcome.",
                &["connection", "outcome"],
            ),
            outbox_pending: gauge(OUTBOX_PENDING, "Writes waiting to be pushed.", &["connection"]),
            outbox_dead: gauge(OUTBOX_DEAD, "Writes that failed permanently.", &["connection"]),
            oauth_refreshes: counter(
                OAUTH_REFRESHES_TOTAL,
                "OAuth2 access-token refreshes, by outcome (ok, rejected: the CRM refused the grant, error).",
                &["connection", "outcome"],
            ),
            build_info: gauge(
                BUILD_INFO,
                "Always 1; the version label says which build runs.",
                &["version"],
            ),
            registry,
        };
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics
    }

    /// Creates a connection's series so they show 0 before anything happens (dashboards and `absent()` need it).
    pub fn register_connection(&self, connection: &str, provider: &str, objects: &[String]) {
        self.connection_info.with_label_values(&[connection, provider]).set(1);
        self.rate_limit_wait.with_label_values(&[connection]).inc_by(0.0);
        self.crm_throttled.with_label_values(&[connection]).inc_by(0);
        self.actor_restarts.with_label_values(&[connection]).inc_by(0);
        self.outbox_pending.with_label_values(&[connection]).set(0);
        self.outbox_dead.with_label_values(&[connection]).set(0);
        // One series, so an alert on refused grants has something to compare with before the first refusal.
        self.oauth_refreshes
            .with_label_values(&[connection, "rejected"])
            .inc_by(0);
        for reason in ["rate_limited", "transient", "database"] {
            self.retries.with_label_values(&[connection, reason]).inc_by(0);
        }
        for object in objects {
            for direction in [Direction::Pull, Direction::Push] {
                self.records_synced
                    .with_label_values(&[connection, object, direction.as_str()])
                    .inc_by(0);
            }
        }
        self.set_state(connection, ConnectionState::Starting);
    }

    /// Drops the gauges of a connection a reload removed, so dashboards stop showing it (its counters stay, flat).
    pub fn forget_connection(&self, connection: &str, provider: &str) {
        let _ = self.connection_info.remove_label_values(&[connection, provider]);
        for s in ConnectionState::ALL {
            let _ = self.connection_state.remove_label_values(&[connection, s.as_str()]);
        }
        let _ = self.outbox_pending.remove_label_values(&[connection]);
        let _ = self.outbox_dead.remove_label_values(&[connection]);
    }

    pub fn crm_request(&self, connection: &str, provider: &str, operation: &str, status: &str, elapsed: Duration) {
        self.crm_requests
            .with_label_values(&[connection, provider, operation, status])
            .inc();
        self.crm_request_duration
            .with_label_values(&[connection, provider, operation])
            .observe(elapsed.as_secs_f64());
    }

    pub fn records_synced(&self, connection: &str, object: &str, direction: Direction, n: u64) {
        self.records_synced
            .with_label_values(&[connection, object, direction.as_str()])
            .inc_by(n);
    }

    pub fn set_sync_lag(&self, connection: &str, object: &str, seconds: f64) {
        self.sync_lag.with_label_values(&[connection, object]).set(seconds);
    }

    pub fn rate_limit_waited(&self, connection: &str, waited: Duration) {
        if !waited.is_zero() {
            self.rate_limit_wait
                .with_label_values(&[connection])
                .inc_by(waited.as_secs_f64());
        }
    }

    pub fn throttled(&self, connection: &str) {
        self.crm_throttled.with_label_values(&[connection]).inc();
    }

    pub fn retry(&self, connection: &str, reason: &str) {
        self.retries.with_label_values(&[connection, reason]).inc();
    }

    pub fn actor_restarted(&self, connection: &str) {
        self.actor_restarts.with_label_values(&[connection]).inc();
    }

    pub fn set_state(&self, connection: &str, state: ConnectionState) {
        for s in ConnectionState::ALL {
            self.connection_state
                .with_label_values(&[connection, s.as_str()])
                .set(i64::from(s == state));
        }
    }

    pub fn webhook(&self, connection: &str, outcome: WebhookOutcome) {
        self.webhooks.with_label_values(&[connection, outcome.as_str()]).inc();
    }

    /// One OAuth token refresh: `outcome` is "ok", "rejected" (the CRM refused the grant) or "error".
    pub fn oauth_refresh(&self, connection: &str, outcome: &str) {
        self.oauth_refreshes.with_label_values(&[connection, outcome]).inc();
    }

    pub fn set_outbox(&self, connection: &str, pending: u64, dead: u64) {
        self.outbox_pending.with_label_values(&[connection]).set(pending as i64);
        self.outbox_dead.with_label_values(&[connection]).set(dead as i64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// The current value of one series, for tests and the status API.
    pub fn current_state(&self, connection: &str) -> Option<ConnectionState> {
        ConnectionState::ALL.into_iter().find(|s| {
            self.connection_state
                .get_metric_with_label_values(&[connection, s.as_str()])
                .map(|g| g.get() == 1)
                .unwrap_or(false)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_name_is_exported_once_a_connection_exists() {
        let m = Metrics::new();
        m.register_connection("c1", "hubspot", &["contacts".to_string()]);
        m.crm_request("c1", "hubspot", "search", "200", Duration::from_millis(5));
        m.set_sync_lag("c1", "contacts", 1.0);
        m.webhook("c1", WebhookOutcome::Accepted);
        let text = m.render();
        for name in names::ALL {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing from:\n{text}"
            );
        }
    }

    #[test]
    fn state_gauge_has_exactly_one_current_state() {
        let m = Metrics::new();
        m.register_connection("c1", "hubspot", &[]);
        m.set_state("c1", ConnectionState::BackingOff);
        assert_eq!(m.current_state("c1"), Some(ConnectionState::BackingOff));
        let ones = m
            .render()
            .lines()
            .filter(|l| l.starts_with(names::CONNECTION_STATE) && l.ends_with(" 1"))
            .count();
        assert_eq!(ones, 1);
    }
}
