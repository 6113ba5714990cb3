//! A fake Creatio (8.x, .NET Framework) speaking OData 4 under `/0/odata` (and `/odata`, as .NET 6 builds serve
//! it), with Creatio's pitfalls:
//!
//! - forms authentication: a login that sets `.ASPXAUTH` and `BPMCSRF` cookies, a `BPMCSRF` header on every
//!   request, sessions that expire (401) and a CSRF check (403); wrong credentials are a 200 with `Code: 1`;
//! - or OAuth 2.0 client credentials from the Identity Service (`POST /connect/token`), bearer tokens that expire;
//! - `ModifiedOn` with millisecond precision, blocks of equal timestamps ([`CreatioSim::seed`] with `at`), and
//!   saves that become visible after rows stamped later ([`CreatioSim::begin`]): ModifiedOn is set when a save
//!   starts, not when it commits;
//! - `$skip` paging that loses rows when rows change between pages, as a database offset does;
//! - hard deletes that leave nothing OData can show: only a comparison of ids finds them;
//! - no webhooks at all, and no documented rate limit (the optional window answers like a proxy in front of
//!   IIS would: 429 with `Retry-After`).
//!
//! Order of checks on every request: log, rate-limit window, injected fault, authentication, routing.

mod api;
mod churn;
mod fake;
mod filter;
mod query;
mod session;
mod store;
mod transaction;
mod wire;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub use session::{AUTH_COOKIE, CSRF_COOKIE};
pub use transaction::LateTransaction;
pub use wire::format_time;

use crate::faults::{Fault, Faults};
use crate::oauth::{OAuthSimConfig, TokenIssuer};
use crate::request_log::RequestLog;
use crate::server::{self, Running};
use crate::window::SlidingWindow;
use session::Sessions;
use store::Store;

/// Where the login service lives.
pub const LOGIN_PATH: &str = "/ServiceModel/AuthService.svc/Login";
/// Where the Identity Service hands out client-credentials tokens (served by the same simulator).
pub const TOKEN_PATH: &str = "/connect/token";

/// How the simulated server is set up.
#[derive(Debug, Clone)]
pub struct CreatioSimConfig {
    /// The API user's login name.
    pub username: String,
    /// The API user's password.
    pub password: String,
    /// How long a forms-authentication session lives before requests on it get 401.
    pub session_ttl: Duration,
    /// Accept OAuth 2.0 client-credentials bearer tokens issued at [`TOKEN_PATH`]. `client_credentials` is forced
    /// on.
    pub oauth: Option<OAuthSimConfig>,
    /// Creatio documents no rate limit; this is a knob for tests, answered like a proxy in front of Creatio:
    /// 429 "Too Many Requests" with Retry-After in whole seconds.
    pub rate_limit: Option<(u32, Duration)>,
    pub faults: Faults,
}

impl Default for CreatioSimConfig {
    fn default() -> Self {
        Self {
            username: "Supervisor".to_owned(),
            password: "creatio-test-password".to_owned(),
            session_ttl: Duration::from_secs(3600),
            oauth: None,
            rate_limit: None,
            faults: Faults::none(),
        }
    }
}

/// One row as the test sees it: the truth, whatever a query would show.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRecord {
    /// The row's lowercase GUID.
    pub id: String,
    /// Its own columns (not `Id` or the system dates, which have their own members).
    pub fields: Map<String, Value>,
    pub created_on: DateTime<Utc>,
    pub modified_on: DateTime<Utc>,
}

/// Everything the server task and the test share. Each field has its own std `Mutex`, never held across
/// `.await`.
pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) sessions: Mutex<Sessions>,
    pub(crate) issuer: Option<TokenIssuer>,
    pub(crate) faults: Mutex<Faults>,
    /// Faults for the next request of an operation ("create", "list", ...), before any random one.
    pub(crate) targeted: Mutex<Vec<(String, Fault)>>,
    pub(crate) window: Mutex<Option<SlidingWindow>>,
    pub(crate) log: Arc<RequestLog>,
    /// `http://127.0.0.1:PORT`, for `@odata.context`; set once the port is known.
    pub(crate) base_url: OnceLock<String>,
}

/// A running fake Creatio and the handle to its data.
pub struct CreatioSim {
    shared: Arc<Shared>,
    running: Running,
}

impl std::fmt::Debug for CreatioSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatioSim")
            .field("addr", &self.running.addr())
            .finish_non_exhaustive()
    }
}

fn row_to_record(id: &str, row: &store::Row) -> SimRecord {
    SimRecord {
        id: id.to_owned(),
        fields: row.fields.clone(),
        created_on: row.created_on,
        modified_on: row.modified_on,
    }
}

impl CreatioSim {
    /// Starts the server on `127.0.0.1` and a free port.
    pub async fn start(config: CreatioSimConfig) -> std::io::Result<CreatioSim> {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            sessions: Mutex::new(Sessions::new(config.username, config.password, config.session_ttl)),
            issuer: config.oauth.map(|oauth| {
                TokenIssuer::new(OAuthSimConfig {
                    client_credentials: true,
                    ..oauth
                })
            }),
            faults: Mutex::new(config.faults),
            targeted: Mutex::new(Vec::new()),
            window: Mutex::new(config.rate_limit.map(|(n, per)| SlidingWindow::new(n, per))),
            log: Arc::new(RequestLog::default()),
            base_url: OnceLock::new(),
        });
        let running = server::spawn(([127, 0, 0, 1], 0).into(), shared.clone()).await?;
        let _ = shared.base_url.set(running.base_url());
        Ok(CreatioSim { shared, running })
    }

    /// `http://127.0.0.1:PORT`: the Creatio application address (OData is at `/0/odata` under it).
    pub fn base_url(&self) -> String {
        self.running.base_url()
    }

    /// The Identity Service's token URL, when OAuth is on.
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.base_url())
    }

    pub async fn shutdown(self) {
        self.running.shutdown().await;
    }

    /// Replaces the fault shares for the requests that follow.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// Makes the next request of `operation` ("login", "list", "get", "create", "update", "delete", "token") fail
    /// with `fault`, whatever the random shares say: how a test loses exactly the answer of a create.
    pub fn fault_next(&self, operation: &str, fault: Fault) {
        self.shared.targeted.lock().unwrap().push((operation.to_owned(), fault));
    }

    /// Changes the API user's password (sessions already open stay open, as in Creatio).
    pub fn set_password(&self, password: &str) {
        self.shared.sessions.lock().unwrap().password = password.to_owned();
    }

    /// Ends every forms-authentication session now: the next request on each gets 401.
    pub fn expire_sessions(&self) {
        self.shared.sessions.lock().unwrap().expire_all();
    }

    /// How many logins succeeded.
    pub fn logins(&self) -> u64 {
        self.shared.sessions.lock().unwrap().logins()
    }

    /// How many logins were refused for wrong credentials.
    pub fn refused_logins(&self) -> u64 {
        self.shared.sessions.lock().unwrap().refused()
    }

    /// The Identity Service, when OAuth is on: expire or count its tokens.
    pub fn token_issuer(&self) -> Option<&TokenIssuer> {
        self.shared.issuer.as_ref()
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    /// The simulator's clock now: the ModifiedOn the next save gets.
    pub fn now(&self) -> DateTime<Utc> {
        self.store().clock.now()
    }

    /// Freezes the clock at `at` (to the millisecond); from then on it moves only through
    /// [`CreatioSim::advance_clock`].
    pub fn set_now(&self, at: DateTime<Utc>) {
        self.store().clock.set(at);
    }

    /// Moves the clock forward, frozen or not.
    pub fn advance_clock(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).expect("a sane duration");
        self.store().clock.advance(by);
    }

    /// Creates a row now (the entity is created on first use); returns its GUID.
    pub fn create(&self, entity: &str, fields: Map<String, Value>) -> String {
        let mut store = self.store();
        let now = store.clock.now();
        let id = store::new_id();
        store.table_or_create(entity).insert(&id, &fields, now);
        id
    }

    /// Writes columns of a row; ModifiedOn = now. Panics if there is no such row.
    pub fn update(&self, entity: &str, id: &str, fields: Map<String, Value>) {
        let mut store = self.store();
        let now = store.clock.now();
        let written = store.table_mut(entity).is_some_and(|t| t.update(id, &fields, now));
        assert!(written, "CreatioSim::update: no {entity} row {id}");
    }

    /// Deletes a row for good. Deleting a row that is gone does nothing.
    pub fn delete(&self, entity: &str, id: &str) {
        if let Some(table) = self.store().table_mut(entity) {
            table.remove(id);
        }
    }

    /// Creates `n` rows with generated columns (Contact: Name, unique Email, MobilePhone, JobTitle, City;
    /// Account: Name, Code, Web; others: Name). With `at` (to the millisecond), every row gets exactly that
    /// CreatedOn and ModifiedOn: an equal-timestamp block like a bulk import, ordered by GUID inside.
    pub fn seed(&self, entity: &str, n: usize, at: Option<DateTime<Utc>>) -> Vec<String> {
        let mut store = self.store();
        let at = at.map(store::truncate_ms).unwrap_or_else(|| store.clock.now());
        let table = store.table_or_create(entity);
        (0..n)
            .map(|_| {
                let id = store::new_id();
                table.insert(&id, &fake::generated(entity, &id), at);
                id
            })
            .collect()
    }

    /// Starts a save that takes a while: what it creates or writes gets ModifiedOn = now (this call's moment),
    /// and stays invisible to every query until [`LateTransaction::commit`]. Dropping it rolls it back.
    pub fn begin(&self) -> LateTransaction {
        LateTransaction::begin(self.shared.clone())
    }

    /// Every committed row of `entity`, by GUID.
    pub fn records(&self, entity: &str) -> Vec<SimRecord> {
        self.store()
            .table(entity)
            .map(|t| t.rows.iter().map(|(id, row)| row_to_record(id, row)).collect())
            .unwrap_or_default()
    }

    /// One committed row.
    pub fn record(&self, entity: &str, id: &str) -> Option<SimRecord> {
        let store = self.store();
        let row = store.table(entity)?.rows.get(id)?;
        Some(row_to_record(id, row))
    }

    /// How many OData POSTs created a row of `entity` with `column` set to `value` (strings as they are, other
    /// values by their JSON text). More than 1 for an idempotency key means a duplicate push.
    pub fn creates_with(&self, entity: &str, column: &str, value: &str) -> usize {
        self.store().creates_with(entity, column, value)
    }

    pub fn log(&self) -> Arc<RequestLog> {
        self.shared.log.clone()
    }

    /// How many requests the rate-limit window refused (each was answered 429). Injected 429s do not count.
    pub fn rate_limit_excess(&self) -> u64 {
        self.shared
            .window
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, SlidingWindow::excess)
    }

    /// Keeps changing random rows of `entities` every `every`, `per_tick` changes a tick: mostly updates, some
    /// creates and deletes, now and then a burst of rows saved in the same millisecond and a save committed a few
    /// ticks after later ones. Creatio sends no webhooks, so `webhook_url` is accepted for the demo's sake and
    /// ignored. Abort the handle to stop; a save still open then is rolled back.
    pub fn spawn_churn(
        &self,
        every: Duration,
        per_tick: usize,
        entities: Vec<String>,
        webhook_url: Option<String>,
    ) -> tokio::task::JoinHandle<()> {
        if webhook_url.is_some() {
            tracing::debug!("Creatio sends no webhooks; the churn only changes rows.");
        }
        tokio::spawn(churn::run(self.shared.clone(), every, per_tick, entities))
    }
}
