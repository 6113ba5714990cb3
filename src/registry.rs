//! The connections the daemon runs, shared by the supervisor (which owns their actors) and the HTTP endpoint
//! (which verifies webhooks with their providers and wakes their actors).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ractor::ActorRef;

use crate::actors::ConnectionMsg;
use crate::config::ConnectionConfig;
use crate::providers::Provider;

/// One configured connection.
pub struct ConnectionEntry {
    pub config: ConnectionConfig,
    pub provider: Arc<dyn Provider>,
    /// Set by the webhook endpoint after it commits events; cleared by the actor when it reads the inbox.
    pub inbox_pending: Arc<AtomicBool>,
    /// What a reload compares: the connection's config and its group's budget.
    pub fingerprint: String,
    actor: Mutex<Option<ActorRef<ConnectionMsg>>>,
}

impl std::fmt::Debug for ConnectionEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionEntry")
            .field("id", &self.config.id)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl ConnectionEntry {
    pub fn new(config: ConnectionConfig, provider: Arc<dyn Provider>, fingerprint: String) -> Self {
        Self {
            config,
            provider,
            inbox_pending: Arc::new(AtomicBool::new(false)),
            fingerprint,
            actor: Mutex::new(None),
        }
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The running actor, if any (none while it restarts, is parked as failed, or before start).
    pub fn actor(&self) -> Option<ActorRef<ConnectionMsg>> {
        self.actor.lock().expect("registry lock").clone()
    }

    pub(crate) fn set_actor(&self, actor: Option<ActorRef<ConnectionMsg>>) {
        *self.actor.lock().expect("registry lock") = actor;
    }

    /// Tells the actor something happened. If it is down, the work waits in the database for its next start.
    pub fn notify(&self, message: ConnectionMsg) {
        if matches!(message, ConnectionMsg::WebhookArrived) {
            self.inbox_pending.store(true, Ordering::Release);
        }
        if let Some(actor) = self.actor() {
            let _ = actor.cast(message);
        }
    }
}

/// Every connection, by id.
#[derive(Default)]
pub struct Registry {
    connections: RwLock<HashMap<String, Arc<ConnectionEntry>>>,
}

impl Registry {
    pub fn insert(&self, entry: Arc<ConnectionEntry>) {
        self.connections
            .write()
            .expect("registry lock")
            .insert(entry.id().to_string(), entry);
    }

    /// Removes a connection: its webhooks get 404 from now on.
    pub fn remove(&self, id: &str) -> Option<Arc<ConnectionEntry>> {
        self.connections.write().expect("registry lock").remove(id)
    }

    pub fn get(&self, id: &str) -> Option<Arc<ConnectionEntry>> {
        self.connections.read().expect("registry lock").get(id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<ConnectionEntry>> {
        let mut all: Vec<_> = self
            .connections
            .read()
            .expect("registry lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.id().cmp(b.id()));
        all
    }
}
