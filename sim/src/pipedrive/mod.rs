//! A fake Pipedrive: API v2 persons, organizations and deals (list with `updated_since`/`updated_until` and
//! cursor paging, get by id, search, create, update, delete) over an in-memory store, with Pipedrive's pitfalls:
//!
//! - `update_time` has second precision, so bulk edits and imports put thousands of records on one timestamp;
//! - a late commit is stamped when it was written but becomes visible later ([`PipedriveSim::update_late`]);
//! - search is backed by an index that lags writes by [`PipedriveSimConfig::index_lag`];
//! - deletes are soft: a deleted record drops out of lists and searches, reads as `is_deleted` by id for 30 days,
//!   then is purged; merges delete the merged record;
//! - rate limits in 2-second windows, answered with `x-ratelimit-*` headers and 429 "Request over limit", plus
//!   the separate search limit;
//! - webhooks v2 (one event per POST, HTTP Basic credentials, retried with the same `meta.id`).
//!
//! Order of checks on every request: log, rate-limit window(s), faults, `x-api-token`, routing.

mod api;
mod churn;
mod clock;
mod fake;
mod list;
mod search;
mod store;
mod webhooks;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value};

use crate::faults::Faults;
use crate::request_log::RequestLog;
use crate::server::{self, Running};
use crate::window::SlidingWindow;
use store::Store;
use webhooks::EventParts;

pub use list::{MAX_CUSTOM_FIELDS, MAX_IDS, MAX_LIMIT};
pub use store::ENTITIES;
pub use webhooks::{COMPANY_ID, USER_ID, WEBHOOK_ID, WebhookAction, singular};
pub use wire::format_time;

/// The key of the custom field tests use to hold an idempotency key (Pipedrive's custom field keys are 40 hex
/// characters). The simulator accepts any custom field key; this one is only a shared constant.
pub const KEY_FIELD: &str = "5d1c0f3e8b2a4c7d9e6f1a3b5c7d9e0f2a4b6c8d";

/// How a [`PipedriveSim`] behaves.
#[derive(Debug, Clone)]
pub struct PipedriveSimConfig {
    /// The API token accepted in `x-api-token`; anything else is answered 401.
    pub api_token: String,
    /// The HTTP Basic user and password the webhooks carry (configured on the webhook in Pipedrive).
    pub webhook_user: String,
    pub webhook_password: String,
    /// At most `n` requests in any sliding window of the given length (every request counts). None: unlimited.
    pub rate_limit: Option<(u32, Duration)>,
    /// The separate limit on search requests (Pipedrive: 10 per 2 s), applied after the general one.
    pub search_rate_limit: Option<(u32, Duration)>,
    /// Whether a 429 carries `Retry-After` (whole seconds); `x-ratelimit-reset` is always there.
    pub retry_after_header: bool,
    pub faults: Faults,
    /// How far search lags behind writes.
    pub index_lag: Duration,
    /// How long the late commits that churn makes stay invisible; zero: churn makes none.
    pub late_commit: Duration,
    /// When a failed webhook delivery is tried again (Pipedrive: after 3 s, 30 s and 150 s).
    pub webhook_retry_delays: Vec<Duration>,
}

impl Default for PipedriveSimConfig {
    fn default() -> Self {
        Self {
            api_token: "pd-test-token".into(),
            webhook_user: "pd-hook-user".into(),
            webhook_password: "pd-hook-password".into(),
            rate_limit: None,
            search_rate_limit: None,
            retry_after_header: false,
            faults: Faults::none(),
            index_lag: Duration::ZERO,
            late_commit: Duration::ZERO,
            webhook_retry_delays: vec![
                Duration::from_secs(3),
                Duration::from_secs(30),
                Duration::from_secs(150),
            ],
        }
    }
}

/// One record as the simulator holds it: its last write, visible or not, deleted or not.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRecord {
    pub id: u64,
    pub add_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub deleted: bool,
    /// The record it was merged into, when a merge deleted it.
    pub merged_into: Option<u64>,
    /// Whether API readers see this write yet (false while a late commit is in flight).
    pub visible: bool,
    /// The record as `GET /api/v2/{entity}/{id}` shows this write.
    pub data: Value,
}

/// The state the server task and the test share. Each lock is held briefly, never across `.await`.
pub(crate) struct Shared {
    api_token: Mutex<String>,
    webhook_credentials: (String, String),
    retry_after_header: bool,
    webhook_retry_delays: Vec<Duration>,
    late_commit: Duration,
    faults: Mutex<Faults>,
    /// Operation -> how many more of its successful answers to lose (see [`PipedriveSim::lose_answers`]).
    lost_answers: Mutex<HashMap<String, usize>>,
    window: Option<Mutex<SlidingWindow>>,
    search_window: Option<Mutex<SlidingWindow>>,
    store: Mutex<Store>,
    log: Arc<RequestLog>,
    http: reqwest::Client,
}

/// A running fake Pipedrive. Clones share the same server and data.
#[derive(Clone)]
pub struct PipedriveSim {
    shared: Arc<Shared>,
    base_url: String,
    running: Arc<Mutex<Option<Running>>>,
}

impl std::fmt::Debug for PipedriveSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipedriveSim")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl PipedriveSim {
    /// Starts the server on `127.0.0.1` and a free port.
    pub async fn start(config: PipedriveSimConfig) -> std::io::Result<PipedriveSim> {
        let window = |limit: Option<(u32, Duration)>| limit.map(|(n, every)| Mutex::new(SlidingWindow::new(n, every)));
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            api_token: Mutex::new(config.api_token),
            webhook_credentials: (config.webhook_user, config.webhook_password),
            retry_after_header: config.retry_after_header,
            webhook_retry_delays: config.webhook_retry_delays,
            late_commit: config.late_commit,
            faults: Mutex::new(config.faults),
            lost_answers: Mutex::new(HashMap::new()),
            window: window(config.rate_limit),
            search_window: window(config.search_rate_limit),
            store: Mutex::new(Store::new(config.index_lag)),
            log: Arc::new(RequestLog::default()),
            http,
        });
        let running = server::spawn(([127, 0, 0, 1], 0).into(), shared.clone()).await?;
        Ok(PipedriveSim {
            base_url: running.base_url(),
            shared,
            running: Arc::new(Mutex::new(Some(running))),
        })
    }

    /// `http://127.0.0.1:PORT` (the API is under `/api/v2`), without a trailing slash.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// Stops the server (for every clone); the data stays readable.
    pub async fn shutdown(self) {
        let running = self.running.lock().unwrap().take();
        if let Some(running) = running {
            running.shutdown().await;
        }
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// Carries out the next `n` requests of `operation` ("create", "update", "list", "search", ...) that
    /// succeed, then loses their answers (the connection is reset): the write happened, the client cannot know.
    pub fn lose_answers(&self, operation: &str, n: usize) {
        self.shared
            .lost_answers
            .lock()
            .unwrap()
            .insert(operation.to_string(), n);
    }

    /// Replaces the accepted API token, e.g. to simulate a regenerated one.
    pub fn set_api_token(&self, token: &str) {
        *self.shared.api_token.lock().unwrap() = token.to_string();
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    /// The simulator's clock (UTC, whole seconds): the `update_time` the next write gets.
    pub fn now(&self) -> DateTime<Utc> {
        self.store().clock.now()
    }

    /// Freezes the clock at `at`; from then on it moves only through [`PipedriveSim::advance_clock`].
    pub fn set_now(&self, at: DateTime<Utc>) {
        self.store().clock.set(at);
    }

    /// Moves the clock forward, frozen or not.
    pub fn advance_clock(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).expect("a sane duration");
        self.store().clock.advance(by);
    }

    /// Creates a record now from `fields` (standard fields and an optional `custom_fields` object); returns its
    /// id. Not counted by [`PipedriveSim::creates_with`], which counts API creates.
    pub fn create(&self, entity: &str, fields: Map<String, Value>) -> u64 {
        let (fields, custom) = split_custom(fields);
        self.store()
            .create(entity, fake::with_defaults(entity, fields), custom, Instant::now())
    }

    /// Merges `fields` into a live record now. Panics if there is no such live record.
    pub fn update(&self, entity: &str, id: u64, fields: Map<String, Value>) {
        let (fields, custom) = split_custom(fields);
        let now = Instant::now();
        let written = self.store().update(entity, id, fields, custom, now, now);
        assert!(written.is_ok(), "no live {entity} record {id}");
    }

    /// A late commit: `fields` are written now (so `update_time` is now) but API readers see the change only
    /// after `delay`. Panics if there is no such live record.
    pub fn update_late(&self, entity: &str, id: u64, fields: Map<String, Value>, delay: Duration) {
        let (fields, custom) = split_custom(fields);
        let now = Instant::now();
        let written = self.store().update(entity, id, fields, custom, now + delay, now);
        assert!(written.is_ok(), "no live {entity} record {id}");
    }

    /// Soft-deletes a record now. Panics if there is no such live record.
    pub fn delete(&self, entity: &str, id: u64) {
        let deleted = self.store().delete(entity, id, None, Instant::now());
        assert!(deleted.is_ok(), "no live {entity} record {id}");
    }

    /// Merges record `from` into record `into`: `from` is deleted (naming `into`) and `into` is updated now.
    /// Panics unless both are live.
    pub fn merge(&self, entity: &str, from: u64, into: u64) {
        let now = Instant::now();
        let mut store = self.store();
        store
            .update(entity, into, Map::new(), Map::new(), now, now)
            .unwrap_or_else(|_| panic!("no live {entity} record {into}"));
        store
            .delete(entity, from, Some(into), now)
            .unwrap_or_else(|_| panic!("no live {entity} record {from}"));
    }

    /// Creates `n` records with generated fields (persons: name, unique email, phone; organizations: name,
    /// address; deals: title, value). With `at`, every one is created and updated at exactly that second: a block
    /// of equal timestamps like a bulk import, already in the search index if `at` is older than the index lag.
    /// Without, each gets the clock's current second, so consecutive records share a timestamp too.
    pub fn seed(&self, entity: &str, n: usize, at: Option<DateTime<Utc>>) -> Vec<u64> {
        let now = Instant::now();
        let mut store = self.store();
        let at = at.map(|t| t.trunc_subsecs(0));
        let lag = store.index_lag;
        let indexed = at.is_some_and(|t| (store.clock.now() - t).to_std().is_ok_and(|age| age >= lag));
        let visible_at = if indexed {
            now.checked_sub(lag).unwrap_or(now)
        } else {
            now
        };
        (0..n)
            .map(|_| {
                let id = store.allocate_id(entity);
                let when = at.unwrap_or_else(|| store.clock.now());
                store.insert(entity, id, fake::generated(entity, id), Map::new(), when, visible_at);
                id
            })
            .collect()
    }

    /// The truth: every record of `entity` that has not been purged, by id, at its last write (visible or not).
    pub fn records(&self, entity: &str) -> Vec<SimRecord> {
        let now = Instant::now();
        let store = self.store();
        let today = store.clock.now();
        let Some(records) = store.entity(entity) else {
            return Vec::new();
        };
        records
            .records
            .values()
            .filter(|r| !r.latest().purged(today))
            .map(|record| {
                let version = record.latest();
                SimRecord {
                    id: record.id,
                    add_time: record.add_time,
                    update_time: version.update_time,
                    deleted: version.deleted(),
                    merged_into: version.merged_into,
                    visible: !record.pending(now),
                    data: wire::record_json(record, version, None),
                }
            })
            .collect()
    }

    /// How many records API creates made with custom field `field` set to `value`; more than 1 means a
    /// duplicate push.
    pub fn creates_with(&self, entity: &str, field: &str, value: &str) -> usize {
        self.store().creates_with(entity, field, value)
    }

    pub fn log(&self) -> Arc<RequestLog> {
        self.shared.log.clone()
    }

    /// How many requests were answered 429 because a window (general or search) was full. Injected 429 faults do
    /// not count.
    pub fn rate_limit_excess(&self) -> u64 {
        [&self.shared.window, &self.shared.search_window]
            .into_iter()
            .flatten()
            .map(|w| w.lock().unwrap().excess())
            .sum()
    }

    /// The webhook v2 body Pipedrive sends now for `action` on record `id`: `data` is the record as it is now
    /// (null for a delete), `previous` is the record for a delete and null otherwise, and the delete of a merged
    /// record names the survivor in `meta.merged_to_id`.
    pub fn event(&self, action: WebhookAction, entity: &str, id: u64) -> Value {
        let store = self.store();
        let record = store.entity(entity).and_then(|e| e.get(id));
        let current = record.map(|r| wire::record_json(r, r.latest(), None));
        let merged_to = record.and_then(|r| r.latest().merged_into);
        let (data, previous) = match action {
            WebhookAction::Delete => (None, current),
            WebhookAction::Create | WebhookAction::Change => (current, None),
        };
        webhooks::event_body(EventParts {
            action,
            entity: entity.to_string(),
            id,
            data,
            previous,
            merged_to: merged_to.filter(|_| action == WebhookAction::Delete),
            bulk: false,
            at: Utc::now(),
        })
    }

    /// POSTs one webhook body to `url` once, with the configured Basic credentials.
    pub async fn send_webhook(&self, url: &str, body: &Value) -> reqwest::Result<reqwest::StatusCode> {
        webhooks::post(&self.shared.http, url, &self.shared.webhook_credentials, body).await
    }

    /// POSTs one webhook body to `url` once with the given Basic credentials (for tests of refusals).
    pub async fn send_webhook_as(
        &self,
        url: &str,
        body: &Value,
        user: &str,
        password: &str,
    ) -> reqwest::Result<reqwest::StatusCode> {
        let credentials = (user.to_string(), password.to_string());
        webhooks::post(&self.shared.http, url, &credentials, body).await
    }
}

/// Splits a `custom_fields` object off a field map.
fn split_custom(mut fields: Map<String, Value>) -> (Map<String, Value>, Map<String, Value>) {
    let custom = match fields.remove("custom_fields") {
        Some(Value::Object(custom)) => custom,
        _ => Map::new(),
    };
    (fields, custom)
}

/// A JSON object literal as the field map the methods above take. Panics on anything but an object.
pub fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("fields must be a JSON object, got {other}"),
    }
}
