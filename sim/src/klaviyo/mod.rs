//! A fake Klaviyo: the profiles API (`GET /api/profiles` with Klaviyo's filter syntax, sorts, sparse fieldsets
//! and opaque cursor pages; `GET /api/profiles/{id}`; `POST /api/profile-import`; `POST
//! /api/data-privacy-deletion-jobs`) over an in-memory account, with Klaviyo's private-key auth and `revision`
//! header, its per-endpoint burst and steady rate limits answered as Klaviyo answers them, eventually consistent
//! reads (each write becomes visible after its own delay, so not in write order), second-precision `updated`
//! times, hard deletes that leave no trace, injected faults, optional OAuth, and signed system webhooks.
//!
//! Order of checks on every request: log, rate-limit windows, faults, authorization, revision, routing.

mod api;
mod churn;
mod cursor;
mod filter;
mod profiles;
mod store;
mod webhooks;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::faults::Faults;
use crate::oauth::{OAuthSimConfig, TokenIssuer};
use crate::request_log::RequestLog;
use crate::server::{self, Running};
use api::{BUCKETS, Bucket};
use store::{Store, now_s, truncate_s};

pub use profiles::MAX_PAGE_SIZE;
pub use webhooks::{SUBSCRIBED_TOPIC, UNSUBSCRIBED_TOPIC, http_date, sign};
pub use wire::format_time;

/// The one object type this simulator serves.
pub const PROFILES: &str = "profiles";

/// Klaviyo's documented limits for the profile endpoints (tier L): 75 per second (burst) and 700 per minute
/// (steady), applied to each endpoint separately.
pub const DOCUMENTED_LIMITS: [(u32, Duration); 2] = [(75, Duration::from_secs(1)), (700, Duration::from_secs(60))];

/// How a [`KlaviyoSim`] behaves.
#[derive(Debug, Clone)]
pub struct KlaviyoSimConfig {
    /// The private API key accepted as `Authorization: Klaviyo-API-Key <key>`; anything else is answered 401.
    pub api_key: String,
    /// The system webhook's secret key, which signs every delivery.
    pub webhook_secret: String,
    /// The system webhook's id (`Klaviyo-Webhook-Id`, `meta.klaviyo_webhook_id`).
    pub webhook_id: String,
    /// The account's id (`meta.klaviyo_account_id`).
    pub account_id: String,
    /// Each endpoint's windows: at most `n` requests in any sliding window of the given length, for every window.
    /// Empty: unlimited. [`DOCUMENTED_LIMITS`] is what Klaviyo documents.
    pub rate_limits: Vec<(u32, Duration)>,
    pub faults: Faults,
    /// The longest a write takes to become visible to reads; each write draws its own delay up to this, so reads
    /// can see a later write before an earlier one.
    pub read_lag: Duration,
    /// OAuth2 (an app installed on the account): `POST /oauth/token`, and `Authorization: Bearer` accepted too.
    pub oauth: Option<OAuthSimConfig>,
}

impl Default for KlaviyoSimConfig {
    fn default() -> Self {
        Self {
            api_key: "pk_test_klaviyo_sim_key".into(),
            webhook_secret: "klaviyo-sim-webhook-secret".into(),
            webhook_id: "01HWEBHOOK0000000000000000".into(),
            account_id: "XyZ123".into(),
            rate_limits: Vec::new(),
            faults: Faults::none(),
            read_lag: Duration::ZERO,
            oauth: None,
        }
    }
}

/// One live profile as the account holds it now (no read lag).
#[derive(Debug, Clone, PartialEq)]
pub struct SimProfile {
    pub id: String,
    /// Every attribute as the API returns it, `created` and `updated` included.
    pub attributes: Map<String, Value>,
    pub updated: DateTime<Utc>,
}

/// The state the server task and the test share.
pub(crate) struct Shared {
    api_key: Mutex<String>,
    webhook_secret: String,
    webhook_id: String,
    account_id: String,
    faults: Mutex<Faults>,
    /// One per [`api::Route::bucket`]; empty when unlimited.
    buckets: Vec<Mutex<Bucket>>,
    store: Mutex<Store>,
    log: Arc<RequestLog>,
    /// Where links point; known once the server is bound.
    base_url: OnceLock<String>,
    oauth: Option<TokenIssuer>,
    next_event: AtomicU64,
    next_seed: AtomicU64,
    http: reqwest::Client,
}

/// A running fake Klaviyo. Clones share the same server and data.
#[derive(Clone)]
pub struct KlaviyoSim {
    shared: Arc<Shared>,
    base_url: String,
    running: Arc<Mutex<Option<Running>>>,
}

impl std::fmt::Debug for KlaviyoSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KlaviyoSim")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl KlaviyoSim {
    /// Starts the server on `127.0.0.1` and a free port.
    pub async fn start(config: KlaviyoSimConfig) -> std::io::Result<KlaviyoSim> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        let buckets = if config.rate_limits.is_empty() {
            Vec::new()
        } else {
            (0..BUCKETS)
                .map(|_| Mutex::new(Bucket::new(&config.rate_limits)))
                .collect()
        };
        let shared = Arc::new(Shared {
            api_key: Mutex::new(config.api_key),
            webhook_secret: config.webhook_secret,
            webhook_id: config.webhook_id,
            account_id: config.account_id,
            faults: Mutex::new(config.faults),
            buckets,
            store: Mutex::new(Store::new(config.read_lag)),
            log: Arc::new(RequestLog::default()),
            base_url: OnceLock::new(),
            oauth: config.oauth.map(TokenIssuer::new),
            next_event: AtomicU64::new(1),
            next_seed: AtomicU64::new(1),
            http,
        });
        let running = server::spawn(([127, 0, 0, 1], 0).into(), shared.clone()).await?;
        let base_url = running.base_url();
        shared.base_url.set(base_url.clone()).expect("set once");
        Ok(KlaviyoSim {
            base_url,
            shared,
            running: Arc::new(Mutex::new(Some(running))),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
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

    /// Replaces the accepted private key, e.g. to simulate a revoked one.
    pub fn set_api_key(&self, key: &str) {
        *self.shared.api_key.lock().unwrap() = key.to_string();
    }

    /// The authorisation server, when OAuth is enabled.
    pub fn oauth(&self) -> Option<&TokenIssuer> {
        self.shared.oauth.as_ref()
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    /// Creates a profile now (as the Klaviyo UI or another integration would); returns its id.
    pub fn create(&self, attributes: Map<String, Value>) -> String {
        let at = now_s();
        let mut store = self.store();
        let id = store.allocate_id(at);
        store.insert(id.clone(), attributes, at, Instant::now(), false);
        id
    }

    /// Merges `changes` into a profile and sets its `updated` to now. Panics if there is no such live profile.
    pub fn update(&self, id: &str, changes: Map<String, Value>) {
        let found = self.store().update(id, &changes, now_s(), Instant::now());
        assert!(found, "no live profile {id}");
    }

    /// Deletes a profile for good, as a data-privacy deletion does. Panics if there is no such live profile.
    pub fn delete(&self, id: &str) {
        let found = self.store().delete(id, now_s(), Instant::now());
        assert!(found, "no live profile {id}");
    }

    /// Creates `n` profiles of `object` (only "profiles" exists) with a unique email and generated names. With
    /// `at`, every one is created and updated in exactly that second (a block of equal `updated` times) and is
    /// readable at once, as data from the past is. Without, each gets the current second, so consecutive profiles
    /// mostly share one, and becomes readable after its own read lag.
    pub fn seed(&self, object: &str, n: usize, at: Option<DateTime<Utc>>) -> Vec<String> {
        assert_eq!(object, PROFILES, "Klaviyo's simulator only has profiles");
        let at = at.map(truncate_s);
        let now = Instant::now();
        let mut store = self.store();
        (0..n)
            .map(|_| {
                let when = at.unwrap_or_else(now_s);
                let id = store.allocate_id(when);
                let seq = self.shared.next_seed.fetch_add(1, Ordering::Relaxed);
                store.insert(id.clone(), generated_attributes(seq), when, now, at.is_some());
                id
            })
            .collect()
    }

    /// The truth: every live profile in id order, current versions (no read lag).
    pub fn records(&self) -> Vec<SimProfile> {
        let store = self.store();
        store
            .profiles()
            .filter(|p| !p.current().deleted)
            .map(|p| SimProfile {
                id: p.id.clone(),
                attributes: wire::attributes(p, p.current()),
                updated: p.current().updated,
            })
            .collect()
    }

    /// Ids of every profile deleted so far.
    pub fn deleted_ids(&self) -> Vec<String> {
        self.store().deletions().iter().map(|(id, _)| id.clone()).collect()
    }

    /// How many profiles `profile-import` created with this identifier (`external_id`, `email`, `phone_number`)
    /// value; more than 1 means a duplicate push.
    pub fn creates_for(&self, identifier: &str, value: &str) -> usize {
        self.store().creates_for(identifier, value)
    }

    pub fn log(&self) -> Arc<RequestLog> {
        self.shared.log.clone()
    }

    /// How many requests were answered 429 because an endpoint's window was full. Injected 429 faults do not count.
    pub fn rate_limit_excess(&self) -> u64 {
        self.shared.buckets.iter().map(|b| b.lock().unwrap().excess()).sum()
    }

    /// The webhook's secret key and id, for tests that sign their own requests.
    pub fn webhook_secret(&self) -> &str {
        &self.shared.webhook_secret
    }

    pub fn webhook_id(&self) -> &str {
        &self.shared.webhook_id
    }

    /// One `data` item as Klaviyo sends it: an event on `topic` about `profile_id`, with a fresh `external_id`.
    pub fn event(&self, topic: &str, profile_id: &str) -> Value {
        let n = self.shared.next_event.fetch_add(1, Ordering::Relaxed);
        let external_id = format!("{}{n:08}", webhooks::metric_id(topic));
        webhooks::event_item(&external_id, topic, profile_id, &webhooks::metric_id(topic), Utc::now())
    }

    /// The body and headers of a delivery of `items`, signed now: `(headers, body)`.
    pub fn webhook_request(&self, items: &[Value]) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let now = Utc::now();
        let body = serde_json::to_vec(&webhooks::envelope(
            items,
            &self.shared.account_id,
            &self.shared.webhook_id,
            now,
        ))
        .expect("JSON values serialise");
        let timestamp = http_date(now);
        let headers = vec![
            ("content-type", "application/json".to_string()),
            ("klaviyo-webhook-id", self.shared.webhook_id.clone()),
            (
                "klaviyo-signature",
                sign(&self.shared.webhook_secret, &body, &timestamp),
            ),
            ("klaviyo-timestamp", timestamp),
        ];
        (headers, body)
    }

    /// POSTs `items` as one signed delivery to `url`.
    pub async fn send_webhook(&self, url: &str, items: &[Value]) -> reqwest::Result<reqwest::StatusCode> {
        let (headers, body) = self.webhook_request(items);
        let mut request = self.shared.http.post(url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        Ok(request.body(body).send().await?.status())
    }
}

const FIRST_NAMES: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
];

/// Plausible attributes for the `seq`th generated profile (the email is unique).
pub(crate) fn generated_attributes(seq: u64) -> Map<String, Value> {
    let pick = |list: &[&str]| list[seq as usize % list.len()].to_string();
    match json!({
        "email": format!("profile{seq}@example.com"),
        "first_name": pick(FIRST_NAMES),
        "last_name": pick(LAST_NAMES),
        "properties": {"plan": if seq.is_multiple_of(3) { "pro" } else { "free" }},
    }) {
        Value::Object(map) => map,
        _ => unreachable!("the literal is an object"),
    }
}
