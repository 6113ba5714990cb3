//! A fake Odoo 17 server speaking JSON-RPC on `/jsonrpc`, with Odoo's pitfalls: write_date is the time a
//! transaction *started* ([`LateTransaction`]), equal timestamps across whole bulk imports ([`OdooSim::seed`]),
//! archived rows hidden unless `active_test` is false, hard deletes with no tombstone, unsigned webhooks.
//!
//! Time: every write_date comes from the simulator's own clock, which follows UTC until a test freezes it with
//! [`OdooSim::set_now`] or moves it with [`OdooSim::advance_clock`], so tests never sleep for a second to pass.

mod churn;
mod clock;
mod domain;
mod error;
mod fake;
mod methods;
mod rpc;
mod store;
mod transaction;
mod webhook;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Timelike;
use chrono::{NaiveDateTime, TimeDelta};
use serde_json::{Map, Value};

pub use clock::format_odoo_datetime;
pub use store::SimRow;
pub use transaction::LateTransaction;

use crate::faults::Faults;
use crate::request_log::RequestLog;
use crate::server::{self, Running};
use crate::window::SlidingWindow;
use store::Store;

/// The uid `login` answers for the configured user (the first user after OdooBot and the superuser).
const UID: i64 = 2;

/// How the simulated server is set up.
#[derive(Debug, Clone)]
pub struct OdooSimConfig {
    /// The database name `login` and `execute_kw` must name.
    pub database: String,
    /// The user's login.
    pub login: String,
    /// The user's API key (Odoo accepts it wherever a password goes).
    pub api_key: String,
    /// Odoo itself documents no rate limit; this is a knob for tests, answered like a proxy in front of Odoo
    /// would: 429 "Too Many Requests" with Retry-After in seconds.
    pub rate_limit: Option<(u32, Duration)>,
    pub faults: Faults,
}

impl Default for OdooSimConfig {
    fn default() -> Self {
        Self {
            database: "sim".to_owned(),
            login: "api@example.com".to_owned(),
            api_key: "odoo-test-key".to_owned(),
            rate_limit: None,
            faults: Faults::none(),
        }
    }
}

/// Everything the server task and the test share. Each field has its own std `Mutex`, never held across
/// `.await`.
pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) database: String,
    pub(crate) login: String,
    pub(crate) api_key: Mutex<String>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) window: Mutex<Option<SlidingWindow>>,
    pub(crate) log: Arc<RequestLog>,
    pub(crate) http: reqwest::Client,
}

/// A running fake Odoo server and the handle to its data.
pub struct OdooSim {
    shared: Arc<Shared>,
    running: Running,
}

impl std::fmt::Debug for OdooSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OdooSim")
            .field("addr", &self.running.addr())
            .finish_non_exhaustive()
    }
}

impl OdooSim {
    /// Starts the server on `127.0.0.1` and a free port.
    pub async fn start(config: OdooSimConfig) -> std::io::Result<OdooSim> {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            database: config.database,
            login: config.login,
            api_key: Mutex::new(config.api_key),
            faults: Mutex::new(config.faults),
            window: Mutex::new(
                config
                    .rate_limit
                    .map(|(limit, window)| SlidingWindow::new(limit, window)),
            ),
            log: Arc::new(RequestLog::default()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(std::io::Error::other)?,
        });
        let running = server::spawn(([127, 0, 0, 1], 0).into(), shared.clone()).await?;
        Ok(OdooSim { shared, running })
    }

    /// `http://127.0.0.1:PORT` (JSON-RPC is at `/jsonrpc` under it).
    pub fn base_url(&self) -> String {
        self.running.base_url()
    }

    pub async fn shutdown(self) {
        self.running.shutdown().await;
    }

    /// Replaces the fault shares for the requests that follow.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// Changes the key the server accepts, e.g. to simulate a revoked key.
    pub fn set_api_key(&self, key: &str) {
        *self.shared.api_key.lock().unwrap() = key.to_owned();
    }

    /// The uid `login` returns.
    pub fn uid(&self) -> i64 {
        UID
    }

    /// The simulator's clock now (naive UTC, whole seconds): the write_date the next write gets.
    pub fn now(&self) -> NaiveDateTime {
        self.store().clock.now()
    }

    /// Freezes the clock at `at`; from then on it moves only through [`OdooSim::advance_clock`].
    pub fn set_now(&self, at: NaiveDateTime) {
        self.store().clock.set(at);
    }

    /// Moves the clock forward, frozen or not.
    pub fn advance_clock(&self, by: Duration) {
        let by = TimeDelta::from_std(by).expect("a sane duration");
        self.store().clock.advance(by);
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    /// Creates a row (the model is created on first use); write_date = create_date = now.
    pub fn create(&self, model: &str, vals: Map<String, Value>) -> i64 {
        let mut store = self.store();
        let now = store.clock.now();
        store.model_or_create(model).create(&vals, now)
    }

    /// Writes fields of an existing row; write_date = now. Panics if the row does not exist.
    pub fn write(&self, model: &str, id: i64, vals: Map<String, Value>) {
        let mut store = self.store();
        let now = store.clock.now();
        let written = store.model_mut(model).is_some_and(|m| m.update(id, &vals, now));
        assert!(written, "OdooSim::write: no {model} row with id {id}");
    }

    /// Hard delete, leaving no trace. Deleting a row that is already gone does nothing.
    pub fn unlink(&self, model: &str, id: i64) {
        if let Some(m) = self.store().model_mut(model) {
            m.remove(id);
        }
    }

    /// Sets `active = false` (write_date = now). Panics if the row does not exist.
    pub fn archive(&self, model: &str, id: i64) {
        let mut vals = Map::new();
        vals.insert("active".to_owned(), Value::Bool(false));
        self.write(model, id, vals);
    }

    /// Creates `n` rows with generated fields (name, unique email, phone, ...). With `at`, every row gets exactly
    /// that write_date and create_date: an equal-timestamp block like a bulk import. `seed(model, 0, None)`
    /// just makes sure the model exists.
    pub fn seed(&self, model: &str, n: usize, at: Option<NaiveDateTime>) -> Vec<i64> {
        let mut store = self.store();
        // Odoo stores write_date to the second; a finer `at` would make `write_date = '...'` never match.
        let at = at
            .map(|t| t.with_nanosecond(0).expect("zero nanoseconds is valid"))
            .unwrap_or_else(|| store.clock.now());
        let table = store.model_or_create(model);
        (0..n)
            .map(|_| {
                let id = table.allocate_id();
                table.insert(id, &fake::generated(model, id), at);
                id
            })
            .collect()
    }

    /// Starts a long transaction: what it creates or writes gets write_date = now (this call's moment), and
    /// stays invisible to every RPC until [`LateTransaction::commit`]. Dropping it rolls it back.
    pub fn begin(&self) -> LateTransaction {
        LateTransaction::begin(self.shared.clone())
    }

    /// Every committed row of `model`, archived ones included, by id.
    pub fn records(&self, model: &str) -> Vec<SimRow> {
        let store = self.store();
        store
            .model(model)
            .map(|m| m.rows.iter().map(|(id, row)| m.sim_row(*id, row)).collect())
            .unwrap_or_default()
    }

    /// How many rows RPC `create` made with `field` set to `value` (strings compare as they are, other values by
    /// their JSON text, e.g. "42" or "true"). Rows made through this struct's methods are not counted.
    pub fn creates_with(&self, model: &str, field: &str, value: &str) -> usize {
        self.store().creates_with(model, field, value)
    }

    pub fn log(&self) -> Arc<RequestLog> {
        self.shared.log.clone()
    }

    /// How many requests the rate-limit window refused (each was answered 429).
    pub fn rate_limit_excess(&self) -> u64 {
        self.shared
            .window
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, SlidingWindow::excess)
    }

    /// POSTs what Odoo's "Send Webhook Notification" server action sends for one record:
    /// `{"_action": "Send Webhook Notification(#<n>)", "_id": id, "_model": model, <field>: value, ...}` as
    /// `application/json`, unsigned, not retried. Fields of a row that does not exist read `false`.
    pub async fn send_webhook(
        &self,
        url: &str,
        model: &str,
        id: i64,
        fields: &[&str],
    ) -> reqwest::Result<reqwest::StatusCode> {
        let body = webhook::body_for_row(&mut self.store(), model, id, fields);
        webhook::post(&self.shared.http, url, &body).await
    }

    /// Keeps changing random rows of `models` every `every`, `per_tick` changes a tick: mostly writes, some
    /// creates, rare archives and unlinks, and now and then a [`LateTransaction`] committed a few ticks later.
    /// With `webhook_url`, each change is also sent as a webhook (a change inside a transaction is sent before
    /// its commit, as Odoo's server action runs inside the transaction). Abort the handle to stop; a transaction
    /// still open then is rolled back.
    pub fn spawn_churn(
        &self,
        every: Duration,
        per_tick: usize,
        models: Vec<String>,
        webhook_url: Option<String>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(churn::run(self.shared.clone(), every, per_tick, models, webhook_url))
    }
}
