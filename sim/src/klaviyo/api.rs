//! The HTTP front of the fake Klaviyo. Every request is logged with its final status and passes, in order, its
//! endpoint's rate-limit windows, the injected faults, the `Authorization` check and the `revision` check before it
//! reaches the endpoint. Answers that were not throttled carry `RateLimit-Limit/-Remaining/-Reset` for the
//! endpoint's steady window; a 429 carries only `Retry-After`, as Klaviyo's do.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use rand::seq::IndexedRandom;
use serde_json::json;

use super::Shared;
use super::profiles::{self, ListQuery};
use super::store::now_s;
use super::wire::{ApiError, error_response};
use crate::faults::Fault;
use crate::oauth::AccessCheck;
use crate::request_log::RequestRecord;
use crate::server::{Handler, SimRequest, SimResponse};
use crate::window::{Admission, SlidingWindow};

/// The endpoint a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    ListProfiles,
    GetProfile(String),
    ImportProfile,
    DeletionJob,
    Token,
    Unknown,
}

impl Route {
    pub fn parse(method: &Method, path: &str) -> Self {
        let path = path.trim_end_matches('/');
        match (method, path) {
            (&Method::GET, "/api/profiles") => Self::ListProfiles,
            (&Method::POST, "/api/profile-import") => Self::ImportProfile,
            (&Method::POST, "/api/data-privacy-deletion-jobs") => Self::DeletionJob,
            (&Method::POST, "/oauth/token") => Self::Token,
            (&Method::GET, p) => match p.strip_prefix("/api/profiles/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Self::GetProfile(id.to_string()),
                _ => Self::Unknown,
            },
            _ => Self::Unknown,
        }
    }

    /// The name the request log records.
    pub fn operation(&self) -> &'static str {
        match self {
            Self::ListProfiles => "get_profiles",
            Self::GetProfile(_) => "get_profile",
            Self::ImportProfile => "profile_import",
            Self::DeletionJob => "data_privacy_deletion",
            Self::Token => "oauth_token",
            Self::Unknown => "unknown",
        }
    }

    /// The rate-limit bucket: Klaviyo limits each endpoint separately.
    pub fn bucket(&self) -> Option<usize> {
        match self {
            Self::ListProfiles | Self::GetProfile(_) => Some(0),
            Self::ImportProfile => Some(1),
            Self::DeletionJob => Some(2),
            Self::Token | Self::Unknown => None,
        }
    }
}

/// How many rate-limit buckets [`Route::bucket`] names.
pub(crate) const BUCKETS: usize = 3;

/// One endpoint's windows (burst and steady), every one of which must admit a request.
#[derive(Debug)]
pub(crate) struct Bucket {
    windows: Vec<SlidingWindow>,
    /// When the admitted requests of the longest (steady) window arrived, for `RateLimit-Reset`.
    steady: VecDeque<Instant>,
}

/// What the `RateLimit-*` headers of an admitted request say.
struct Quota {
    limit: u32,
    remaining: u32,
    reset: Duration,
}

impl Bucket {
    pub fn new(limits: &[(u32, Duration)]) -> Self {
        let mut windows: Vec<SlidingWindow> = limits.iter().map(|(n, per)| SlidingWindow::new(*n, *per)).collect();
        // The longest window last: its numbers go in the headers.
        windows.sort_by_key(|w| w.window());
        Self {
            windows,
            steady: VecDeque::new(),
        }
    }

    pub fn excess(&self) -> u64 {
        self.windows.iter().map(SlidingWindow::excess).sum()
    }

    fn admit(&mut self, at: Instant) -> Result<Option<Quota>, Duration> {
        let mut quota = None;
        for window in &mut self.windows {
            match window.admit(at) {
                Admission::Admitted { remaining } => {
                    quota = Some((window.limit(), remaining, window.window()));
                }
                Admission::Refused { retry_after } => return Err(retry_after),
            }
        }
        let Some((limit, remaining, length)) = quota else {
            return Ok(None);
        };
        while self.steady.front().is_some_and(|t| at.duration_since(*t) >= length) {
            self.steady.pop_front();
        }
        self.steady.push_back(at);
        let oldest = *self.steady.front().expect("just pushed");
        Ok(Some(Quota {
            limit,
            remaining,
            reset: length.saturating_sub(at.duration_since(oldest)),
        }))
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
        if *route == Route::Token {
            return match &self.oauth {
                Some(issuer) => issuer.handle(request),
                None => ApiError::not_found("OAuth is not enabled for this account.").response(),
            };
        }
        let quota = match route.bucket().and_then(|b| self.buckets.get(b)) {
            Some(bucket) => match bucket.lock().unwrap().admit(request.received_at) {
                Ok(quota) => quota,
                Err(retry_after) => return throttled(retry_after),
            },
            None => None,
        };
        let fault = self.faults.lock().unwrap().roll();
        let mut response = match fault {
            Fault::ServerError => server_error(),
            Fault::RateLimited(retry_after) => return throttled(retry_after),
            _ if !self.authorized(request) => unauthorized(),
            _ => match revision_problem(request) {
                Some(problem) => problem.response(),
                None => self.dispatch(request, route),
            },
        };
        match fault {
            Fault::Slow(delay) => response.delay = Some(delay),
            Fault::TruncatedJson if response.status.is_success() => response.truncate = true,
            Fault::ConnectionReset => response.reset = true,
            _ => {}
        }
        if let Some(q) = quota {
            response = response
                .with_header("ratelimit-limit", q.limit.to_string())
                .with_header("ratelimit-remaining", q.remaining.to_string())
                .with_header("ratelimit-reset", q.reset.as_secs().to_string());
        }
        response
    }

    /// `Authorization: Klaviyo-API-Key <private key>`, or `Bearer <access token>` when OAuth is enabled.
    fn authorized(&self, request: &SimRequest) -> bool {
        let presented = request.header("authorization").and_then(|h| h.split_once(' '));
        match presented {
            Some(("Klaviyo-API-Key", key)) => key.trim() == *self.api_key.lock().unwrap(),
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => self
                .oauth
                .as_ref()
                .is_some_and(|issuer| issuer.check(token.trim()) == AccessCheck::Valid),
            _ => false,
        }
    }

    fn dispatch(&self, request: &SimRequest, route: &Route) -> SimResponse {
        let now = Instant::now();
        let base = self.base_url.get().map(String::as_str).unwrap_or_default();
        let answer = match route {
            Route::ListProfiles => ListQuery::parse(request).map(|query| {
                (
                    StatusCode::OK,
                    Some(profiles::list(&self.store.lock().unwrap(), base, &query, now)),
                )
            }),
            Route::GetProfile(id) => {
                profiles::get(&self.store.lock().unwrap(), base, id, now).map(|v| (StatusCode::OK, Some(v)))
            }
            Route::ImportProfile => {
                profiles::import(&mut self.store.lock().unwrap(), base, &request.body, now_s(), now)
                    .map(|(status, v)| (status, Some(v)))
            }
            Route::DeletionJob => profiles::deletion_job(&mut self.store.lock().unwrap(), &request.body, now_s(), now)
                .map(|()| (StatusCode::ACCEPTED, None)),
            Route::Token | Route::Unknown => Err(ApiError::not_found(format!(
                "No endpoint {} {}",
                request.method,
                request.path()
            ))),
        };
        match answer {
            Ok((status, Some(body))) => {
                SimResponse::json(status, &body).with_header("content-type", "application/vnd.api+json")
            }
            Ok((status, None)) => SimResponse::new(status, ""),
            Err(error) => error.response(),
        }
    }
}

/// Every request must name an API revision (`revision: 2024-10-15`, or a `.pre` beta).
fn revision_problem(request: &SimRequest) -> Option<ApiError> {
    let problem = |detail: &str| Some(ApiError::invalid(detail, json!({"header": "revision"})));
    let Some(revision) = request.header("revision") else {
        return problem("The revision header is required.");
    };
    let date = revision.strip_suffix(".pre").unwrap_or(revision);
    if chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_err() {
        return problem("Invalid revision header: expected YYYY-MM-DD.");
    }
    None
}

/// Klaviyo's 429: `Retry-After` in whole seconds (rounded up, at least 1) and no `RateLimit-*` headers.
fn throttled(retry_after: Duration) -> SimResponse {
    let seconds = retry_after.as_millis().div_ceil(1000).max(1);
    let unit = if seconds == 1 { "second" } else { "seconds" };
    error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "throttled",
        "Request was throttled.",
        &format!("Request was throttled. Expected available in {seconds} {unit}."),
        json!({}),
        json!({}),
    )
    .with_header("retry-after", seconds.to_string())
}

fn unauthorized() -> SimResponse {
    error_response(
        StatusCode::UNAUTHORIZED,
        "not_authenticated",
        "Authentication credentials were not provided.",
        "Missing or invalid private key.",
        json!({"pointer": "/data/"}),
        json!({}),
    )
}

fn server_error() -> SimResponse {
    let (status, detail) = *[
        (StatusCode::INTERNAL_SERVER_ERROR, "A server error occurred."),
        (StatusCode::BAD_GATEWAY, "Bad gateway."),
        (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable."),
        (StatusCode::GATEWAY_TIMEOUT, "Gateway timeout."),
    ]
    .choose(&mut rand::rng())
    .expect("the list is not empty");
    error_response(
        status,
        "error",
        "A server error occurred.",
        detail,
        json!({}),
        json!({}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_recognised_with_or_without_the_trailing_slash() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(Route::parse(&get, "/api/profiles/"), Route::ListProfiles);
        assert_eq!(Route::parse(&get, "/api/profiles"), Route::ListProfiles);
        assert_eq!(
            Route::parse(&get, "/api/profiles/01H/"),
            Route::GetProfile("01H".into())
        );
        assert_eq!(Route::parse(&post, "/api/profile-import/"), Route::ImportProfile);
        assert_eq!(Route::parse(&post, "/api/profiles/"), Route::Unknown);
        assert_eq!(
            Route::parse(&get, "/api/profiles/01H/relationships/lists"),
            Route::Unknown
        );
    }

    #[test]
    fn both_windows_must_admit_and_headers_describe_the_steady_one() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(&[(3, Duration::from_secs(60)), (2, Duration::from_secs(1))]);
        let q = bucket.admit(t0).unwrap().unwrap();
        assert_eq!((q.limit, q.remaining), (3, 2));
        assert_eq!(q.reset, Duration::from_secs(60));
        bucket.admit(t0).unwrap();
        // The burst window (2/s) is full.
        assert_eq!(bucket.admit(t0).err(), Some(Duration::from_secs(1)));
        // A second later the burst window has room, the steady one takes its third.
        let q = bucket.admit(t0 + Duration::from_secs(1)).unwrap().unwrap();
        assert_eq!(q.remaining, 0);
        assert_eq!(q.reset, Duration::from_secs(59));
        assert!(
            bucket.admit(t0 + Duration::from_secs(2)).is_err(),
            "the steady window is full"
        );
        assert_eq!(bucket.excess(), 2);
    }

    #[test]
    fn a_throttled_answer_names_its_wait_in_header_and_detail() {
        let r = throttled(Duration::from_millis(1200));
        assert_eq!(r.headers["retry-after"], "2");
        assert!(!r.headers.contains_key("ratelimit-remaining"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["errors"][0]["code"], "throttled");
        assert_eq!(
            body["errors"][0]["detail"],
            "Request was throttled. Expected available in 2 seconds."
        );
    }
}
