//! The HTTP front of the fake Pipedrive. Every request is logged with its final status and passes, in order, the
//! rate-limit window (and the search window for searches), the injected faults and the `x-api-token` check
//! before it reaches its endpoint. Every answer carries `x-ratelimit-limit`, `-remaining` and `-reset`.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use rand::seq::IndexedRandom;
use serde_json::{Map, Value, json};

use super::Shared;
use super::fake::{required_field, with_defaults, writable_fields};
use super::list::{self, ListQuery};
use super::search::{self, SearchQuery};
use super::store::{ENTITIES, WriteError};
use super::webhooks::singular;
use super::wire::{self, ApiError, ok, record_json};
use crate::faults::Fault;
use crate::request_log::RequestRecord;
use crate::server::{Handler, SimRequest, SimResponse};
use crate::window::{Admission, SlidingWindow};

/// The Professional plan's limit, for 429s injected as faults when no window is configured.
const ADVERTISED_LIMIT: (u32, Duration) = (80, Duration::from_secs(2));

/// The endpoint a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    List(String),
    Search(String),
    Get(String, u64),
    Create(String),
    Update(String, u64),
    Delete(String, u64),
    Unknown,
}

impl Route {
    pub fn parse(method: &Method, path: &str) -> Self {
        let Some(rest) = path.strip_prefix("/api/v2/") else {
            return Self::Unknown;
        };
        let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        let Some(entity) = segments.first().filter(|e| ENTITIES.contains(e)).map(|e| e.to_string()) else {
            return Self::Unknown;
        };
        match (method, &segments[1..]) {
            (&Method::GET, []) => Self::List(entity),
            (&Method::POST, []) => Self::Create(entity),
            (&Method::GET, ["search"]) => Self::Search(entity),
            (method, [id]) => match (method, id.parse::<u64>()) {
                (&Method::GET, Ok(id)) => Self::Get(entity, id),
                (&Method::PATCH, Ok(id)) => Self::Update(entity, id),
                (&Method::DELETE, Ok(id)) => Self::Delete(entity, id),
                _ => Self::Unknown,
            },
            _ => Self::Unknown,
        }
    }

    /// The name the request log records.
    pub fn operation(&self) -> &'static str {
        match self {
            Self::List(_) => "list",
            Self::Search(_) => "search",
            Self::Get(..) => "get",
            Self::Create(_) => "create",
            Self::Update(..) => "update",
            Self::Delete(..) => "delete",
            Self::Unknown => "unknown",
        }
    }
}

/// The `x-ratelimit-*` values of one answer.
struct LimitHeaders {
    limit: u32,
    remaining: u32,
    reset: Duration,
}

impl LimitHeaders {
    fn apply(&self, response: SimResponse) -> SimResponse {
        response
            .with_header("x-ratelimit-limit", self.limit.to_string())
            .with_header("x-ratelimit-remaining", self.remaining.to_string())
            .with_header("x-ratelimit-reset", whole_seconds(self.reset).to_string())
    }
}

/// Seconds, rounded up and at least 1, so a client that waits for them never retries in a busy loop.
fn whole_seconds(wait: Duration) -> u128 {
    wait.as_millis().div_ceil(1000).max(1)
}

/// A request a window turned away.
struct Refused {
    limits: LimitHeaders,
    retry_after: Duration,
}

/// Runs one request through an optional window.
fn admit(window: Option<&std::sync::Mutex<SlidingWindow>>, at: Instant) -> Result<Option<LimitHeaders>, Refused> {
    let Some(window) = window else {
        return Ok(None);
    };
    let mut window = window.lock().unwrap();
    let (limit, length) = (window.limit(), window.window());
    match window.admit(at) {
        Admission::Admitted { remaining } => Ok(Some(LimitHeaders {
            limit,
            remaining,
            reset: length,
        })),
        Admission::Refused { retry_after } => Err(Refused {
            limits: LimitHeaders {
                limit,
                remaining: 0,
                reset: retry_after,
            },
            retry_after,
        }),
    }
}

impl Handler for Shared {
    async fn handle(&self, request: SimRequest) -> SimResponse {
        let route = Route::parse(&request.method, request.path());
        let response = self.answer(&request, &route);
        self.log.push(RequestRecord {
            at: request.received_at,
            method: request.method.to_string(),
            path: request.path().to_string(),
            operation: route.operation().to_string(),
            status: if response.reset { 0 } else { response.status.as_u16() },
        });
        response
    }
}

impl Shared {
    fn answer(&self, request: &SimRequest, route: &Route) -> SimResponse {
        let limits = match admit(self.window.as_ref(), request.received_at) {
            Ok(limits) => limits,
            Err(refused) => return self.rate_limited(refused),
        };
        if matches!(route, Route::Search(_))
            && let Err(refused) = admit(self.search_window.as_ref(), request.received_at)
        {
            return self.rate_limited(refused);
        }
        let fault = self.faults.lock().unwrap().roll();
        let mut response = match fault {
            Fault::ServerError => {
                let statuses = [
                    StatusCode::INTERNAL_SERVER_ERROR,
                    StatusCode::BAD_GATEWAY,
                    StatusCode::SERVICE_UNAVAILABLE,
                    StatusCode::GATEWAY_TIMEOUT,
                ];
                wire::server_error(*statuses.choose(&mut rand::rng()).expect("not empty"))
            }
            Fault::RateLimited(retry_after) => {
                let limit = limits.as_ref().map_or(ADVERTISED_LIMIT.0, |l| l.limit);
                let limits = LimitHeaders {
                    limit,
                    remaining: 0,
                    reset: retry_after,
                };
                return self.rate_limited(Refused { limits, retry_after });
            }
            _ if !self.authorized(request) => wire::unauthorized(),
            _ => self.dispatch(request, route),
        };
        if response.status.is_success() && self.take_lost_answer(route.operation()) {
            response.reset = true;
        }
        match fault {
            Fault::Slow(delay) => response.delay = Some(delay),
            Fault::TruncatedJson if response.status.is_success() => response.truncate = true,
            Fault::ConnectionReset => response.reset = true,
            _ => {}
        }
        match limits {
            Some(limits) => limits.apply(response),
            None => response,
        }
    }

    /// Whether this successful answer of `operation` is one to lose.
    fn take_lost_answer(&self, operation: &str) -> bool {
        let mut lost = self.lost_answers.lock().unwrap();
        match lost.get_mut(operation) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    fn authorized(&self, request: &SimRequest) -> bool {
        request
            .header("x-api-token")
            .is_some_and(|token| token == *self.api_token.lock().unwrap())
    }

    /// Pipedrive's 429: its body and limit headers, plus `Retry-After` when configured.
    fn rate_limited(&self, refused: Refused) -> SimResponse {
        let response = refused.limits.apply(wire::rate_limited());
        if self.retry_after_header {
            response.with_header("retry-after", whole_seconds(refused.retry_after).to_string())
        } else {
            response
        }
    }

    fn dispatch(&self, request: &SimRequest, route: &Route) -> SimResponse {
        let now = Instant::now();
        let answer = match route {
            Route::List(entity) => {
                ListQuery::parse(request).map(|query| list::run(&self.store.lock().unwrap(), entity, &query, now))
            }
            Route::Search(entity) => SearchQuery::parse(entity, request)
                .map(|query| search::run(&self.store.lock().unwrap(), entity, &query, now)),
            Route::Get(entity, id) => self.get(entity, *id, now),
            Route::Create(entity) => self.create(entity, &request.body, now),
            Route::Update(entity, id) => self.update(entity, *id, &request.body, now),
            Route::Delete(entity, id) => self.delete(entity, *id, now),
            Route::Unknown => Err(ApiError::not_found(format!(
                "Unknown method {} {}",
                request.method,
                request.path()
            ))),
        };
        answer.unwrap_or_else(|e| e.response())
    }

    fn get(&self, entity: &str, id: u64, now: Instant) -> Result<SimResponse, ApiError> {
        let store = self.store.lock().unwrap();
        let today = store.clock.now();
        let record = store.entity(entity).and_then(|e| e.get(id));
        // A deleted record stays readable (with is_deleted) until it is purged.
        let seen = record.and_then(|r| r.seen(Duration::ZERO, now).map(|v| (r, v)));
        match seen {
            Some((record, version)) if !version.purged(today) => Ok(ok(record_json(record, version, None), None)),
            _ => Err(not_found(entity)),
        }
    }

    fn create(&self, entity: &str, body: &[u8], now: Instant) -> Result<SimResponse, ApiError> {
        let (fields, custom) = parse_write(entity, body)?;
        let required = required_field(entity);
        if fields
            .get(required)
            .and_then(Value::as_str)
            .is_none_or(|s| s.trim().is_empty())
        {
            return Err(ApiError::bad_request(format!("{required} is required")));
        }
        let mut store = self.store.lock().unwrap();
        store.count_create(entity, &custom);
        let id = store.create(entity, with_defaults(entity, fields), custom, now);
        let record = store.entity(entity).and_then(|e| e.get(id)).expect("just created");
        Ok(ok(record_json(record, record.latest(), None), None))
    }

    fn update(&self, entity: &str, id: u64, body: &[u8], now: Instant) -> Result<SimResponse, ApiError> {
        let (fields, custom) = parse_write(entity, body)?;
        let mut store = self.store.lock().unwrap();
        match store.update(entity, id, fields, custom, now, now) {
            Ok(()) => {
                let record = store.entity(entity).and_then(|e| e.get(id)).expect("just written");
                Ok(ok(record_json(record, record.latest(), None), None))
            }
            Err(WriteError::NotFound) => Err(not_found(entity)),
        }
    }

    fn delete(&self, entity: &str, id: u64, now: Instant) -> Result<SimResponse, ApiError> {
        match self.store.lock().unwrap().delete(entity, id, None, now) {
            Ok(()) => Ok(ok(json!({"id": id}), None)),
            Err(WriteError::NotFound) => Err(not_found(entity)),
        }
    }
}

fn not_found(entity: &str) -> ApiError {
    let name = singular(entity);
    let mut chars = name.chars();
    let title = chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>() + chars.as_str());
    ApiError::not_found(format!("{} not found", title.unwrap_or_default()))
}

/// A write's standard fields and custom fields.
type WriteFields = (Map<String, Value>, Map<String, Value>);

/// A write body split into standard fields and custom fields; 400 for anything else.
fn parse_write(entity: &str, body: &[u8]) -> Result<WriteFields, ApiError> {
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
        return Err(ApiError::bad_request("The request body must be a JSON object"));
    };
    let custom = match map.remove("custom_fields") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(custom)) => custom,
        Some(_) => return Err(ApiError::bad_request("custom_fields must be an object")),
    };
    let allowed = writable_fields(entity);
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("Unknown field: {unknown}")));
    }
    Ok((map, custom))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_recognised_by_method_and_path() {
        let (get, post, patch, delete) = (Method::GET, Method::POST, Method::PATCH, Method::DELETE);
        assert_eq!(Route::parse(&get, "/api/v2/persons"), Route::List("persons".into()));
        assert_eq!(Route::parse(&post, "/api/v2/deals"), Route::Create("deals".into()));
        assert_eq!(
            Route::parse(&get, "/api/v2/organizations/search"),
            Route::Search("organizations".into())
        );
        assert_eq!(Route::parse(&get, "/api/v2/persons/7"), Route::Get("persons".into(), 7));
        assert_eq!(
            Route::parse(&patch, "/api/v2/persons/7"),
            Route::Update("persons".into(), 7)
        );
        assert_eq!(
            Route::parse(&delete, "/api/v2/deals/3"),
            Route::Delete("deals".into(), 3)
        );
        assert_eq!(Route::parse(&get, "/api/v2/leads"), Route::Unknown);
        assert_eq!(Route::parse(&get, "/v1/persons"), Route::Unknown);
        assert_eq!(Route::parse(&patch, "/api/v2/persons/x"), Route::Unknown);
    }

    #[test]
    fn write_bodies_refuse_unknown_fields() {
        assert!(parse_write("persons", br#"{"name":"A","custom_fields":{"k":"v"}}"#).is_ok());
        assert!(parse_write("persons", br#"{"title":"A"}"#).is_err());
        assert!(parse_write("deals", b"[]").is_err());
    }
}
