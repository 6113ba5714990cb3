//! A fake HubSpot: the CRM v3 object endpoints (search, list, get, batch read, batch upsert, batch archive) over
//! an in-memory store, with HubSpot's rate-limit answers, a lagging search index, the 10,000-result search cap,
//! injected faults, and signed webhooks (v1, v2, v3) sent the way HubSpot sends them.
//!
//! Order of checks on every request: log, rate-limit window, faults, bearer token, routing.

mod api;
mod churn;
mod endpoints;
mod search;
mod store;
mod webhooks;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::faults::Faults;
use crate::oauth::{OAuthSimConfig, TokenIssuer};
use crate::request_log::RequestLog;
use crate::server::{self, Running};
use crate::window::SlidingWindow;
use store::{Store, now_ms, truncate_ms};
use wire::Selection;

pub use endpoints::{MAX_BATCH, MAX_LIST_LIMIT};
pub use search::MAX_LIMIT as MAX_SEARCH_LIMIT;
pub use webhooks::{APP_ID, PORTAL_ID, SignatureVersion, sign_v1, sign_v2, sign_v3};

/// The property that holds an object type's last modification time: `lastmodifieddate` for contacts,
/// `hs_lastmodifieddate` for every other type.
pub fn modified_property(object: &str) -> &'static str {
    if object == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    }
}

/// How a [`HubSpotSim`] behaves.
#[derive(Debug, Clone)]
pub struct HubSpotSimConfig {
    /// The private-app token accepted as `Authorization: Bearer <token>`; anything else is answered 401.
    pub access_token: String,
    /// The app's client secret, which signs webhooks.
    pub client_secret: String,
    /// The general limit: at most `n` requests in any sliding window of the given length (every request counts,
    /// whatever its answer). None: unlimited.
    pub rate_limit: Option<(u32, Duration)>,
    /// Whether a 429 carries `Retry-After` (whole seconds, rounded up).
    pub retry_after_header: bool,
    pub faults: Faults,
    /// Search sees every record as it was this long ago (HubSpot's search index lags writes by seconds).
    pub index_lag: Duration,
    /// How many results of one search query can be paged through (HubSpot: 10,000); a request whose
    /// `after + limit` goes past it is answered 400.
    pub search_cap: usize,
    /// The separate limit on search requests (HubSpot: about 5 per second per token), applied after the general
    /// one. None: only the general limit. (An addition to the lead's API, from CRM-APIS.md.)
    pub search_rate_limit: Option<(u32, Duration)>,
    /// A public app's OAuth2: `POST /oauth/v1/token` issues access tokens (30 minutes on HubSpot) that the API
    /// accepts besides `access_token`. None: private-app tokens only.
    pub oauth: Option<OAuthSimConfig>,
}

impl Default for HubSpotSimConfig {
    fn default() -> Self {
        Self {
            access_token: "hs-test-token".into(),
            client_secret: "hs-test-secret".into(),
            rate_limit: None,
            retry_after_header: true,
            faults: Faults::none(),
            index_lag: Duration::ZERO,
            search_cap: 10_000,
            search_rate_limit: None,
            oauth: None,
        }
    }
}

/// One record as the simulator holds it (the current version, archived or not).
#[derive(Debug, Clone, PartialEq)]
pub struct SimRecord {
    pub id: String,
    /// Every property the record has, as the API returns them: values as strings, plus `hs_object_id`,
    /// `createdate` and the modified property.
    pub properties: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub archived: bool,
}

/// The state the server task and the test share.
pub(crate) struct Shared {
    access_token: Mutex<String>,
    client_secret: String,
    retry_after_header: bool,
    search_cap: usize,
    faults: Mutex<Faults>,
    window: Option<Mutex<SlidingWindow>>,
    search_window: Option<Mutex<SlidingWindow>>,
    store: Mutex<Store>,
    log: Arc<RequestLog>,
    next_event_id: AtomicU64,
    http: reqwest::Client,
    oauth: Option<TokenIssuer>,
}

/// A running fake HubSpot. Clones share the same server and data.
#[derive(Clone)]
pub struct HubSpotSim {
    shared: Arc<Shared>,
    base_url: String,
    running: Arc<Mutex<Option<Running>>>,
}

impl std::fmt::Debug for HubSpotSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSpotSim")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl HubSpotSim {
    /// Starts the server on `127.0.0.1` and a free port.
    pub async fn start(config: HubSpotSimConfig) -> std::io::Result<HubSpotSim> {
        let window = |limit: Option<(u32, Duration)>| limit.map(|(n, every)| Mutex::new(SlidingWindow::new(n, every)));
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            access_token: Mutex::new(config.access_token),
            client_secret: config.client_secret,
            retry_after_header: config.retry_after_header,
            search_cap: config.search_cap,
            faults: Mutex::new(config.faults),
            window: window(config.rate_limit),
            search_window: window(config.search_rate_limit),
            store: Mutex::new(Store::new(config.index_lag)),
            log: Arc::new(RequestLog::default()),
            next_event_id: AtomicU64::new(1),
            http,
            oauth: config.oauth.map(TokenIssuer::new),
        });
        let running = server::spawn(([127, 0, 0, 1], 0).into(), shared.clone()).await?;
        Ok(HubSpotSim {
            base_url: running.base_url(),
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

    /// The OAuth token endpoint, when the simulator was started with `oauth`.
    pub fn oauth(&self) -> Option<&TokenIssuer> {
        self.shared.oauth.as_ref()
    }

    /// Replaces the accepted token, e.g. to simulate a revoked one.
    pub fn set_access_token(&self, token: &str) {
        *self.shared.access_token.lock().unwrap() = token.to_string();
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    /// Creates a record now; returns its id (ids come from one increasing counter shared by all object types).
    pub fn create(&self, object: &str, properties: Map<String, Value>) -> String {
        self.store()
            .create(object, properties, now_ms(), Instant::now())
            .to_string()
    }

    /// Merges `properties` into a record and bumps its modified time to now. Panics if there is no such record.
    pub fn update(&self, object: &str, id: &str, properties: Map<String, Value>) {
        let found = self
            .store()
            .update(object, parse_id(id), properties, now_ms(), Instant::now());
        assert!(found, "no {object} record {id}");
    }

    /// Bumps a record's modified time to now without changing anything else. Panics if there is no such record.
    pub fn touch(&self, object: &str, id: &str) {
        self.update(object, id, Map::new());
    }

    /// Archives a record (HubSpot's delete). Panics if there is no such record; archiving twice is a no-op.
    pub fn delete(&self, object: &str, id: &str) {
        let id_num = parse_id(id);
        let mut store = self.store();
        let exists = store.object(object).and_then(|o| o.get(id_num)).is_some();
        assert!(exists, "no {object} record {id}");
        store.archive(object, id_num, now_ms(), Instant::now());
    }

    /// Creates `n` records with generated properties (contacts: unique `email`, `firstname`, `lastname`;
    /// companies: `name`, `domain`; deals: `dealname`, `amount`, ...; others: `name`). With `at`, every one is
    /// created and modified at exactly that instant (truncated to ms): a block of equal timestamps. Without, each
    /// gets the current time, so consecutive records often share a millisecond.
    pub fn seed(&self, object: &str, n: usize, at: Option<DateTime<Utc>>) -> Vec<String> {
        let at = at.map(truncate_ms);
        let now = Instant::now();
        let mut store = self.store();
        (0..n)
            .map(|_| {
                let id = store.allocate_id();
                let when = at.unwrap_or_else(now_ms);
                store.insert(object, id, generated_properties(object, id), when, when, now);
                id.to_string()
            })
            .collect()
    }

    /// The truth: every record of `object`, archived ones included, in id order, current versions (no lag).
    pub fn records(&self, object: &str) -> Vec<SimRecord> {
        let store = self.store();
        let Some(objects) = store.object(object) else {
            return Vec::new();
        };
        objects
            .records()
            .iter()
            .map(|record| {
                let version = record.current();
                SimRecord {
                    id: record.id.to_string(),
                    properties: wire::wire_properties(object, record, version, Selection::All),
                    created_at: record.created_at,
                    updated_at: version.updated_at,
                    archived: version.archived(),
                }
            })
            .collect()
    }

    /// How many records batch/upsert created for this unique value; more than 1 means a duplicate push.
    pub fn creates_for(&self, object: &str, id_property: &str, value: &str) -> usize {
        self.store().creates_for(object, id_property, value)
    }

    pub fn log(&self) -> Arc<RequestLog> {
        self.shared.log.clone()
    }

    /// How many requests were answered 429 because a window (general or search) was full. Injected 429 faults
    /// do not count.
    pub fn rate_limit_excess(&self) -> u64 {
        [&self.shared.window, &self.shared.search_window]
            .into_iter()
            .flatten()
            .map(|w| w.lock().unwrap().excess())
            .sum()
    }

    /// One webhook event as HubSpot sends it, for `object_id` (e.g. `"contact.propertyChange"`). A
    /// `*.propertyChange` event names a property of the record and its current value.
    pub fn event(&self, subscription_type: &str, object_id: &str) -> Value {
        let property = subscription_type.ends_with(".propertyChange").then(|| {
            let object = webhooks::object_of_subscription(subscription_type);
            let store = self.store();
            let record = object_id
                .parse::<u64>()
                .ok()
                .and_then(|id| store.object(&object)?.get(id));
            let name = changed_property(&object, record.map(|r| &r.current().properties));
            let value = record
                .and_then(|r| endpoints::current_value(r, &name))
                .unwrap_or_default();
            (name, value)
        });
        self.event_with(
            subscription_type,
            object_id,
            now_ms().timestamp_millis(),
            property.as_ref().map(|(n, v)| (n.as_str(), v.as_str())),
        )
    }

    fn event_with(
        &self,
        subscription_type: &str,
        object_id: &str,
        at_ms: i64,
        property: Option<(&str, &str)>,
    ) -> Value {
        let event_id = self.shared.next_event_id.fetch_add(1, Ordering::Relaxed);
        webhooks::event_json(event_id, subscription_type, object_id, at_ms, property)
    }

    /// POSTs `events` as one JSON array to `url`, signed with the client secret the way HubSpot signs a request
    /// to that exact URL.
    pub async fn send_webhook(
        &self,
        url: &str,
        events: &[Value],
        version: SignatureVersion,
    ) -> reqwest::Result<reqwest::StatusCode> {
        let body = serde_json::to_vec(events).expect("JSON values serialise");
        // Sign the URL as it will go on the wire (the client normalises it, e.g. an empty path becomes "/").
        let uri = url::Url::parse(url).map_or_else(|_| url.to_string(), |u| u.to_string());
        let headers = webhooks::signature_headers(
            &self.shared.client_secret,
            &uri,
            &body,
            version,
            Utc::now().timestamp_millis(),
        );
        let mut request = self.shared.http.post(url).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        Ok(request.body(body).send().await?.status())
    }
}

fn parse_id(id: &str) -> u64 {
    id.parse()
        .unwrap_or_else(|_| panic!("HubSpot ids are numbers, got {id:?}"))
}

const FIRST_NAMES: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
];

/// Plausible properties for a new record of `object` with id `id` (unique where HubSpot needs it: email, domain).
pub(crate) fn generated_properties(object: &str, id: u64) -> Map<String, Value> {
    let pick = |list: &[&str]| list[id as usize % list.len()].to_string();
    let properties = match object {
        "contacts" => json!({
            "email": format!("user{id}@example.com"),
            "firstname": pick(FIRST_NAMES),
            "lastname": pick(LAST_NAMES),
        }),
        "companies" => json!({
            "name": format!("Company {id}"),
            "domain": format!("company{id}.example.com"),
        }),
        "deals" => json!({
            "dealname": format!("Deal {id}"),
            "amount": ((id * 37) % 100_000).to_string(),
            "dealstage": "appointmentscheduled",
            "pipeline": "default",
        }),
        _ => json!({ "name": format!("{object} {id}") }),
    };
    match properties {
        Value::Object(map) => map,
        _ => unreachable!("the literals above are objects"),
    }
}

/// The property a `propertyChange` event names: the object type's main name property if the record has it,
/// else the first property it has.
fn changed_property(object: &str, properties: Option<&Map<String, Value>>) -> String {
    let preferred = match object {
        "contacts" => "firstname",
        "deals" => "dealname",
        _ => "name",
    };
    match properties {
        Some(props) if !props.contains_key(preferred) => props.keys().next().cloned().unwrap_or(preferred.into()),
        _ => preferred.to_string(),
    }
}
