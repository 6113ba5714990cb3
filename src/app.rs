//! The daemon as one value: `Application::build(config)` then `run_until_stopped(signal)`. Production and the
//! tests take the same path; tests bind port 0 and read the real address back.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use ractor::{Actor, ActorRef};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::actors::{ReloadSummary, Supervisor, SupervisorArgs, SupervisorMsg};
use crate::config::Config;
use crate::connections::ConnectionFactory;
use crate::http::{self, HttpState, Surface};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::{InboxWriter, Store};
use crate::systemd;

/// A built daemon, listening but not yet serving.
pub struct Application {
    config: Config,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    handle: AppHandle,
    supervisor_task: JoinHandle<()>,
    shutdown: CancellationToken,
}

/// Shared handles into a running daemon, for the demo and tests.
#[derive(Clone)]
pub struct AppHandle {
    pub addr: SocketAddr,
    /// Where `/metrics` is served when `http.metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub supervisor: ActorRef<SupervisorMsg>,
    factory: Arc<ConnectionFactory>,
    /// `[http]`, `[database]` and `[supervisor]` as the daemon started, to warn when a reload changes them.
    fixed_sections: Arc<String>,
}

impl AppHandle {
    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies the connections and rate-limit groups of `config` (SIGHUP): new connections start, removed ones
    /// stop, changed ones restart, and the others keep running untouched. `[http]`, `[database]` and
    /// `[supervisor]` are read only at start; a change to them is reported and otherwise ignored.
    pub async fn reload(&self, config: Config) -> anyhow::Result<ReloadSummary> {
        if fixed_sections(&config) != *self.fixed_sections {
            tracing::warn!("[http], [database] and [supervisor] changed; those take effect only at restart.");
        }
        let entries = self.factory.entries(&config)?;
        let summary = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Reload(entries, reply),
                Some(std::time::Duration::from_secs(120)),
            )
            .await
            .context("asking the supervisor to reload")?
            .success_or(anyhow::anyhow!("the supervisor did not finish the reload in time"))?;
        tracing::info!(
            added = ?summary.added,
            removed = ?summary.removed,
            restarted = ?summary.restarted,
            unchanged = summary.unchanged.len(),
            "Config reloaded."
        );
        Ok(summary)
    }
}

/// The sections a reload does not apply, as text (secrets print as `***`).
fn fixed_sections(config: &Config) -> String {
    format!("{:?} {:?} {:?}", config.http, config.database, config.supervisor)
}

impl Application {
    /// Connects the database, runs migrations, binds the listener and starts the actors.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = Store::connect(&config.database.url)
            .await
            .context("connecting to the database (database.url)")?;
        store.migrate().await.context("running database migrations")?;
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(Registry::default());
        let factory = Arc::new(ConnectionFactory::new(&config, &store, metrics.clone()));
        for entry in factory.entries(&config)? {
            registry.insert(entry);
        }
        let listener = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("binding http.listen = {}", config.http.listen))?;
        let addr = listener.local_addr()?;
        let metrics_listener = match config.http.metrics_listen {
            Some(at) => Some(
                TcpListener::bind(at)
                    .await
                    .with_context(|| format!("binding http.metrics_listen = {at}"))?,
            ),
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let shutdown = CancellationToken::new();
        let (supervisor, supervisor_task) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                registry: registry.clone(),
                store: store.clone(),
                metrics: metrics.clone(),
                config: config.supervisor.clone(),
                shutdown: shutdown.clone(),
            },
        )
        .await
        .context("starting the supervisor")?;
        tracing::info!(%addr, connections = config.connections.len(), "Listening.");
        let fixed = Arc::new(fixed_sections(&config));
        Ok(Self {
            config,
            listener,
            metrics_listener,
            handle: AppHandle {
                addr,
                metrics_addr,
                factory,
                fixed_sections: fixed,
                store,
                metrics,
                registry,
                supervisor,
            },
            supervisor_task,
            shutdown,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.handle.addr
    }

    pub fn handle(&self) -> AppHandle {
        self.handle.clone()
    }

    /// Serves until `stop` resolves; then stops accepting, lets requests in flight finish, stops every
    /// connection after its current page (cursors are committed with each page) and returns.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let grace = self.config.supervisor.shutdown_grace;
        let state = Arc::new(HttpState {
            http: self.config.http.clone(),
            store: self.handle.store.clone(),
            inbox: InboxWriter::spawn(self.handle.store.clone()),
            metrics: self.handle.metrics.clone(),
            registry: self.handle.registry.clone(),
            supervisor: self.handle.supervisor.clone(),
        });
        // Migrations ran and the listener is bound (in `build`): this is what "started" means to systemd.
        systemd::ready();
        let watchdog = systemd::spawn_watchdog(self.handle.supervisor.clone(), self.shutdown.clone());
        // One stop signal for both listeners.
        let stopped = CancellationToken::new();
        let main = http::serve(
            self.listener,
            state.clone(),
            Surface::Main,
            stopped.clone().cancelled_owned(),
            grace,
        );
        let metrics = async {
            if let Some(listener) = self.metrics_listener {
                http::serve(
                    listener,
                    state.clone(),
                    Surface::Metrics,
                    stopped.clone().cancelled_owned(),
                    grace,
                )
                .await;
            }
        };
        // The grace period is one budget for every stage (requests in flight, the current pages, closing the
        // pool), counted from the stop signal: a stage that hangs leaves the later ones only what remains.
        let mut deadline = None;
        let trigger = async {
            stop.await;
            deadline = Some(tokio::time::Instant::now() + grace);
            stopped.cancel();
        };
        tokio::join!(main, metrics, trigger);
        let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + grace);
        systemd::stopping();
        tracing::info!("Stopping connections.");
        self.shutdown.cancel();
        self.handle.supervisor.stop(Some("shutdown".into()));
        if tokio::time::timeout_at(deadline, self.supervisor_task).await.is_err() {
            tracing::warn!(?grace, "Connections did not stop within the grace period.");
        }
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        // A connection abandoned above may still hold a pooled connection, which close() would wait for.
        if tokio::time::timeout_at(deadline, self.handle.store.close())
            .await
            .is_err()
        {
            tracing::warn!(?grace, "The database pool did not close within the grace period.");
        }
        tracing::info!("Stopped.");
        Ok(())
    }
}
