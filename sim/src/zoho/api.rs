//! The HTTP front of the fake Zoho. The accounts server's token endpoint answers first; every API request is
//! logged with its final status and passes, in order, the org's concurrency limit, its API credit window, the
//! injected faults and the `Zoho-oauthtoken` check before it reaches its endpoint.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use http::{Method, StatusCode};
use rand::seq::IndexedRandom;
use serde_json::{Value, json};

use super::coql;
use super::credits::Charge;
use super::wire::error;
use super::{Change, Shared};
use crate::faults::Fault;
use crate::oauth::AccessCheck;
use crate::request_log::RequestRecord;
use crate::server::{Handler, SimRequest, SimResponse};

/// The path of the accounts server's token endpoint.
pub const TOKEN_PATH: &str = "/oauth/v2/token";

/// The endpoint a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Token,
    Coql,
    Watch,
    /// `GET /crm/v8/{module}` (a listing, or a read of `?ids=`).
    List(String),
    Upsert(String),
    Deleted(String),
    Unknown,
}

impl Route {
    pub fn parse(method: &Method, path: &str) -> Self {
        if path == TOKEN_PATH && method == Method::POST {
            return Self::Token;
        }
        let Some(rest) = path.strip_prefix("/crm/v8/") else {
            return Self::Unknown;
        };
        let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::POST, ["coql"]) => Self::Coql,
            (&Method::POST, ["actions", "watch"]) => Self::Watch,
            (&Method::GET, [module]) if !module.is_empty() => Self::List(module.to_string()),
            (&Method::POST, [module, "upsert"]) => Self::Upsert(module.to_string()),
            (&Method::GET, [module, "deleted"]) => Self::Deleted(module.to_string()),
            _ => Self::Unknown,
        }
    }

    /// The name the request log records.
    pub fn operation(&self, request: &SimRequest) -> &'static str {
        match self {
            Self::Token => "oauth_token",
            Self::Coql => "coql",
            Self::Watch => "watch",
            Self::List(_) if request.query_param("ids").is_some() => "get_ids",
            Self::List(_) => "list",
            Self::Upsert(_) => "upsert",
            Self::Deleted(_) => "deleted",
            Self::Unknown => "unknown",
        }
    }
}

/// A request's hold on one of the org's concurrent-request slots, given back on drop.
struct Slot<'a>(&'a std::sync::atomic::AtomicU32);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a request was charged, for the quota headers of its answer.
struct Quota {
    limit: u32,
    remaining: u32,
    reset_in: Duration,
}

impl Quota {
    /// `X-RATELIMIT-LIMIT`, `-REMAINING` and `-RESET` (epoch milliseconds when the oldest charge leaves the
    /// window).
    fn apply(&self, response: SimResponse) -> SimResponse {
        response
            .with_header("x-ratelimit-limit", self.limit.to_string())
            .with_header("x-ratelimit-remaining", self.remaining.to_string())
            .with_header("x-ratelimit-reset", reset_header(self.reset_in))
    }
}

fn reset_header(wait: Duration) -> String {
    let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
    at.timestamp_millis().to_string()
}

impl Handler for Shared {
    async fn handle(&self, request: SimRequest) -> SimResponse {
        let route = Route::parse(&request.method, request.path());
        let response = match route {
            Route::Token => self.token(&request),
            _ => self.api(&request, &route).await,
        };
        self.log.push(RequestRecord {
            at: request.received_at,
            method: request.method.to_string(),
            path: request.path().to_string(),
            operation: route.operation(&request).to_string(),
            // A reset connection answers nothing.
            status: if response.reset { 0 } else { response.status.as_u16() },
        });
        response
    }
}

impl Shared {
    /// The accounts server: the token answer carries `api_domain`, the data centre's API host.
    fn token(&self, request: &SimRequest) -> SimResponse {
        let mut response = self.issuer.handle(request);
        if response.status == StatusCode::OK
            && let Ok(mut body) = serde_json::from_slice::<Value>(&response.body)
            && body.get("access_token").is_some()
        {
            body["api_domain"] = json!(self.base_url());
            response = SimResponse::json(StatusCode::OK, &body);
        }
        response
    }

    async fn api(&self, request: &SimRequest, route: &Route) -> SimResponse {
        let Some(_slot) = self.enter() else {
            self.concurrency_excess.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                "The number of concurrent requests has exceeded the limit of your edition.",
                json!({}),
            );
        };
        let quota = match self.charge(request, route) {
            Ok(quota) => quota,
            Err(spent) => return spent.apply(too_many_credits()),
        };
        if !self.latency.is_zero() {
            // The request holds its concurrency slot while the org works on it.
            tokio::time::sleep(self.latency).await;
        }
        let fault = self.faults.lock().unwrap().roll();
        let mut response = match fault {
            Fault::ServerError => server_error(),
            Fault::RateLimited(wait) => {
                // As if another client had spent the org's credits.
                let quota = Quota {
                    limit: quota.as_ref().map_or(5_000, |q| q.limit),
                    remaining: 0,
                    reset_in: wait,
                };
                return quota.apply(too_many_credits());
            }
            _ => match self.authorized(request) {
                Err((code, message)) => error(StatusCode::UNAUTHORIZED, code, message, json!({})),
                Ok(()) => {
                    let (response, changes) = self.dispatch(request, route);
                    self.notify(changes);
                    response
                }
            },
        };
        match fault {
            Fault::Slow(delay) => response.delay = Some(delay),
            Fault::TruncatedJson if response.status.is_success() => response.truncate = true,
            Fault::ConnectionReset => response.reset = true,
            _ => {}
        }
        match quota {
            Some(quota) => quota.apply(response),
            None => response,
        }
    }

    /// Takes a concurrency slot, or None when the org already has its limit in flight.
    fn enter(&self) -> Option<Slot<'_>> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(&self.in_flight);
        if self.max_concurrent.is_some_and(|max| before >= max) {
            return None;
        }
        self.max_in_flight.fetch_max(before + 1, Ordering::AcqRel);
        Some(slot)
    }

    /// Charges the request's credits; the spent window's headers when it has too few left.
    fn charge(&self, request: &SimRequest, route: &Route) -> Result<Option<Quota>, Quota> {
        let Some(window) = &self.credits else {
            return Ok(None);
        };
        let cost = match route {
            Route::Coql => serde_json::from_slice::<Value>(&request.body)
                .ok()
                .and_then(|b| b.get("select_query").and_then(Value::as_str).map(coql::parse))
                .and_then(Result::ok)
                .map_or(1, |q| q.credits()),
            _ => 1,
        };
        let mut window = window.lock().unwrap();
        let limit = window.limit();
        match window.charge(request.received_at.max(Instant::now()), cost) {
            Charge::Charged { remaining, reset_in } => Ok(Some(Quota {
                limit,
                remaining,
                reset_in,
            })),
            Charge::Refused { retry_after } => Err(Quota {
                limit,
                remaining: 0,
                reset_in: retry_after,
            }),
        }
    }

    /// Checks `Authorization: Zoho-oauthtoken <token>` (not `Bearer`); the 401's code and message if it fails.
    fn authorized(&self, request: &SimRequest) -> Result<(), (&'static str, &'static str)> {
        let header = request.header("authorization").unwrap_or("");
        let Some(token) = header.strip_prefix("Zoho-oauthtoken ") else {
            return Err(("AUTHENTICATION_FAILURE", "Authentication failed"));
        };
        match self.issuer.check(token.trim()) {
            AccessCheck::Valid => Ok(()),
            AccessCheck::Expired | AccessCheck::Unknown => Err(("INVALID_TOKEN", "invalid oauth token")),
        }
    }

    fn dispatch(&self, request: &SimRequest, route: &Route) -> (SimResponse, Vec<Change>) {
        match route {
            Route::Coql => (self.coql(request), Vec::new()),
            Route::Watch => (self.watch(request), Vec::new()),
            Route::List(module) => (self.list(module, request), Vec::new()),
            Route::Upsert(module) => self.upsert(module, request),
            Route::Deleted(module) => (self.deleted(module, request), Vec::new()),
            Route::Token | Route::Unknown => (
                error(
                    StatusCode::NOT_FOUND,
                    "INVALID_URL_PATTERN",
                    "Please check if the URL trying to access is a correct one",
                    json!({}),
                ),
                Vec::new(),
            ),
        }
    }
}

/// The 429 of an org whose API credits are spent.
fn too_many_credits() -> SimResponse {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS",
        "You have exceeded the API credits limit of your organization. Please try again after some time.",
        json!({}),
    )
}

fn server_error() -> SimResponse {
    let (status, html) = *[
        (StatusCode::INTERNAL_SERVER_ERROR, false),
        (StatusCode::BAD_GATEWAY, true),
        (StatusCode::SERVICE_UNAVAILABLE, true),
        (StatusCode::GATEWAY_TIMEOUT, true),
    ]
    .choose(&mut rand::rng())
    .expect("the list is not empty");
    if html {
        // The load balancer in front of Zoho answers in HTML.
        SimResponse::new(status, format!("<html><body><h1>{status}</h1></body></html>"))
            .with_header("content-type", "text/html")
    } else {
        error(status, "INTERNAL_ERROR", "Internal Server Error", json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_recognised_by_method_and_path() {
        let (get, post) = (Method::GET, Method::POST);
        assert_eq!(Route::parse(&post, "/oauth/v2/token"), Route::Token);
        assert_eq!(Route::parse(&post, "/crm/v8/coql"), Route::Coql);
        assert_eq!(Route::parse(&post, "/crm/v8/actions/watch"), Route::Watch);
        assert_eq!(Route::parse(&get, "/crm/v8/Leads"), Route::List("Leads".into()));
        assert_eq!(
            Route::parse(&post, "/crm/v8/Leads/upsert"),
            Route::Upsert("Leads".into())
        );
        assert_eq!(
            Route::parse(&get, "/crm/v8/Deals/deleted"),
            Route::Deleted("Deals".into())
        );
        assert_eq!(Route::parse(&get, "/crm/v2/Leads"), Route::Unknown);
        assert_eq!(Route::parse(&post, "/crm/v8/Leads"), Route::Unknown);
    }
}
