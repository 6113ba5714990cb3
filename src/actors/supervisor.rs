//! The root supervisor: starts one connection actor per connection and restarts a failed one with exponential
//! backoff and jitter. ractor has no restart policy of its own, so this is it: the backoff resets once a
//! connection has stayed up for `healthy_after`; after `max_restarts` the connection is marked `failed` and left
//! down while every other connection keeps running.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio_util::sync::CancellationToken;

use super::first_poll::first_poll_delay;
use super::{ConnectionActor, ConnectionArgs};
use crate::backoff::Backoff;
use crate::config::SupervisorConfig;
use crate::metrics::{ConnectionState, Metrics};
use crate::registry::{ConnectionEntry, Registry};
use crate::store::Store;

/// The supervisor actor.
pub struct Supervisor;

/// What the supervisor starts from.
pub struct SupervisorArgs {
    pub registry: Arc<Registry>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub config: SupervisorConfig,
    /// Cancelled at shutdown; passed to every connection.
    pub shutdown: CancellationToken,
}

/// A connection's supervision status, for the API and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionStatus {
    pub id: String,
    pub running: bool,
    pub restarts: u32,
    pub failed: bool,
}

/// Messages to the supervisor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Start (again) the actor of this connection; sent by the restart timer.
    Start(String),
    /// Report every connection's supervision status.
    Status(RpcReplyPort<Vec<ConnectionStatus>>),
    /// Make these the connections: start the new ones, stop the ones not listed, restart the ones whose
    /// fingerprint changed, leave the rest running untouched.
    Reload(Vec<Arc<ConnectionEntry>>, RpcReplyPort<ReloadSummary>),
}

/// What a reload did, by connection id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub restarted: Vec<String>,
    pub unchanged: Vec<String>,
}

struct Child {
    entry: Arc<ConnectionEntry>,
    actor: Option<ActorCell>,
    /// Stops this connection's current run only (a reload); the daemon's shutdown cancels it too.
    cancel: Option<CancellationToken>,
    restarts: u32,
    last_start: Option<Instant>,
    failed: bool,
}

/// The supervisor's state.
pub struct SupervisorState {
    args: SupervisorArgs,
    children: HashMap<String, Child>,
    by_actor: HashMap<ActorId, String>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut children = HashMap::new();
        for entry in args.registry.all() {
            args.metrics
                .register_connection(entry.id(), entry.provider.kind().as_str(), entry.provider.objects());
            myself.cast(SupervisorMsg::Start(entry.id().to_string()))?;
            children.insert(
                entry.id().to_string(),
                Child {
                    entry,
                    actor: None,
                    cancel: None,
                    restarts: 0,
                    last_start: None,
                    failed: false,
                },
            );
        }
        Ok(SupervisorState {
            args,
            children,
            by_actor: HashMap::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Stop children first so each finishes the page it is on and commits its cursor.
        state.args.shutdown.cancel();
        for child in state.children.values_mut() {
            if let Some(actor) = child.actor.take() {
                let _ = actor.stop_and_wait(Some("shutdown".into()), None).await;
                state.args.metrics.actor_down();
            }
            child.entry.set_actor(None);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Start(id) => state.start(&myself, &id).await,
            SupervisorMsg::Status(reply) => {
                let mut all: Vec<ConnectionStatus> = state
                    .children
                    .iter()
                    .map(|(id, c)| ConnectionStatus {
                        id: id.clone(),
                        running: c.actor.is_some(),
                        restarts: c.restarts,
                        failed: c.failed,
                    })
                    .collect();
                all.sort_by(|a, b| a.id.cmp(&b.id));
                let _ = reply.send(all);
            }
            SupervisorMsg::Reload(entries, reply) => {
                let summary = state.reload(&myself, entries).await;
                let _ = reply.send(summary);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason.unwrap_or_else(|| "stopped".into())),
            _ => return Ok(()),
        };
        let Some(id) = state.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        if state.args.shutdown.is_cancelled() {
            return Ok(());
        }
        state.child_down(&myself, &id, &reason);
        Ok(())
    }
}

impl SupervisorState {
    async fn start(&mut self, myself: &ActorRef<SupervisorMsg>, id: &str) {
        if self.args.shutdown.is_cancelled() {
            return;
        }
        let connections = self.children.len();
        let Some(child) = self.children.get_mut(id) else { return };
        if child.actor.is_some() || child.failed {
            return;
        }
        let cancel = self.args.shutdown.child_token();
        child.cancel = Some(cancel.clone());
        // Only a connection's first start is spread; one restarted after a failure polls at once.
        let first_poll = if child.last_start.is_none() {
            first_poll_delay(id, child.entry.config.poll_interval, connections)
        } else {
            std::time::Duration::ZERO
        };
        let args = ConnectionArgs {
            entry: child.entry.clone(),
            store: self.args.store.clone(),
            metrics: self.args.metrics.clone(),
            shutdown: cancel,
            first_poll,
        };
        // Unnamed: several daemons (tests) may share one process, and ractor names are global.
        match Actor::spawn_linked(None, ConnectionActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.by_actor.insert(actor.get_id(), id.to_string());
                child.entry.set_actor(Some(actor.clone()));
                child.actor = Some(actor.get_cell());
                self.args.metrics.actor_up();
                child.last_start = Some(Instant::now());
            }
            // ractor sends no supervision event when pre_start fails: treat it as a failure here.
            Err(e) => self.child_down(myself, id, &format!("failed to start: {e}")),
        }
    }

    async fn reload(&mut self, myself: &ActorRef<SupervisorMsg>, entries: Vec<Arc<ConnectionEntry>>) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        let listed: HashSet<String> = entries.iter().map(|e| e.id().to_string()).collect();
        let mut gone: Vec<String> = self
            .children
            .keys()
            .filter(|id| !listed.contains(*id))
            .cloned()
            .collect();
        gone.sort();
        for id in gone {
            self.stop_child(&id).await;
            if self.children.remove(&id).is_some() {
                self.args.registry.remove(&id);
                self.args.metrics.forget_connection(&id);
            }
            tracing::info!(connection = %id, "Connection removed by a reload.");
            summary.removed.push(id);
        }
        for entry in entries {
            let id = entry.id().to_string();
            let known = self.children.get(&id).map(|c| c.entry.fingerprint == entry.fingerprint);
            match known {
                Some(true) => {
                    summary.unchanged.push(id);
                    continue;
                }
                Some(false) => {
                    self.stop_child(&id).await;
                    tracing::info!(connection = %id, "Connection changed by a reload; restarting it.");
                    summary.restarted.push(id.clone());
                }
                None => {
                    tracing::info!(connection = %id, "Connection added by a reload.");
                    summary.added.push(id.clone());
                }
            }
            self.args
                .metrics
                .register_connection(&id, entry.provider.kind().as_str(), entry.provider.objects());
            self.args.registry.insert(entry.clone());
            self.children.insert(
                id.clone(),
                Child {
                    entry,
                    actor: None,
                    cancel: None,
                    restarts: 0,
                    last_start: None,
                    failed: false,
                },
            );
            self.start(myself, &id).await;
        }
        summary
    }

    /// Stops a connection's actor after the page it is on, without counting it as a failure.
    async fn stop_child(&mut self, id: &str) {
        let Some(child) = self.children.get_mut(id) else { return };
        if let Some(cancel) = child.cancel.take() {
            cancel.cancel();
        }
        if let Some(actor) = child.actor.take() {
            // Forget it first: its termination must not look like a crash to restart.
            self.by_actor.remove(&actor.get_id());
            let _ = actor.stop_and_wait(Some("reload".into()), None).await;
            self.args.metrics.actor_down();
        }
        child.entry.set_actor(None);
    }

    fn child_down(&mut self, myself: &ActorRef<SupervisorMsg>, id: &str, reason: &str) {
        let config = self.args.config.clone();
        let metrics = self.args.metrics.clone();
        let Some(child) = self.children.get_mut(id) else { return };
        if child.actor.take().is_some() {
            metrics.actor_down();
        }
        child.entry.set_actor(None);
        if child.last_start.is_some_and(|t| t.elapsed() >= config.healthy_after) {
            child.restarts = 0;
        }
        if child.restarts >= config.max_restarts {
            child.failed = true;
            metrics.set_state(id, ConnectionState::Failed);
            tracing::error!(
                connection = id,
                reason,
                restarts = child.restarts,
                "Connection failed too often; left down."
            );
            return;
        }
        let delay = Backoff::new(config.min_backoff, config.max_backoff).delay(child.restarts);
        child.restarts += 1;
        metrics.actor_restarted(id);
        metrics.set_state(id, ConnectionState::BackingOff);
        tracing::warn!(
            connection = id,
            reason,
            ?delay,
            restarts = child.restarts,
            "Connection actor went down; restarting after a delay."
        );
        let id = id.to_string();
        myself.send_after(delay, move || SupervisorMsg::Start(id));
    }
}
