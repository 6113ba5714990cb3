//! Turning connection configs into running entries: each gets its provider, behind its own rate gate or its
//! group's. The gate of a rate-limit group outlives reloads while its budget is unchanged, so a connection
//! restarted by a reload still shares one gate with the group members that kept running.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use url::Url;

use crate::auth::CredentialVault;
use crate::config::{Config, RateLimits};
use crate::metrics::Metrics;
use crate::providers::{self, BuildContext};
use crate::ratelimit::RateGate;
use crate::registry::ConnectionEntry;
use crate::store::Store;

/// Builds connection entries for the daemon, at start and on every reload.
pub struct ConnectionFactory {
    metrics: Arc<Metrics>,
    vault: Option<CredentialVault>,
    /// `http.public_url` as the daemon started with it (the listener is not reloaded either).
    public_url: Option<Url>,
    groups: Mutex<HashMap<String, (RateLimits, Arc<RateGate>)>>,
}

impl ConnectionFactory {
    /// A factory for the daemon started with `config`.
    pub fn new(config: &Config, store: &Store, metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            vault: config
                .database
                .credential_key()
                .map(|key| CredentialVault::new(store.clone(), key)),
            public_url: config.http.public_url.clone(),
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// An entry for every connection of `config`. An entry's fingerprint covers its own table and, for a member
    /// of a group, the group's budget: when either changes, a reload restarts it.
    pub fn entries(&self, config: &Config) -> anyhow::Result<Vec<Arc<ConnectionEntry>>> {
        let mut groups = self.groups.lock().expect("factory lock");
        let mut live = HashMap::new();
        for group in &config.rate_limit_groups {
            let gate = match groups.get(&group.id) {
                Some((limits, gate)) if *limits == group.limits => gate.clone(),
                _ => Arc::new(RateGate::new(&group.limits)),
            };
            live.insert(group.id.clone(), (group.limits.clone(), gate));
        }
        *groups = live;
        config
            .connections
            .iter()
            .map(|connection| {
                let (gate, fingerprint) = match connection.rate_limit_group.as_deref().and_then(|g| groups.get(g)) {
                    Some((limits, gate)) => (gate.clone(), format!("{}/{limits:?}", connection.fingerprint)),
                    None => (
                        Arc::new(RateGate::new(&connection.rate_limit)),
                        connection.fingerprint.clone(),
                    ),
                };
                let provider = providers::build(BuildContext {
                    connection,
                    gate,
                    metrics: self.metrics.clone(),
                    public_url: self.public_url.as_ref(),
                    vault: self.vault.clone(),
                })
                .with_context(|| format!("building the client of connection {}", connection.id))?;
                Ok(Arc::new(ConnectionEntry::new(
                    connection.clone(),
                    provider,
                    fingerprint,
                )))
            })
            .collect()
    }
}
