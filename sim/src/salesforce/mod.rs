//! A fake Salesforce org: the REST API's SOQL query with `nextRecordsUrl` cursors, getDeleted, upsert on an
//! external id, the OAuth2 token endpoint (no `expires_in`, `instance_url` in every answer), the daily API
//! allocation reported in `Sforce-Limit-Info` and enforced with 403 `REQUEST_LIMIT_EXCEEDED`, and Outbound
//! Messages sent as SOAP, at least once and out of order.
//!
//! Its pitfalls are Salesforce's: SystemModstamp has whole-second precision (bulk writes share it), a long
//! transaction commits rows with a SystemModstamp older than rows already visible ([`LateCommit`]), query
//! locators die (idle, too many open, or after their last batch), and the delete log only reaches back so far.
//!
//! Order of checks on every API request: log, API allocation, faults, session, routing.

mod api;
mod churn;
mod cursors;
mod outbound;
mod soql;
mod store;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

pub use outbound::{Delivery, MAX_NOTIFICATIONS, Notification, envelope, is_ack};
pub use soql::{SyntaxError, parse as parse_soql};
pub use store::SfRecord;
pub use wire::{format_time, parse_time, record_id, with_suffix};

use crate::faults::Faults;
use crate::oauth::{OAuthSimConfig, TokenIssuer};
use crate::request_log::RequestLog;
use crate::server::{self, Running};
use crate::window::{Admission, SlidingWindow};
use cursors::Cursors;
use store::Store;

/// How the simulated org behaves.
#[derive(Debug, Clone)]
pub struct SalesforceSimConfig {
    /// The connected app and its authorisation server. Salesforce's token answers carry no `expires_in`.
    pub oauth: OAuthSimConfig,
    /// What the token answer names as `instance_url`; None: this server's own URL, as the client reached it.
    pub instance_url: Option<String>,
    /// The org id Outbound Messages carry.
    pub organization_id: String,
    /// The org's API allocation: at most this many API requests in any rolling window of this length (Salesforce:
    /// a daily allocation over 24 hours, 15,000 for a Developer Edition org and 100,000 and more in production).
    pub api_limit: (u32, Duration),
    pub faults: Faults,
    /// The field that is an External ID on every object; upserts name it in the URL.
    pub external_id_field: String,
    /// How many query locators the API user may have open; opening one more releases the oldest (Salesforce: 10).
    pub max_open_cursors: usize,
    /// A query locator not used for this long is gone (Salesforce: 15 minutes).
    pub cursor_idle_timeout: Duration,
    /// getDeleted works in these steps: start, end and latestDateCovered are rounded down to them (Salesforce:
    /// one minute).
    pub replication_step: Duration,
    /// How far back the delete log reaches (Salesforce: 15 days).
    pub delete_log_retention: Duration,
}

impl Default for SalesforceSimConfig {
    fn default() -> Self {
        Self {
            oauth: OAuthSimConfig {
                client_id: "sf-client-id".into(),
                client_secret: "sf-client-secret".into(),
                refresh_token: "sf-refresh-token".into(),
                access_ttl: Duration::from_secs(2 * 3600),
                rotate_refresh_tokens: false,
                send_expires_in: false,
                client_credentials: false,
                errors_with_200: false,
                extra: Map::new(),
            },
            instance_url: None,
            organization_id: "00DHu0000000001AAA".into(),
            api_limit: (100_000, Duration::from_secs(24 * 3600)),
            faults: Faults::none(),
            external_id_field: "Crmsyncd_Key__c".into(),
            max_open_cursors: 10,
            cursor_idle_timeout: Duration::from_secs(15 * 60),
            replication_step: Duration::from_secs(60),
            delete_log_retention: Duration::from_secs(15 * 24 * 3600),
        }
    }
}

/// The org's API usage: the rolling window of admitted requests.
#[derive(Debug)]
pub(crate) struct Usage {
    window: SlidingWindow,
    /// Requests of "other integrations" ([`SalesforceSim::spend_api_calls`]) that found the allocation spent;
    /// they are not the daemon's excess.
    external_refused: u64,
}

/// Everything the server task and the test share. Each lock is a std `Mutex`, never held across `.await`.
pub(crate) struct Shared {
    config: SalesforceSimConfig,
    issuer: TokenIssuer,
    store: Mutex<Store>,
    cursors: Mutex<Cursors>,
    usage: Mutex<Usage>,
    faults: Mutex<Faults>,
    log: Arc<RequestLog>,
    http: reqwest::Client,
    next_notification: AtomicU64,
}

impl Shared {
    fn now() -> DateTime<Utc> {
        wire::truncate_to_second(Utc::now())
    }

    /// The org's API usage now: (used, allocation).
    fn usage_now(&self, at: Instant) -> (u32, u32) {
        let mut usage = self.usage.lock().unwrap();
        let used = usage.window.used(at);
        (used, usage.window.limit())
    }

    /// A new notification id (`04l...`).
    fn notification_id(&self) -> String {
        record_id("04l", self.next_notification.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// A running fake Salesforce org. Clones share the same server and data.
#[derive(Clone)]
pub struct SalesforceSim {
    shared: Arc<Shared>,
    base_url: String,
    running: Arc<Mutex<Option<Running>>>,
}

impl std::fmt::Debug for SalesforceSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceSim")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl SalesforceSim {
    /// Starts the server on `127.0.0.1` and a free port.
    pub async fn start(config: SalesforceSimConfig) -> std::io::Result<SalesforceSim> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        let (limit, per) = config.api_limit;
        let shared = Arc::new(Shared {
            issuer: TokenIssuer::new(config.oauth.clone()),
            store: Mutex::new(Store::default()),
            cursors: Mutex::new(Cursors::new(config.max_open_cursors, config.cursor_idle_timeout)),
            usage: Mutex::new(Usage {
                window: SlidingWindow::new(limit, per),
                external_refused: 0,
            }),
            faults: Mutex::new(config.faults.clone()),
            log: Arc::new(RequestLog::default()),
            http,
            next_notification: AtomicU64::new(0),
            config,
        });
        let running = server::spawn(([127, 0, 0, 1], 0).into(), shared.clone()).await?;
        Ok(SalesforceSim {
            base_url: running.base_url(),
            shared,
            running: Arc::new(Mutex::new(Some(running))),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash: the instance URL and the login host at once.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// `{base_url}/services/oauth2/token`.
    pub fn token_url(&self) -> String {
        format!("{}/services/oauth2/token", self.base_url)
    }

    /// Stops the server (for every clone); the data stays readable.
    pub async fn shutdown(self) {
        let running = self.running.lock().unwrap().take();
        if let Some(running) = running {
            running.shutdown().await;
        }
    }

    pub fn config(&self) -> &SalesforceSimConfig {
        &self.shared.config
    }

    /// The authorisation server: expire sessions, revoke or issue refresh tokens, count refreshes.
    pub fn oauth(&self) -> &TokenIssuer {
        &self.shared.issuer
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    /// The org's clock: now, to the second (SystemModstamp's precision).
    pub fn now(&self) -> DateTime<Utc> {
        Shared::now()
    }

    /// Creates a record now; returns its id.
    pub fn create(&self, object: &str, fields: Map<String, Value>) -> String {
        self.store().create(object, fields, Shared::now())
    }

    /// Merges `fields` into a live record and stamps it now. Panics if there is no such live record.
    pub fn update(&self, object: &str, id: &str, fields: Map<String, Value>) {
        let done = self.store().update(object, id, &fields, Shared::now());
        assert!(done, "no live {object} record {id}");
    }

    /// Moves a record to the recycle bin now (Salesforce's delete). Panics if there is no such live record.
    pub fn delete(&self, object: &str, id: &str) {
        let done = self.store().delete(object, id, Shared::now());
        assert!(done, "no live {object} record {id}");
    }

    /// Restores a record from the recycle bin now. Panics if it is not there.
    pub fn undelete(&self, object: &str, id: &str) {
        let done = self.store().undelete(object, id, Shared::now());
        assert!(done, "no deleted {object} record {id}");
    }

    /// Empties the recycle bin of everything deleted before `before`: the delete log's `earliestDateAvailable`
    /// moves up to `before`, and only a comparison of ids can find those deletions any more.
    pub fn purge_deleted_before(&self, before: DateTime<Utc>) {
        self.store().purge_deleted_before(before);
    }

    /// Creates `n` records of `object` with generated fields (Account: `Name`, `Industry`; Contact: `FirstName`,
    /// `LastName`, unique `Email`; others: `Name`). With `at`, every one gets exactly that SystemModstamp (to
    /// the second): a bulk load whose block of equal timestamps spans many batches.
    pub fn seed(&self, object: &str, n: usize, at: Option<DateTime<Utc>>) -> Vec<String> {
        let at = at.map(wire::truncate_to_second).unwrap_or_else(Shared::now);
        let mut store = self.store();
        store.ensure_object(object);
        (0..n)
            .map(|_| {
                let id = store.allocate_id(object);
                let fields = generated_fields(object, &id);
                store.insert(object, id.clone(), fields, at);
                id
            })
            .collect()
    }

    /// Starts a long transaction: what it writes gets SystemModstamp = now (this call's second) but stays
    /// invisible until [`LateCommit::commit`], by when newer rows may have been read past. Dropping it rolls
    /// it back.
    pub fn begin(&self) -> LateCommit {
        LateCommit {
            shared: self.shared.clone(),
            at: Shared::now(),
            writes: Vec::new(),
        }
    }

    /// The truth: every record of `object`, recycle bin included, in id order.
    pub fn records(&self, object: &str) -> Vec<SfRecord> {
        self.store().all(object)
    }

    /// How many records upserts on `field` created for `value`; more than 1 means a duplicate push.
    pub fn creates_for(&self, object: &str, field: &str, value: &str) -> usize {
        self.store().creates_for(object, field, value)
    }

    pub fn log(&self) -> Arc<RequestLog> {
        self.shared.log.clone()
    }

    /// How many API requests arrived while the allocation was spent (each was answered 403
    /// `REQUEST_LIMIT_EXCEEDED`). Injected faults and other integrations' requests do not count.
    pub fn rate_limit_excess(&self) -> u64 {
        let usage = self.shared.usage.lock().unwrap();
        usage.window.excess() - usage.external_refused
    }

    /// The org's API usage now, as `Sforce-Limit-Info` reports it: (used, allocation).
    pub fn api_usage(&self) -> (u32, u32) {
        self.shared.usage_now(Instant::now())
    }

    /// Other integrations of the org spend `n` API calls now (they count against the allocation and show in
    /// `Sforce-Limit-Info`, but not in the request log).
    pub fn spend_api_calls(&self, n: u32) {
        let now = Instant::now();
        let mut usage = self.shared.usage.lock().unwrap();
        for _ in 0..n {
            if let Admission::Refused { .. } = usage.window.admit(now) {
                usage.external_refused += 1;
            }
        }
    }

    /// Releases every open query locator, as an idle timeout would: the next `nextRecordsUrl` is answered
    /// `INVALID_QUERY_LOCATOR`.
    pub fn release_query_locators(&self) {
        self.shared.cursors.lock().unwrap().release_all();
    }

    /// Notifications for the current state of `ids`, with `Id` and `fields`, each with a fresh notification id
    /// (ids that do not exist are skipped).
    pub fn notifications(&self, object: &str, ids: &[String], fields: &[&str]) -> Vec<Notification> {
        let store = self.store();
        ids.iter()
            .filter_map(|id| store.get(object, id))
            .map(|record| {
                let mut selected = Map::new();
                selected.insert("Id".into(), json!(record.id));
                let rendered = record.render("v62.0");
                for field in fields {
                    selected.insert(field.to_string(), rendered.get(*field).cloned().unwrap_or(Value::Null));
                }
                Notification {
                    id: self.shared.notification_id(),
                    object: object.to_string(),
                    record: selected,
                }
            })
            .collect()
    }

    /// The SOAP body of an Outbound Message carrying `notifications`.
    pub fn outbound_body(&self, notifications: &[Notification]) -> String {
        envelope(
            &self.shared.config.organization_id,
            "04kHu0000000001AAA",
            &self.base_url,
            notifications,
        )
    }

    /// POSTs one Outbound Message (at most [`MAX_NOTIFICATIONS`] notifications) to `url` as Salesforce does:
    /// `text/xml`, a `SOAPAction` header, no signature. Says whether the answer was the acknowledgement
    /// Salesforce requires.
    pub async fn deliver(&self, url: &str, notifications: &[Notification]) -> reqwest::Result<Delivery> {
        assert!(
            notifications.len() <= MAX_NOTIFICATIONS,
            "Salesforce sends at most {MAX_NOTIFICATIONS} notifications a message"
        );
        let response = self
            .shared
            .http
            .post(url)
            .header("content-type", "text/xml; charset=utf-8")
            .header("soapaction", "\"\"")
            .body(self.outbound_body(notifications))
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        Ok(Delivery {
            status,
            acked: status == 200 && is_ack(&body),
        })
    }

    /// Keeps changing random records of `objects` every `every`, `per_tick` changes a tick: mostly updates,
    /// some creates, a few deletes and undeletes, and now and then a [`LateCommit`] committed a few ticks
    /// later with its older SystemModstamp. With `webhook_url`, creates and updates go out as Outbound Messages
    /// (with the record's `Name`), shuffled, some delivered twice, unacknowledged ones retried on later ticks.
    /// Abort the handle to stop.
    pub fn spawn_churn(
        &self,
        every: Duration,
        per_tick: usize,
        objects: Vec<String>,
        webhook_url: Option<String>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(churn::run(self.clone(), every, per_tick, objects, webhook_url))
    }
}

/// A write inside a [`LateCommit`].
#[derive(Debug, Clone)]
enum LateWrite {
    Create(String, String, Map<String, Value>),
    Update(String, String, Map<String, Value>),
}

/// A transaction that commits late: its rows carry the SystemModstamp of its start.
pub struct LateCommit {
    shared: Arc<Shared>,
    at: DateTime<Utc>,
    writes: Vec<LateWrite>,
}

impl LateCommit {
    /// The SystemModstamp its rows will have.
    pub fn stamp(&self) -> DateTime<Utc> {
        self.at
    }

    /// Creates a record inside the transaction; the id is allocated now (so it sorts before later records).
    pub fn create(&mut self, object: &str, fields: Map<String, Value>) -> String {
        let id = self.shared.store.lock().unwrap().allocate_id(object);
        self.writes.push(LateWrite::Create(object.into(), id.clone(), fields));
        id
    }

    /// Creates a record with generated fields (as [`SalesforceSim::seed`] makes them) inside the transaction.
    pub fn create_generated(&mut self, object: &str) -> String {
        let id = self.shared.store.lock().unwrap().allocate_id(object);
        self.writes.push(LateWrite::Create(
            object.into(),
            id.clone(),
            generated_fields(object, &id),
        ));
        id
    }

    /// Updates a record inside the transaction.
    pub fn update(&mut self, object: &str, id: &str, fields: Map<String, Value>) {
        self.writes.push(LateWrite::Update(object.into(), id.into(), fields));
    }

    /// Makes every write visible at once, each with the transaction's (older) SystemModstamp. Returns the
    /// `(object, id)` of each record written.
    pub fn commit(self) -> Vec<(String, String)> {
        let mut store = self.shared.store.lock().unwrap();
        let mut written = Vec::new();
        for write in self.writes {
            match write {
                LateWrite::Create(object, id, fields) => {
                    store.insert(&object, id.clone(), fields, self.at);
                    written.push((object, id));
                }
                LateWrite::Update(object, id, fields) => {
                    if store.update(&object, &id, &fields, self.at) {
                        written.push((object, id));
                    }
                }
            }
        }
        written
    }
}

const FIRST_NAMES: &[&str] = &["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"];
const LAST_NAMES: &[&str] = &["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen"];
const INDUSTRIES: &[&str] = &["Technology", "Banking", "Retail", "Energy", "Education"];

/// Plausible fields for a new record of `object` with id `id`.
pub(crate) fn generated_fields(object: &str, id: &str) -> Map<String, Value> {
    let n = id
        .bytes()
        .fold(0usize, |acc, b| acc.wrapping_mul(31).wrapping_add(b as usize));
    let fields = match object {
        "Contact" | "Lead" => {
            let first = FIRST_NAMES[n % FIRST_NAMES.len()];
            let last = LAST_NAMES[n % LAST_NAMES.len()];
            json!({
                "FirstName": first,
                "LastName": last,
                "Name": format!("{first} {last}"),
                "Email": format!("{}@example.com", id.to_lowercase()),
            })
        }
        "Account" => json!({
            "Name": format!("Account {id}"),
            "Industry": INDUSTRIES[n % INDUSTRIES.len()],
        }),
        _ => json!({ "Name": format!("{object} {id}") }),
    };
    match fields {
        Value::Object(map) => map,
        _ => unreachable!("the literals above are objects"),
    }
}
