//! The daemon's metrics. Each daemon instance owns its own (tests run several in one process).
//!
//! Per-connection series live in [`connection::ConnectionSeries`] (plain counters, written straight into the text
//! exposition); the request-duration histogram is per provider and operation, not per connection, in a
//! `prometheus` registry with the build info. Every label value besides connection ids, provider kinds and
//! configured object names comes from a closed enum in [`labels`], so one connection exports at most
//! [`connection::max_series`] series.

pub mod connection;
pub mod labels;
pub mod names;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntGaugeVec, Opts, Registry, TextEncoder};

pub use connection::{ConnectionSeries, max_series};
pub use labels::{ConnectionState, Direction, OAuthOutcome, RequestOutcome, RetryReason, WebhookOutcome};

/// The registry and every metric family in it.
pub struct Metrics {
    registry: Registry,
    crm_request_duration: HistogramVec,
    connections: RwLock<BTreeMap<String, Arc<ConnectionSeries>>>,
    /// Webhooks for a connection id the daemon does not know, all under `connection="unknown"`.
    unknown_webhooks: AtomicU64,
    /// Connection actors running now (`crmsyncd_connection_actors`): all configured ones once start-up is done.
    actors: AtomicI64,
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
        let crm_request_duration = HistogramVec::new(
            HistogramOpts::new(
                CRM_REQUEST_DURATION_SECONDS,
                "Time for one CRM request, per provider and operation (not per connection).",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["provider", "operation"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(crm_request_duration.clone()))
            .expect("metric names are unique");
        let build_info = IntGaugeVec::new(
            Opts::new(BUILD_INFO, "Always 1; the version label says which build runs."),
            &["version"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(build_info.clone()))
            .expect("metric names are unique");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Self {
            registry,
            crm_request_duration,
            connections: RwLock::new(BTreeMap::new()),
            unknown_webhooks: AtomicU64::new(0),
            actors: AtomicI64::new(0),
        }
    }

    /// A connection's series, created on first use (connection ids come from the configuration).
    pub fn series(&self, connection: &str) -> Arc<ConnectionSeries> {
        if let Some(s) = self.find(connection) {
            return s;
        }
        let mut all = self.connections.write().unwrap_or_else(|p| p.into_inner());
        all.entry(connection.to_string())
            .or_insert_with(|| Arc::new(ConnectionSeries::new("unknown")))
            .clone()
    }

    fn find(&self, connection: &str) -> Option<Arc<ConnectionSeries>> {
        self.connections
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(connection)
            .cloned()
    }

    /// Creates a connection's series so the ones dashboards and alerts need show 0 before anything happens.
    pub fn register_connection(&self, connection: &str, provider: &str, objects: &[String]) {
        let series = self.series(connection);
        series.set_provider(provider);
        for object in objects {
            series.add_object(object);
        }
        series.set_state(ConnectionState::Starting);
    }

    /// Drops the series of a connection a reload removed, so dashboards stop showing it.
    pub fn forget_connection(&self, connection: &str) {
        self.connections
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(connection);
    }

    /// One CRM request: counted per connection by outcome class, timed per provider and operation.
    pub fn crm_request(
        &self,
        connection: &str,
        provider: &str,
        operation: &str,
        outcome: RequestOutcome,
        elapsed: Duration,
    ) {
        self.series(connection).request(outcome);
        self.crm_request_duration
            .with_label_values(&[provider, operation])
            .observe(elapsed.as_secs_f64());
    }

    pub fn records_synced(&self, connection: &str, object: &str, direction: Direction, n: u64) {
        self.series(connection).records_synced(object, direction, n);
    }

    pub fn set_sync_lag(&self, connection: &str, object: &str, seconds: f64) {
        self.series(connection).set_sync_lag(object, seconds);
    }

    pub fn rate_limit_waited(&self, connection: &str, waited: Duration) {
        if !waited.is_zero() {
            let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
            self.series(connection).rate_limit_waited(micros);
        }
    }

    pub fn throttled(&self, connection: &str) {
        self.series(connection).throttled();
    }

    pub fn retry(&self, connection: &str, reason: RetryReason) {
        self.series(connection).retry(reason);
    }

    pub fn actor_restarted(&self, connection: &str) {
        self.series(connection).restarted();
    }

    pub fn set_state(&self, connection: &str, state: ConnectionState) {
        self.series(connection).set_state(state);
    }

    /// One webhook request. Only a connection the daemon knows gets series of its own: the id comes from the URL,
    /// and anything else is counted under `connection="unknown"`, so requests cannot create series.
    pub fn webhook(&self, connection: &str, outcome: WebhookOutcome) {
        match self.find(connection) {
            Some(series) if outcome != WebhookOutcome::UnknownConnection => series.webhook(outcome),
            _ => {
                self.unknown_webhooks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// One OAuth token refresh.
    pub fn oauth_refresh(&self, connection: &str, outcome: OAuthOutcome) {
        self.series(connection).oauth_refresh(outcome);
    }

    pub fn set_outbox(&self, connection: &str, pending: u64, dead: u64) {
        self.series(connection).set_outbox(pending, dead);
    }

    /// A connection actor started.
    pub fn actor_up(&self) {
        self.actors.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection actor stopped or crashed.
    pub fn actor_down(&self) {
        self.actors.fetch_sub(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let all = self.connections.read().unwrap_or_else(|p| p.into_inner());
        // About 60 bytes a line, a dozen lines per connection.
        let mut text = String::with_capacity(4096 + all.len() * 800);
        connection::render(
            &mut text,
            all.iter().map(|(id, s)| (id.as_str(), s.as_ref())),
            self.unknown_webhooks.load(Ordering::Relaxed),
        );
        drop(all);
        let _ = writeln!(
            text,
            "# HELP {name} Connection actors running (all configured connections once start-up is done).\n# TYPE {name} gauge\n{name} {}",
            self.actors.load(Ordering::Relaxed),
            name = names::CONNECTION_ACTORS,
        );
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        text.push_str(std::str::from_utf8(&out).expect("the text format is UTF-8"));
        text
    }

    /// A connection's current state, for tests and the status API.
    pub fn current_state(&self, connection: &str) -> Option<ConnectionState> {
        self.find(connection).map(|s| s.state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every series carrying `connection="{id}"` in a metrics text.
    fn series_of<'a>(text: &'a str, id: &str) -> Vec<&'a str> {
        let label = format!("connection=\"{id}\"");
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(&label))
            .collect()
    }

    /// Drives connection `id` through every operation, outcome, reason and state the daemon can record.
    fn drive_everything(m: &Metrics, id: &str, objects: &[String]) {
        for op in [
            "search",
            "batch_read",
            "create",
            "update",
            "delete",
            "oauth_token",
            "list_subscriptions",
        ] {
            for status in [
                200u16, 201, 204, 301, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504,
            ] {
                let status = http::StatusCode::from_u16(status).unwrap();
                m.crm_request(
                    id,
                    "hubspot",
                    op,
                    RequestOutcome::of_status(status),
                    Duration::from_millis(7),
                );
            }
            for outcome in [RequestOutcome::Timeout, RequestOutcome::Error] {
                m.crm_request(id, "hubspot", op, outcome, Duration::from_secs(31));
            }
        }
        for object in objects {
            for d in Direction::ALL {
                m.records_synced(id, object, d, 3);
            }
            m.set_sync_lag(id, object, 12.5);
        }
        m.rate_limit_waited(id, Duration::from_millis(250));
        m.throttled(id);
        for r in RetryReason::ALL {
            m.retry(id, r);
        }
        m.actor_restarted(id);
        for s in ConnectionState::ALL {
            m.set_state(id, s);
        }
        for o in WebhookOutcome::ALL {
            m.webhook(id, o);
        }
        for o in OAuthOutcome::ALL {
            m.oauth_refresh(id, o);
        }
        m.set_outbox(id, 4, 1);
    }

    #[test]
    fn every_contract_name_is_exported_once_a_connection_exists() {
        let m = Metrics::new();
        let objects = vec!["contacts".to_string()];
        m.register_connection("c1", "hubspot", &objects);
        drive_everything(&m, "c1", &objects);
        let text = m.render();
        for name in names::ALL {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing from:\n{text}"
            );
            assert!(
                text.lines().any(|l| l.starts_with(name) && !l.starts_with('#')),
                "{name} has no series in:\n{text}"
            );
        }
    }

    #[test]
    fn a_connection_exports_at_most_its_bound_of_series_whatever_happens() {
        let m = Metrics::new();
        let objects = vec!["contacts".to_string(), "companies".to_string()];
        m.register_connection("c1", "hubspot", &objects);
        m.register_connection("c2", "hubspot", &objects);
        let idle = series_of(&m.render(), "c1").len();
        assert_eq!(idle, connection::always_present_series(objects.len()));
        // Twice: a second round of the same events must add no series.
        drive_everything(&m, "c1", &objects);
        drive_everything(&m, "c1", &objects);
        let text = m.render();
        let series = series_of(&text, "c1");
        assert_eq!(
            series.len(),
            max_series(objects.len()),
            "every field of the bound is reachable, and nothing beyond it:\n{}",
            series.join("\n")
        );
        assert_eq!(max_series(2), 37, "the bound BENCHMARKS.md and README.md state");
        // The histogram is per provider and operation: it never names a connection.
        assert!(
            text.lines()
                .filter(|l| l.starts_with(names::CRM_REQUEST_DURATION_SECONDS))
                .all(|l| !l.contains("connection=")),
            "{text}"
        );
        assert_eq!(
            series_of(&text, "c2").len(),
            idle,
            "another connection's events do not add to c2"
        );
    }

    #[test]
    fn webhooks_for_unknown_connections_create_no_series() {
        let m = Metrics::new();
        m.register_connection("c1", "hubspot", &[]);
        for i in 0..100 {
            m.webhook(&format!("attacker-{i}"), WebhookOutcome::Unauthorized);
            m.webhook(&format!("attacker-{i}"), WebhookOutcome::UnknownConnection);
        }
        let text = m.render();
        assert!(!text.contains("attacker-"), "{text}");
        assert!(
            text.contains("crmsyncd_webhooks_total{connection=\"unknown\",outcome=\"unknown_connection\"} 200"),
            "{text}"
        );
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

    #[test]
    fn a_forgotten_connection_exports_nothing() {
        let m = Metrics::new();
        m.register_connection("gone", "odoo", &["res.partner".to_string()]);
        m.forget_connection("gone");
        assert!(series_of(&m.render(), "gone").is_empty());
    }

    #[test]
    fn running_actors_are_counted() {
        let m = Metrics::new();
        m.actor_up();
        m.actor_up();
        m.actor_down();
        assert!(m.render().contains("\ncrmsyncd_connection_actors 1\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.register_connection("a\"b", "hubspot", &[]);
        assert!(
            m.render()
                .contains(r#"crmsyncd_connection_info{connection="a\"b",provider="hubspot"} 1"#)
        );
    }
}
