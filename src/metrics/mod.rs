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
use std::sync::atomic::{AtomicU64, Ordering};
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
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
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
