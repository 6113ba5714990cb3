//! One CRM connection: polls on its timer, applies webhook events, drains the outbox, all through its rate gate.
//! Failures back off with jitter instead of looping; an auth failure parks the connection until resumed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::metrics::{ConnectionState, Metrics, RetryReason};
use crate::providers::ProviderError;
use crate::registry::ConnectionEntry;
use crate::store::Store;
use crate::sync::{self, SyncContext, SyncError};

/// The longest a connection waits because the CRM said it is rate limited, before it asks again.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(3600);

/// How a connection waits for its own database (down, locked, full). Not the CRM's backoff: the CRM is fine, and
/// the database usually comes back within seconds, so waits stay short — but never a hot loop.
const DATABASE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));

/// The connection actor.
pub struct ConnectionActor;

/// What a connection actor starts from.
pub struct ConnectionArgs {
    pub entry: Arc<ConnectionEntry>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    /// When to poll first (`first_poll::first_poll_delay`): zero polls at once.
    pub first_poll: Duration,
}

/// Messages to a connection actor.
#[derive(Debug)]
pub enum ConnectionMsg {
    /// Run a cycle now: inbox, outbox, a pull pass per object, a delete sweep if due.
    Tick,
    /// The webhook endpoint committed new events for this connection.
    WebhookArrived,
    /// The application queued writes for this connection.
    WritesQueued,
    /// Leave `auth_failed` and try again (an operator fixed the credentials).
    Resume,
    /// Panic inside the handler. Lets tests prove that the supervisor restarts a crashed connection.
    Crash,
}

/// The actor's state.
pub struct ConnectionRun {
    ctx: SyncContext,
    poll_interval: Duration,
    backoff: Backoff,
    failures: u32,
    /// Consecutive work that failed on the database, for [`DATABASE_BACKOFF`].
    db_failures: u32,
    /// While a backoff runs, webhooks and queued writes wait for the tick that ends it instead of calling the
    /// CRM (or the database) again early.
    backing_off_until: Option<tokio::time::Instant>,
    parked: bool,
    timer: Option<AbortHandle>,
    /// Wakes the actor when a write that failed is due again, if that is before the next tick.
    write_timer: Option<AbortHandle>,
    /// Whether `last_sweep` and `last_pass` were read from the stored cursors yet (at the first cycle).
    cursors_loaded: bool,
    last_sweep: HashMap<String, chrono::DateTime<Utc>>,
    /// When each object's last complete pull pass started: the sync lag is measured from it.
    last_pass: HashMap<String, chrono::DateTime<Utc>>,
    /// When the CRM's webhook subscriptions next need looking after (None: at the next cycle).
    subscriptions_due: Option<chrono::DateTime<Utc>>,
}

impl Actor for ConnectionActor {
    type Msg = ConnectionMsg;
    type State = ConnectionRun;
    type Arguments = ConnectionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ConnectionArgs,
    ) -> Result<ConnectionRun, ActorProcessingErr> {
        let entry = &args.entry;
        let backoff = Backoff::new(entry.config.retry_backoff.min, entry.config.retry_backoff.max);
        args.metrics.set_state(entry.id(), ConnectionState::Starting);
        let ctx = SyncContext {
            connection: entry.id().to_string(),
            provider: entry.provider.clone(),
            store: args.store,
            metrics: args.metrics,
            overlap: entry.config.overlap,
            inbox_pending: entry.inbox_pending.clone(),
            cancel: args.shutdown,
            write_backoff: backoff,
        };
        // No database work here: the supervisor starts its children one after the other, so a query per
        // connection would add up to seconds at thousands of connections. The first cycle reads the cursors.
        let timer = if args.first_poll.is_zero() {
            myself.cast(ConnectionMsg::Tick)?;
            None
        } else {
            Some(
                myself
                    .send_after(args.first_poll, || ConnectionMsg::Tick)
                    .abort_handle(),
            )
        };
        Ok(ConnectionRun {
            ctx,
            poll_interval: entry.config.poll_interval,
            backoff,
            failures: 0,
            db_failures: 0,
            backing_off_until: None,
            parked: false,
            timer,
            write_timer: None,
            cursors_loaded: false,
            last_sweep: HashMap::new(),
            last_pass: HashMap::new(),
            subscriptions_due: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut ConnectionRun,
    ) -> Result<(), ActorProcessingErr> {
        for timer in [state.timer.take(), state.write_timer.take()].into_iter().flatten() {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: ConnectionMsg,
        state: &mut ConnectionRun,
    ) -> Result<(), ActorProcessingErr> {
        if state.ctx.cancel.is_cancelled() {
            return Ok(());
        }
        match message {
            ConnectionMsg::Tick => {
                // A tick queued before a failure started a backoff must not cut it short: the backoff's own
                // timer sends the tick that ends it.
                if state.parked || state.backing_off() {
                    return Ok(());
                }
                state.set_state(ConnectionState::Syncing);
                let result = state.cycle().await;
                state.after(&myself, result, true)?;
                state.schedule_writes(&myself).await;
                Ok(())
            }
            ConnectionMsg::WebhookArrived => {
                // Backing off: the flag stays set and the tick that ends the backoff processes the inbox.
                if state.parked || state.backing_off() || !state.ctx.take_inbox_flag() {
                    return Ok(());
                }
                let result = sync::process_inbox(&state.ctx).await.map(|_| ());
                state.after(&myself, result, false)
            }
            ConnectionMsg::WritesQueued => {
                if state.parked || state.backing_off() {
                    return Ok(());
                }
                let result = sync::drain_outbox(&state.ctx).await.map(|_| ());
                state.after(&myself, result, false)?;
                state.schedule_writes(&myself).await;
                Ok(())
            }
            ConnectionMsg::Resume => {
                if state.parked {
                    tracing::info!(connection = %state.ctx.connection, "Resuming after an auth failure.");
                    state.parked = false;
                    state.failures = 0;
                    state.backing_off_until = None;
                    myself.cast(ConnectionMsg::Tick)?;
                }
                Ok(())
            }
            ConnectionMsg::Crash => panic!("crash requested for connection {}", state.ctx.connection),
        }
    }
}

impl ConnectionRun {
    fn set_state(&self, s: ConnectionState) {
        self.ctx.metrics.set_state(&self.ctx.connection, s);
    }

    /// Whether a backoff (CRM or database) is still running.
    fn backing_off(&self) -> bool {
        self.backing_off_until
            .is_some_and(|until| tokio::time::Instant::now() < until)
    }

    /// One full cycle.
    async fn cycle(&mut self) -> Result<(), SyncError> {
        self.load_cursors().await?;
        self.maintain_subscriptions().await?;
        let ctx = &self.ctx;
        ctx.take_inbox_flag();
        sync::process_inbox(ctx).await?;
        sync::drain_outbox(ctx).await?;
        for object in ctx.provider.objects().to_vec() {
            let pass = sync::pull_object(ctx, &object).await?;
            self.set_lag(&object, pass.started);
            self.last_pass.insert(object.clone(), pass.started);
            if ctx.provider.has_delete_log() && self.sweep_due(&object, ctx.provider.delete_log_interval()) {
                let n = sync::read_delete_log(ctx, &object, pass.started).await?;
                if n > 0 {
                    tracing::info!(connection = %ctx.connection, object, deleted = n, "The CRM's delete log named deleted records.");
                }
                self.last_sweep.insert(object, Utc::now());
            }
        }
        if let Some(interval) = ctx.provider.sweep_interval() {
            for object in ctx.provider.objects().to_vec() {
                if self.sweep_due(&object, interval) {
                    let n = sync::sweep_deletes(&self.ctx, &object).await?;
                    if n > 0 {
                        tracing::info!(connection = %self.ctx.connection, object, deleted = n, "Sweep found records deleted in the CRM.");
                    }
                    self.last_sweep.insert(object, Utc::now());
                }
            }
        }
        Ok(())
    }

    /// Reads when each object was last swept and last completed a pass, once, from the stored cursors.
    async fn load_cursors(&mut self) -> Result<(), SyncError> {
        if self.cursors_loaded {
            return Ok(());
        }
        for object in self.ctx.provider.objects() {
            if let Some(row) = self.ctx.store.cursor_row(&self.ctx.connection, object).await? {
                if let Some(at) = row.swept_at {
                    self.last_sweep.insert(object.clone(), at);
                }
                if let Some(at) = row.pass_started_at {
                    self.last_pass.insert(object.clone(), at);
                }
            }
        }
        self.cursors_loaded = true;
        Ok(())
    }

    /// Whether `object` was last swept (or its delete log read) at least `interval` ago, or never.
    fn sweep_due(&self, object: &str, interval: Duration) -> bool {
        self.last_sweep
            .get(object)
            .is_none_or(|at| Utc::now() - *at >= chrono::Duration::from_std(interval).unwrap_or_default())
    }

    /// Renews the CRM's webhook subscriptions when due. Webhooks are only the fast path, so a failure here is
    /// logged and tried again a minute later while the pull goes on; only refused credentials stop the cycle.
    async fn maintain_subscriptions(&mut self) -> Result<(), SyncError> {
        if self.subscriptions_due.is_some_and(|due| Utc::now() < due) {
            return Ok(());
        }
        match self.ctx.provider.maintain_subscriptions().await {
            Ok(next) => {
                // None: nothing to maintain; look again in a day in case that changes.
                self.subscriptions_due = Some(next.unwrap_or_else(|| Utc::now() + chrono::Duration::days(1)));
                Ok(())
            }
            Err(e @ ProviderError::Auth(_)) => Err(e.into()),
            Err(e) => {
                tracing::warn!(connection = %self.ctx.connection, error = %e, "Could not renew webhook subscriptions; polling carries on and the renewal is retried in a minute.");
                self.subscriptions_due = Some(Utc::now() + chrono::Duration::minutes(1));
                Ok(())
            }
        }
    }

    /// Sets `crmsyncd_sync_lag_seconds` from the last complete pass, so it keeps growing while pulls fail.
    fn refresh_lag(&self) {
        for (object, started) in &self.last_pass {
            self.set_lag(object, *started);
        }
    }

    /// `crmsyncd_sync_lag_seconds` for `object`: seconds since its last complete pass started.
    fn set_lag(&self, object: &str, pass_started: chrono::DateTime<Utc>) {
        let lag = (Utc::now() - pass_started).num_milliseconds() as f64 / 1000.0;
        self.ctx.metrics.set_sync_lag(&self.ctx.connection, object, lag);
    }

    /// Decides what happens after some work: schedule the next tick, back off, or park.
    fn after(
        &mut self,
        myself: &ActorRef<ConnectionMsg>,
        result: Result<(), SyncError>,
        full_cycle: bool,
    ) -> Result<(), ActorProcessingErr> {
        self.refresh_lag();
        let connection = self.ctx.connection.clone();
        match result {
            Ok(()) => {
                if full_cycle {
                    self.failures = 0;
                    self.db_failures = 0;
                    self.backing_off_until = None;
                    self.set_state(ConnectionState::Idle);
                    // Webhook subscriptions that expire (Zoho's channels) must not wait for a long poll interval.
                    let renewal = self
                        .subscriptions_due
                        .map(|due| (due - Utc::now()).to_std().unwrap_or_default());
                    let next = renewal.map_or(self.poll_interval, |r| r.min(self.poll_interval));
                    self.schedule(myself, next);
                }
                Ok(())
            }
            Err(SyncError::Cancelled) => Ok(()),
            Err(SyncError::Provider(ProviderError::Auth(message))) => {
                let message = crate::config::redact(&message);
                tracing::error!(connection, error = %message, "The CRM refused the credentials; the connection is parked until resumed or reconfigured.");
                self.parked = true;
                if let Some(t) = self.timer.take() {
                    t.abort();
                }
                self.set_state(ConnectionState::AuthFailed);
                Ok(())
            }
            Err(SyncError::Provider(ProviderError::RateLimited { wait })) => {
                // A provider's own wait (a daily allocation spent) is trusted, within reason.
                let wait = wait.min(MAX_RATE_LIMIT_WAIT);
                tracing::warn!(connection, ?wait, "Rate limited by the CRM; waiting as it asked.");
                self.ctx.metrics.retry(&connection, RetryReason::RateLimited);
                self.back_off(myself, wait);
                Ok(())
            }
            Err(SyncError::Store(e)) if !e.is_transient() => Err(Box::new(e)),
            Err(SyncError::Store(e)) => {
                let delay = DATABASE_BACKOFF.delay(self.db_failures);
                self.db_failures = self.db_failures.saturating_add(1);
                tracing::warn!(connection, error = %e, ?delay, failures = self.db_failures, "The database is unavailable; waiting for it.");
                self.ctx.metrics.retry(&connection, RetryReason::Database);
                self.back_off(myself, delay);
                Ok(())
            }
            Err(e) => {
                let delay = self.backoff.delay(self.failures);
                self.failures = self.failures.saturating_add(1);
                tracing::warn!(connection, error = %e, ?delay, failures = self.failures, "Sync failed; backing off.");
                if matches!(e, SyncError::Provider(_)) {
                    self.ctx.metrics.retry(&connection, RetryReason::Transient);
                }
                self.back_off(myself, delay);
                Ok(())
            }
        }
    }

    /// Arms a wake-up for the earliest pending write, so a write retried after a short backoff does not wait for
    /// the next poll. A database error here is harmless: the next tick drains the outbox anyway.
    async fn schedule_writes(&mut self, myself: &ActorRef<ConnectionMsg>) {
        if self.parked {
            return;
        }
        if let Some(t) = self.write_timer.take() {
            t.abort();
        }
        let Ok(Some(at)) = self.ctx.store.next_write_at(&self.ctx.connection).await else {
            return;
        };
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        if wait < self.poll_interval {
            // A little after the due time, so the write is due when the drain looks.
            let wait = wait + Duration::from_millis(10);
            self.write_timer = Some(myself.send_after(wait, || ConnectionMsg::WritesQueued).abort_handle());
        }
    }

    /// Waits `delay` before the next tick, and holds webhook and write wake-ups until then.
    fn back_off(&mut self, myself: &ActorRef<ConnectionMsg>, delay: Duration) {
        self.set_state(ConnectionState::BackingOff);
        self.backing_off_until = Some(tokio::time::Instant::now() + delay);
        self.schedule(myself, delay);
    }

    fn schedule(&mut self, myself: &ActorRef<ConnectionMsg>, after: Duration) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        self.timer = Some(myself.send_after(after, || ConnectionMsg::Tick).abort_handle());
    }
}
