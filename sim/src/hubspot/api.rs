//! The HTTP front of the fake HubSpot. Every request is logged with its final status and passes, in order, the
//! rate-limit window(s), the injected faults and the bearer-token check before it reaches its endpoint.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use rand::seq::IndexedRandom;
use serde_json::json;

use super::Shared;
use super::endpoints::{self, Query};
use super::search::{self, SearchQuery};
use super::wire::{ApiError, correlation_id, error_response};
use crate::faults::Fault;
use crate::oauth::AccessCheck;
use crate::request_log::RequestRecord;
use crate::server::{Handler, SimRequest, SimResponse};
use crate::window::{Admission, SlidingWindow};

/// What HubSpot's free tier advertises, for 429s injected as faults when no window is configured.
const ADVERTISED_LIMIT: (u32, Duration) = (100, Duration::from_secs(10));

/// The endpoint a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Search(String),
    List(String),
    Get(String, String),
    BatchRead(String),
    BatchUpsert(String),
    BatchArchive(String),
    OAuthToken,
    Unknown,
}

impl Route {
    pub fn parse(method: &Method, path: &str) -> Self {
        if method == Method::POST && path == "/oauth/v1/token" {
            return Self::OAuthToken;
        }
        let Some(rest) = path.strip_prefix("/crm/v3/objects/") else {
            return Self::Unknown;
        };
        let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        let object = |name: &str| object_type(name).to_string();
        match (method, segments.as_slice()) {
            (_, [""] | ["", ..]) => Self::Unknown,
            (&Method::POST, [name, "search"]) => Self::Search(object(name)),
            (&Method::GET, [name]) => Self::List(object(name)),
            (&Method::POST, [name, "batch", "read"]) => Self::BatchRead(object(name)),
            (&Method::POST, [name, "batch", "upsert"]) => Self::BatchUpsert(object(name)),
            (&Method::POST, [name, "batch", "archive"]) => Self::BatchArchive(object(name)),
            (&Method::GET, [name, id]) => Self::Get(object(name), id.to_string()),
            _ => Self::Unknown,
        }
    }

    /// The name the request log records.
    pub fn operation(&self) -> &'static str {
        match self {
            Self::Search(_) => "search",
            Self::List(_) => "list",
            Self::Get(..) => "get",
            Self::BatchRead(_) => "batch_read",
            Self::BatchUpsert(_) => "batch_upsert",
            Self::BatchArchive(_) => "batch_archive",
            Self::OAuthToken => "oauth_token",
            Self::Unknown => "unknown",
        }
    }
}

/// HubSpot also accepts the object type ids of the standard objects.
fn object_type(name: &str) -> &str {
    match name {
        "0-1" => "contacts",
        "0-2" => "companies",
        "0-3" => "deals",
        "0-5" => "tickets",
        other => other,
    }
}

/// The `X-HubSpot-RateLimit-*` values of one answer.
struct LimitHeaders {
    max: u32,
    remaining: u32,
    interval: Duration,
}

impl LimitHeaders {
    fn apply(&self, response: SimResponse) -> SimResponse {
        response
            .with_header("x-hubspot-ratelimit-max", self.max.to_string())
            .with_header("x-hubspot-ratelimit-remaining", self.remaining.to_string())
            .with_header(
                "x-hubspot-ratelimit-interval-milliseconds",
                self.interval.as_millis().to_string(),
            )
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
            // A reset connection answers nothing.
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
            Fault::ServerError => server_error(),
            Fault::RateLimited(retry_after) => {
                let (max, interval) = limits.as_ref().map_or(ADVERTISED_LIMIT, |l| (l.max, l.interval));
                let limits = LimitHeaders {
                    max,
                    remaining: 0,
                    interval,
                };
                self.rate_limited(Refused { limits, retry_after })
            }
            _ if *route == Route::OAuthToken => match &self.oauth {
                Some(issuer) => issuer.handle(request),
                None => self.dispatch(request, &Route::Unknown),
            },
            _ => match self.refusal(request) {
                None => self.dispatch(request, route),
                Some(response) => response,
            },
        };
        match fault {
            Fault::Slow(delay) => response.delay = Some(delay),
            Fault::TruncatedJson if response.status.is_success() => response.truncate = true,
            Fault::ConnectionReset => response.reset = true,
            _ => {}
        }
        match limits {
            Some(limits) if response.status != StatusCode::TOO_MANY_REQUESTS => limits.apply(response),
            _ => response,
        }
    }

    /// HubSpot's 401 for a request without the private-app token or a live OAuth access token; None when the
    /// request carries one of them.
    fn refusal(&self, request: &SimRequest) -> Option<SimResponse> {
        let Some((scheme, token)) = request.header("authorization").and_then(|h| h.split_once(' ')) else {
            return Some(unauthorized());
        };
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Some(unauthorized());
        }
        if token == *self.access_token.lock().unwrap() {
            return None;
        }
        match self.oauth.as_ref().map(|issuer| issuer.check(token)) {
            Some(AccessCheck::Valid) => None,
            Some(AccessCheck::Expired) => Some(error_response(
                StatusCode::UNAUTHORIZED,
                "The OAuth token used to make this call expired.",
                Some("EXPIRED_AUTHENTICATION"),
            )),
            _ => Some(unauthorized()),
        }
    }

    fn dispatch(&self, request: &SimRequest, route: &Route) -> SimResponse {
        let now = Instant::now();
        let mut store = self.store.lock().unwrap();
        let answer = match route {
            Route::Search(object) => SearchQuery::parse(object, &request.body)
                .and_then(|query| search::run(&mut store, object, &query, self.search_cap, now))
                .map(|body| (StatusCode::OK, Some(body))),
            Route::List(object) => endpoints::list(&store, object, &Query::parse(request.uri.query())),
            Route::Get(object, id) => endpoints::get(&mut store, object, id, &Query::parse(request.uri.query())),
            Route::BatchRead(object) => endpoints::batch_read(&mut store, object, &request.body),
            Route::BatchUpsert(object) => endpoints::batch_upsert(&mut store, object, &request.body, now),
            Route::BatchArchive(object) => endpoints::batch_archive(&mut store, object, &request.body, now),
            Route::OAuthToken | Route::Unknown => Err(ApiError {
                status: StatusCode::NOT_FOUND,
                category: "OBJECT_NOT_FOUND",
                message: format!("No endpoint {} {}", request.method, request.path()),
            }),
        };
        match answer {
            Ok((status, Some(body))) => SimResponse::json(status, &body),
            Ok((status, None)) => SimResponse::new(status, ""),
            Err(error) => error.response(),
        }
    }

    /// HubSpot's 429 for a full window.
    fn rate_limited(&self, refused: Refused) -> SimResponse {
        let Refused { limits, retry_after } = refused;
        limits
            .apply(rate_limit_body())
            .with_retry_after(self.retry_after_header, retry_after)
    }
}

/// A request the window turned away.
struct Refused {
    limits: LimitHeaders,
    retry_after: Duration,
}

/// Runs one request through an optional window: the headers to send if admitted, or why it was refused.
fn admit(window: Option<&std::sync::Mutex<SlidingWindow>>, at: Instant) -> Result<Option<LimitHeaders>, Refused> {
    let Some(window) = window else {
        return Ok(None);
    };
    let mut window = window.lock().unwrap();
    let (max, interval) = (window.limit(), window.window());
    match window.admit(at) {
        Admission::Admitted { remaining } => Ok(Some(LimitHeaders {
            max,
            remaining,
            interval,
        })),
        Admission::Refused { retry_after } => Err(Refused {
            limits: LimitHeaders {
                max,
                remaining: 0,
                interval,
            },
            retry_after,
        }),
    }
}

fn rate_limit_body() -> SimResponse {
    SimResponse::json(
        StatusCode::TOO_MANY_REQUESTS,
        &json!({
            "status": "error",
            "message": "You have reached your secondly limit.",
            "errorType": "RATE_LIMIT",
            "policyName": "SECONDLY",
            "correlationId": correlation_id(),
        }),
    )
}

trait RetryAfter {
    fn with_retry_after(self, enabled: bool, wait: Duration) -> Self;
}

impl RetryAfter for SimResponse {
    /// `Retry-After` in whole seconds, rounded up (and at least 1, so a client never retries in a busy loop).
    fn with_retry_after(self, enabled: bool, wait: Duration) -> Self {
        if !enabled {
            return self;
        }
        let seconds = wait.as_millis().div_ceil(1000).max(1);
        self.with_header("retry-after", seconds.to_string())
    }
}

fn server_error() -> SimResponse {
    let (status, message) = *[
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        (StatusCode::BAD_GATEWAY, "Bad Gateway"),
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
        (StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout"),
    ]
    .choose(&mut rand::rng())
    .expect("the list is not empty");
    error_response(status, message, None)
}

fn unauthorized() -> SimResponse {
    error_response(
        StatusCode::UNAUTHORIZED,
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more \
         details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        Some("INVALID_AUTHENTICATION"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_recognised_by_method_and_path() {
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(
            Route::parse(&post, "/crm/v3/objects/contacts/search"),
            Route::Search("contacts".into())
        );
        assert_eq!(
            Route::parse(&post, "/crm/v3/objects/0-2/search"),
            Route::Search("companies".into())
        );
        assert_eq!(Route::parse(&get, "/crm/v3/objects/deals"), Route::List("deals".into()));
        assert_eq!(
            Route::parse(&get, "/crm/v3/objects/deals/"),
            Route::List("deals".into())
        );
        assert_eq!(
            Route::parse(&get, "/crm/v3/objects/deals/7"),
            Route::Get("deals".into(), "7".into())
        );
        assert_eq!(
            Route::parse(&post, "/crm/v3/objects/contacts/batch/upsert"),
            Route::BatchUpsert("contacts".into())
        );
        assert_eq!(
            Route::parse(&get, "/crm/v3/objects/contacts/search"),
            Route::Get("contacts".into(), "search".into())
        );
        assert_eq!(Route::parse(&post, "/crm/v3/objects/"), Route::Unknown);
        assert_eq!(Route::parse(&get, "/crm/v4/objects/contacts"), Route::Unknown);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let response = rate_limit_body().with_retry_after(true, Duration::from_millis(1200));
        assert_eq!(response.headers["retry-after"], "2");
        let response = rate_limit_body().with_retry_after(true, Duration::from_millis(10));
        assert_eq!(response.headers["retry-after"], "1");
        let response = rate_limit_body().with_retry_after(false, Duration::from_millis(10));
        assert!(!response.headers.contains_key("retry-after"));
    }
}
