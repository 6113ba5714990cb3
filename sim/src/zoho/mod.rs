//! A fake Zoho CRM (API v8) with its accounts server: COQL, the record list with Zoho's own page tokens, reads
//! by id, upsert with duplicate-check fields, the delete log, and instant-notification channels that expire. Its
//! pitfalls are Zoho's: times in the org's offset at second precision (so bulk imports share one timestamp),
//! late commits ([`LateBatch`]), API credits per rolling window charged by weight, a concurrency limit, both
//! answered with 429 `TOO_MANY_REQUESTS`, and OAuth access tokens that expire within the hour.

mod api;
mod churn;
mod coql;
mod credits;
mod endpoints;
mod notifications;
mod store;
mod time;
mod wire;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, SubsecRound, Utc};
use serde_json::{Map, Value, json};

pub use api::TOKEN_PATH;
pub use coql::{MAX_LIMIT as MAX_COQL_LIMIT, parse as parse_coql};
pub use credits::{Charge, CreditWindow};
pub use endpoints::{MAX_IDS, MAX_PER_PAGE, MAX_UPSERT};
pub use notifications::{Channel, Delivery, callback_body};
pub use store::DeletedEntry;
pub use time::{format_time, parse_time};

use crate::faults::Faults;
use crate::oauth::{OAuthSimConfig, TokenIssuer};
use crate::request_log::RequestLog;
use crate::server::{self, Running};
use store::{Store, Version};

/// How a [`ZohoSim`] behaves.
#[derive(Debug, Clone)]
pub struct ZohoSimConfig {
    /// The accounts server: Zoho answers refusals with HTTP 200 `{"error": "invalid_code"}` and access tokens
    /// last an hour.
    pub oauth: OAuthSimConfig,
    /// The org's API credits: at most `n` in any rolling window of the given length (Zoho: 24 hours; tests scale
    /// it down). None: unlimited.
    pub credits: Option<(u32, Duration)>,
    /// The org's concurrency limit: a request arriving while this many are in flight is answered 429.
    pub max_concurrent: Option<u32>,
    /// How long each API request takes, holding its concurrency slot.
    pub latency: Duration,
    pub faults: Faults,
    /// The org's time zone, in minutes east of UTC (India: 330).
    pub org_offset_minutes: i32,
    /// The longest a notification channel lives; a longer `channel_expiry` is cut to it.
    pub max_channel_ttl: Duration,
    /// How long `/deleted` remembers a deletion (the recycle bin keeps records 60 days).
    pub deleted_retention: Duration,
}

impl Default for ZohoSimConfig {
    fn default() -> Self {
        Self {
            oauth: OAuthSimConfig {
                client_id: "1000.ZOHOSIMCLIENT".into(),
                client_secret: "zoho-sim-secret".into(),
                refresh_token: "1000.zoho-sim-refresh".into(),
                access_ttl: Duration::from_secs(3600),
                errors_with_200: true,
                ..OAuthSimConfig::default()
            },
            credits: None,
            max_concurrent: None,
            latency: Duration::ZERO,
            faults: Faults::none(),
            org_offset_minutes: 330,
            max_channel_ttl: Duration::from_secs(24 * 3600),
            deleted_retention: Duration::from_secs(60 * 24 * 3600),
        }
    }
}

/// One record as the org holds it now (its committed version).
#[derive(Debug, Clone, PartialEq)]
pub struct SimRecord {
    pub id: String,
    pub fields: Map<String, Value>,
    pub created_time: DateTime<Utc>,
    pub modified_time: DateTime<Utc>,
}

/// Records of one module that changed one way, to notify channels about.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    module: String,
    operation: &'static str,
    ids: Vec<String>,
}

impl Change {
    fn new(module: &str, operation: &'static str, ids: Vec<String>) -> Self {
        Self {
            module: module.to_string(),
            operation,
            ids,
        }
    }
}

/// The state the server task and the test share. Each lock is a std `Mutex`, never held across an await.
pub(crate) struct Shared {
    offset: FixedOffset,
    max_channel_ttl: Duration,
    deleted_retention: Duration,
    base_url: OnceLock<String>,
    issuer: TokenIssuer,
    faults: Mutex<Faults>,
    credits: Option<Mutex<CreditWindow>>,
    max_concurrent: Option<u32>,
    latency: Duration,
    in_flight: AtomicU32,
    max_in_flight: AtomicU32,
    concurrency_excess: AtomicU64,
    store: Mutex<Store>,
    channels: Mutex<Vec<Channel>>,
    subscriptions: AtomicU64,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    log: Arc<RequestLog>,
    http: reqwest::Client,
}

impl Shared {
    fn base_url(&self) -> String {
        self.base_url.get().cloned().unwrap_or_default()
    }

    /// Sends each change to every live channel that watches it, the way Zoho does: one POST per channel and
    /// change, not retried. Needs a Tokio runtime; without one (a plain test thread) nothing is sent.
    fn notify(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let now = Utc::now();
        let channels = self.channels.lock().unwrap().clone();
        let base = self.base_url();
        for change in changes {
            for channel in channels
                .iter()
                .filter(|c| c.wants(&change.module, change.operation, now))
            {
                let body = callback_body(channel, &change.module, change.operation, &change.ids, now, &base);
                let request = self.http.post(&channel.notify_url).json(&body);
                let mut delivery = Delivery {
                    channel_id: channel.channel_id.clone(),
                    module: change.module.clone(),
                    operation: change.operation.to_string(),
                    ids: change.ids.clone(),
                    status: None,
                };
                let deliveries = self.deliveries.clone();
                runtime.spawn(async move {
                    delivery.status = request.send().await.ok().map(|r| r.status().as_u16());
                    deliveries.lock().unwrap().push(delivery);
                });
            }
        }
    }
}

/// A running fake Zoho. Clones share the same server and data.
#[derive(Clone)]
pub struct ZohoSim {
    shared: Arc<Shared>,
    base_url: String,
    running: Arc<Mutex<Option<Running>>>,
}

impl std::fmt::Debug for ZohoSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZohoSim")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ZohoSim {
    /// Starts the server (API and accounts server on one port) on `127.0.0.1` and a free port.
    pub async fn start(config: ZohoSimConfig) -> std::io::Result<ZohoSim> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            offset: time::offset(config.org_offset_minutes),
            max_channel_ttl: config.max_channel_ttl,
            deleted_retention: config.deleted_retention,
            base_url: OnceLock::new(),
            issuer: TokenIssuer::new(config.oauth),
            faults: Mutex::new(config.faults),
            credits: config.credits.map(|(n, every)| Mutex::new(CreditWindow::new(n, every))),
            max_concurrent: config.max_concurrent,
            latency: config.latency,
            in_flight: AtomicU32::new(0),
            max_in_flight: AtomicU32::new(0),
            concurrency_excess: AtomicU64::new(0),
            store: Mutex::new(Store::new()),
            channels: Mutex::new(Vec::new()),
            subscriptions: AtomicU64::new(0),
            deliveries: Arc::new(Mutex::new(Vec::new())),
            log: Arc::new(RequestLog::default()),
            http,
        });
        let running = server::spawn(([127, 0, 0, 1], 0).into(), shared.clone()).await?;
        let base_url = running.base_url();
        shared.base_url.set(base_url.clone()).expect("set once, at start");
        Ok(ZohoSim {
            shared,
            base_url,
            running: Arc::new(Mutex::new(Some(running))),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash: the API domain (`/crm/v8/...`).
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The accounts server's token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.base_url)
    }

    /// Stops the server (for every clone); the data stays readable.
    pub async fn shutdown(self) {
        let running = self.running.lock().unwrap().take();
        if let Some(running) = running {
            running.shutdown().await;
        }
    }

    /// The accounts server, to expire, revoke or re-authorise tokens and count refreshes.
    pub fn issuer(&self) -> &TokenIssuer {
        &self.shared.issuer
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    /// Creates a record now; returns its id.
    pub fn create(&self, module: &str, fields: Map<String, Value>) -> String {
        let id = {
            let mut store = self.store();
            let id = store.allocate_id();
            store.insert(module, id, fields, time::now_s());
            id.to_string()
        };
        self.shared
            .notify(vec![Change::new(module, "insert", vec![id.clone()])]);
        id
    }

    /// Merges `fields` into a record and stamps it now. Panics if there is no such record.
    pub fn update(&self, module: &str, id: &str, fields: Map<String, Value>) {
        let found = self.store().update(module, parse_id(id), fields, time::now_s());
        assert!(found, "no {module} record {id}");
        self.shared
            .notify(vec![Change::new(module, "update", vec![id.to_string()])]);
    }

    /// Deletes a record to the recycle bin (it leaves the API's reads and enters `/deleted`). Panics if there is
    /// no such record.
    pub fn delete(&self, module: &str, id: &str) {
        let found = self.store().delete(module, parse_id(id), time::now_s());
        assert!(found, "no {module} record {id}");
        self.shared
            .notify(vec![Change::new(module, "delete", vec![id.to_string()])]);
    }

    /// Creates `n` records with generated fields (unique `Email` on Leads and Contacts). With `at`, every one is
    /// created and modified at exactly that second: a bulk import's block of equal timestamps. Sends no
    /// notifications (Zoho sends none for imports).
    pub fn seed(&self, module: &str, n: usize, at: Option<DateTime<Utc>>) -> Vec<String> {
        let mut store = self.store();
        (0..n)
            .map(|_| {
                let id = store.allocate_id();
                let when = at.map(|t| t.trunc_subsecs(0)).unwrap_or_else(time::now_s);
                store.insert(module, id, generated_fields(module, id), when);
                id.to_string()
            })
            .collect()
    }

    /// Starts a slow operation (a mass update, a long workflow): what it writes is stamped with this moment but
    /// stays invisible to every read until [`LateBatch::commit`], by when later changes may have been read.
    /// Dropping it rolls it back.
    pub fn begin_late(&self) -> LateBatch {
        LateBatch {
            sim: self.clone(),
            stamped: time::now_s(),
            touched: Vec::new(),
        }
    }

    /// The truth: every live record of `module` (committed versions), in id order.
    pub fn records(&self, module: &str) -> Vec<SimRecord> {
        let store = self.store();
        let Some(records) = store.module(module) else {
            return Vec::new();
        };
        records
            .iter()
            .filter_map(|(id, r)| {
                let v = r.visible()?;
                Some(SimRecord {
                    id: id.to_string(),
                    fields: v.fields.clone(),
                    created_time: r.created,
                    modified_time: v.modified,
                })
            })
            .collect()
    }

    /// The delete log of `module`, oldest first.
    pub fn deleted(&self, module: &str) -> Vec<DeletedEntry> {
        self.store().deleted(module).to_vec()
    }

    /// How many records upsert inserted with `field` = `value`; more than 1 means a duplicate push.
    pub fn creates_for(&self, module: &str, field: &str, value: &str) -> usize {
        self.store().creates_for(module, field, value)
    }

    pub fn log(&self) -> Arc<RequestLog> {
        self.shared.log.clone()
    }

    /// How many requests were answered 429 because the credit window was spent. Injected 429s do not count.
    pub fn rate_limit_excess(&self) -> u64 {
        self.shared.credits.as_ref().map_or(0, |w| w.lock().unwrap().excess())
    }

    /// How many requests were answered 429 because the org had its concurrency limit in flight.
    pub fn concurrency_excess(&self) -> u64 {
        self.shared.concurrency_excess.load(Ordering::Relaxed)
    }

    /// The most API requests that were ever in flight at once.
    pub fn max_in_flight(&self) -> u32 {
        self.shared.max_in_flight.load(Ordering::Relaxed)
    }

    /// The notification channels subscribed, live or expired.
    pub fn channels(&self) -> Vec<Channel> {
        self.shared.channels.lock().unwrap().clone()
    }

    /// How many `/actions/watch` subscriptions (and renewals) succeeded.
    pub fn subscriptions(&self) -> u64 {
        self.shared.subscriptions.load(Ordering::Relaxed)
    }

    /// Every notification callback sent so far, with its answer.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.deliveries.lock().unwrap().clone()
    }

    /// The org's offset, in which the API writes times.
    pub fn offset(&self) -> FixedOffset {
        self.shared.offset
    }
}

/// A slow operation whose writes commit late; see [`ZohoSim::begin_late`].
pub struct LateBatch {
    sim: ZohoSim,
    stamped: DateTime<Utc>,
    touched: Vec<(String, u64)>,
}

impl LateBatch {
    /// The Modified_Time every write of the batch carries.
    pub fn stamped_at(&self) -> DateTime<Utc> {
        self.stamped
    }

    /// Creates a record that appears at commit.
    pub fn create(&mut self, module: &str, fields: Map<String, Value>) -> String {
        let mut store = self.sim.store();
        let id = store.allocate_id();
        store.module_mut(module).insert(
            id,
            store::Stored {
                created: self.stamped,
                current: None,
                pending: Some(Version {
                    fields,
                    modified: self.stamped,
                }),
            },
        );
        self.touched.push((module.to_string(), id));
        id.to_string()
    }

    /// Changes a record; the change appears at commit. Panics if there is no such record.
    pub fn update(&mut self, module: &str, id: &str, fields: Map<String, Value>) {
        let id = parse_id(id);
        let mut store = self.sim.store();
        let record = store
            .module_mut(module)
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no {module} record {id}"));
        let mut next = record
            .pending
            .clone()
            .or_else(|| record.current.clone())
            .expect("a record has a version");
        next.fields.extend(fields);
        next.modified = self.stamped;
        record.pending = Some(next);
        self.touched.push((module.to_string(), id));
    }

    /// Makes every write visible, still stamped with the batch's start, and notifies them.
    pub fn commit(mut self) {
        let mut changes = Vec::new();
        {
            let mut store = self.sim.store();
            for (module, id) in self.touched.drain(..) {
                let Some(record) = store.module_mut(&module).get_mut(&id) else {
                    continue; // deleted meanwhile
                };
                let Some(pending) = record.pending.take() else {
                    continue;
                };
                let operation = if record.current.is_none() { "insert" } else { "update" };
                record.current = Some(pending);
                changes.push(Change::new(&module, operation, vec![id.to_string()]));
            }
        }
        self.sim.shared.notify(changes);
    }
}

impl Drop for LateBatch {
    fn drop(&mut self) {
        if self.touched.is_empty() {
            return;
        }
        let mut store = self.sim.store();
        for (module, id) in self.touched.drain(..) {
            let records = store.module_mut(&module);
            if let Some(record) = records.get_mut(&id) {
                record.pending = None;
                if record.current.is_none() {
                    records.remove(&id);
                }
            }
        }
    }
}

fn parse_id(id: &str) -> u64 {
    id.parse()
        .unwrap_or_else(|_| panic!("Zoho ids are numbers, got {id:?}"))
}

const FIRST_NAMES: &[&str] = &["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"];
const LAST_NAMES: &[&str] = &["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen"];

/// Plausible fields for a new record of `module` with id `id` (unique `Email` where Zoho checks duplicates by it).
pub fn generated_fields(module: &str, id: u64) -> Map<String, Value> {
    let pick = |list: &[&str]| list[id as usize % list.len()].to_string();
    let fields = match module {
        "Leads" => json!({
            "Last_Name": pick(LAST_NAMES),
            "First_Name": pick(FIRST_NAMES),
            "Email": format!("lead{id}@example.com"),
            "Company": format!("Company {}", id % 1000),
            "Lead_Status": "Not Contacted",
        }),
        "Contacts" => json!({
            "Last_Name": pick(LAST_NAMES),
            "First_Name": pick(FIRST_NAMES),
            "Email": format!("contact{id}@example.com"),
            "Phone": format!("+1555{:07}", id % 10_000_000),
        }),
        "Accounts" => json!({
            "Account_Name": format!("Account {id}"),
            "Website": format!("https://account{id}.example.com"),
            "Industry": "Technology",
        }),
        "Deals" => json!({
            "Deal_Name": format!("Deal {id}"),
            "Stage": "Qualification",
            "Amount": ((id % 100_000) * 37 % 100_000) as f64,
        }),
        _ => json!({ "Name": format!("{module} {id}") }),
    };
    match fields {
        Value::Object(map) => map,
        _ => unreachable!("the literals above are objects"),
    }
}
