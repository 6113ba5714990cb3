//! The HTTP front of the fake org. The token endpoint answers first (it is not an API call); every API request
//! is logged with its final status and passes, in order, the org's API allocation, the injected faults and the
//! session check before it reaches its resource. Every API answer carries `Sforce-Limit-Info`.

use std::time::Instant;

use http::{Method, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};

use super::Shared;
use super::soql;
use super::store::{SYSTEM_FIELDS, UpsertError};
use super::wire::{self, format_time, parse_time};
use crate::faults::Fault;
use crate::oauth::AccessCheck;
use crate::request_log::RequestRecord;
use crate::server::{Handler, SimRequest, SimResponse};
use crate::window::Admission;

/// The smallest and largest `batchSize` a query accepts; the default is the largest.
const BATCH_RANGE: (usize, usize) = (200, 2000);

/// The first API version whose upsert answers an update with 200 and a body rather than 204.
const UPDATE_BODY_SINCE: f64 = 46.0;

/// Longest window getDeleted accepts: 30 days.
const MAX_REPLICATION_SPAN: chrono::Duration = chrono::Duration::days(30);

/// The resource a request is for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    Token,
    Query(String),
    QueryMore(String, String, usize),
    Deleted(String, String),
    Upsert(String, String, String, String),
    GetByExternalId(String, String, String, String),
    Retrieve(String, String, String),
    Limits(String),
    Unknown,
}

impl Route {
    pub fn parse(method: &Method, path: &str) -> Self {
        if path.trim_end_matches('/') == "/services/oauth2/token" {
            return if method == Method::POST {
                Self::Token
            } else {
                Self::Unknown
            };
        }
        let Some(rest) = path.strip_prefix("/services/data/") else {
            return Self::Unknown;
        };
        let segments: Vec<String> = rest
            .trim_end_matches('/')
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let Some((version, rest)) = segments.split_first() else {
            return Self::Unknown;
        };
        if api_version(version).is_none() {
            return Self::Unknown;
        }
        let v = version.clone();
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        match (method, rest.as_slice()) {
            (&Method::GET, ["query"]) => Self::Query(v),
            (&Method::GET, ["query", locator]) => match locator.rsplit_once('-') {
                Some((l, pos)) => match pos.parse() {
                    Ok(pos) => Self::QueryMore(v, l.to_string(), pos),
                    Err(_) => Self::QueryMore(v, locator.to_string(), usize::MAX),
                },
                None => Self::QueryMore(v, locator.to_string(), usize::MAX),
            },
            (&Method::GET, ["limits"]) => Self::Limits(v),
            (&Method::GET, ["sobjects", object, "deleted"]) => Self::Deleted(v, object.to_string()),
            (&Method::PATCH, ["sobjects", object, field, value]) => {
                Self::Upsert(v, object.to_string(), field.to_string(), value.to_string())
            }
            (&Method::GET, ["sobjects", object, field, value]) => {
                Self::GetByExternalId(v, object.to_string(), field.to_string(), value.to_string())
            }
            (&Method::GET, ["sobjects", object, id]) => Self::Retrieve(v, object.to_string(), id.to_string()),
            _ => Self::Unknown,
        }
    }

    /// The name the request log records.
    pub fn operation(&self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Query(_) => "query",
            Self::QueryMore(..) => "query_more",
            Self::Deleted(..) => "get_deleted",
            Self::Upsert(..) => "upsert",
            Self::GetByExternalId(..) => "get_by_external_id",
            Self::Retrieve(..) => "retrieve",
            Self::Limits(_) => "limits",
            Self::Unknown => "unknown",
        }
    }
}

/// `v62.0` → 62.0.
fn api_version(segment: &str) -> Option<f64> {
    let number = segment.strip_prefix('v')?;
    let (major, minor) = number.split_once('.')?;
    if major.is_empty() || minor.is_empty() || !major.bytes().chain(minor.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

impl Handler for Shared {
    async fn handle(&self, request: SimRequest) -> SimResponse {
        let route = Route::parse(&request.method, request.path());
        let response = if route == Route::Token {
            // The token endpoint is the login host's, not the org's API: no allocation, no injected faults
            // (a lost answer to a rotating refresh would end the chain, which no client could prevent).
            self.token(&request)
        } else {
            self.api(&request, &route)
        };
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
    /// The OAuth token endpoint, with Salesforce's `instance_url`, `id`, `issued_at` and `signature`.
    fn token(&self, request: &SimRequest) -> SimResponse {
        let mut response = self.issuer.handle(request);
        if response.status != StatusCode::OK {
            return response;
        }
        let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&response.body) else {
            return response;
        };
        let instance = self.config.instance_url.clone().unwrap_or_else(|| {
            let host = request.header("host").unwrap_or("127.0.0.1");
            format!("http://{host}")
        });
        body.insert(
            "id".into(),
            json!(format!(
                "{instance}/id/{}/005Hu0000000001AAA",
                self.config.organization_id
            )),
        );
        body.insert("instance_url".into(), json!(instance));
        body.insert(
            "issued_at".into(),
            json!(chrono::Utc::now().timestamp_millis().to_string()),
        );
        body.insert("signature".into(), json!("c2ltdWxhdGVkLXNpZ25hdHVyZQ=="));
        body.insert("scope".into(), json!("api refresh_token"));
        response.body = serde_json::to_vec(&body).expect("JSON values serialise").into();
        response
    }

    fn api(&self, request: &SimRequest, route: &Route) -> SimResponse {
        let at = request.received_at;
        let admitted = matches!(self.usage.lock().unwrap().window.admit(at), Admission::Admitted { .. });
        if !admitted {
            return self.with_usage(
                wire::error(
                    StatusCode::FORBIDDEN,
                    "REQUEST_LIMIT_EXCEEDED",
                    "TotalRequests Limit exceeded.",
                ),
                at,
            );
        }
        let fault = self.faults.lock().unwrap().roll();
        let mut response = match fault {
            Fault::ServerError => server_error(),
            // Salesforce has no 429: a burst over the org's concurrent-request limit is this 403.
            Fault::RateLimited(_) => wire::error(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "ConcurrentPerOrgLongTxn Limit exceeded.",
            ),
            _ => match self.session(request) {
                Some(refusal) => refusal,
                None => self.dispatch(request, route),
            },
        };
        match fault {
            Fault::Slow(delay) => response.delay = Some(delay),
            Fault::TruncatedJson if response.status.is_success() => response.truncate = true,
            Fault::ConnectionReset => response.reset = true,
            _ => {}
        }
        self.with_usage(response, at)
    }

    /// `Sforce-Limit-Info: api-usage=N/M` on every API answer.
    fn with_usage(&self, response: SimResponse, at: Instant) -> SimResponse {
        let (used, limit) = self.usage_now(at);
        response.with_header("sforce-limit-info", format!("api-usage={used}/{limit}"))
    }

    /// None when the bearer token is a live session; otherwise Salesforce's 401.
    fn session(&self, request: &SimRequest) -> Option<SimResponse> {
        let token = request
            .header("authorization")
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
            .map(|(_, t)| t.trim());
        match token.map(|t| self.issuer.check(t)) {
            Some(AccessCheck::Valid) => None,
            _ => Some(wire::error(
                StatusCode::UNAUTHORIZED,
                "INVALID_SESSION_ID",
                "Session expired or invalid",
            )),
        }
    }

    fn dispatch(&self, request: &SimRequest, route: &Route) -> SimResponse {
        match route {
            Route::Query(v) => self.query(request, v),
            Route::QueryMore(v, locator, position) => self.query_more(request, v, locator, *position),
            Route::Deleted(_, object) => self.deleted(request, object),
            Route::Upsert(v, object, field, value) => self.upsert(request, v, object, field, value),
            Route::GetByExternalId(v, object, field, value) => self.get_by_external_id(v, object, field, value),
            Route::Retrieve(v, object, id) => self.retrieve(v, object, id),
            Route::Limits(_) => {
                let (used, limit) = self.usage_now(request.received_at);
                SimResponse::json(
                    StatusCode::OK,
                    &json!({"DailyApiRequests": {"Max": limit, "Remaining": limit.saturating_sub(used)}}),
                )
            }
            Route::Token | Route::Unknown => wire::error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "The requested resource does not exist",
            ),
        }
    }

    fn batch_size(request: &SimRequest) -> usize {
        request
            .header("sforce-query-options")
            .and_then(|h| {
                h.split(',')
                    .filter_map(|kv| kv.trim().split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("batchSize"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            })
            .unwrap_or(BATCH_RANGE.1)
            .clamp(BATCH_RANGE.0, BATCH_RANGE.1)
    }

    fn query(&self, request: &SimRequest, version: &str) -> SimResponse {
        let Some(q) = request.query_param("q") else {
            return wire::error(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", "A query string is required");
        };
        let query = match soql::parse(&q) {
            Ok(query) => query,
            Err(soql::SyntaxError(why)) => return wire::error(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", &why),
        };
        let rows = {
            let store = self.store.lock().unwrap();
            if !store.has_object(&query.object) {
                return wire::error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_TYPE",
                    &format!("sObject type '{}' is not supported.", query.object),
                );
            }
            let known = store.known_fields(&query.object, &self.config.external_id_field);
            let named = query
                .fields
                .iter()
                .map(String::as_str)
                .chain(query.filter.iter().flat_map(|f| f.fields()))
                .chain(query.order.iter().map(|(f, _)| f.as_str()));
            for field in named {
                if !known.iter().any(|k| k.eq_ignore_ascii_case(field)) {
                    return wire::error(
                        StatusCode::BAD_REQUEST,
                        "INVALID_FIELD",
                        &format!("No such column '{field}' on entity '{}'.", query.object),
                    );
                }
            }
            store.query(&query, version)
        };
        let batch = Self::batch_size(request);
        let total = rows.len();
        if total <= batch {
            return SimResponse::json(
                StatusCode::OK,
                &json!({"totalSize": total, "done": true, "records": rows}),
            );
        }
        let first: Vec<Value> = rows[..batch].to_vec();
        let locator = self.cursors.lock().unwrap().open(rows, request.received_at);
        SimResponse::json(
            StatusCode::OK,
            &json!({
                "totalSize": total,
                "done": false,
                "nextRecordsUrl": format!("/services/data/{version}/query/{locator}-{batch}"),
                "records": first,
            }),
        )
    }

    fn query_more(&self, request: &SimRequest, version: &str, locator: &str, position: usize) -> SimResponse {
        let size = Self::batch_size(request);
        let batch = self
            .cursors
            .lock()
            .unwrap()
            .batch(locator, position, size, request.received_at);
        let Some(batch) = batch else {
            return wire::error(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY_LOCATOR",
                "invalid query locator",
            );
        };
        let mut body = json!({"totalSize": batch.total, "done": batch.next.is_none(), "records": batch.rows});
        if let Some(next) = batch.next {
            body["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{locator}-{next}"));
        }
        SimResponse::json(StatusCode::OK, &body)
    }

    fn deleted(&self, request: &SimRequest, object: &str) -> SimResponse {
        let param = |name: &str| request.query_param(name).and_then(|s| parse_time(&s));
        let (Some(start), Some(end)) = (param("start"), param("end")) else {
            return wire::error(
                StatusCode::BAD_REQUEST,
                "MISSING_ARGUMENT",
                "start and end are required, as ISO 8601 date-times",
            );
        };
        let step = self.config.replication_step;
        let now = chrono::Utc::now();
        let (start, end) = (wire::floor_to(start, step), wire::floor_to(end, step));
        if end <= start {
            return wire::error(
                StatusCode::BAD_REQUEST,
                "INVALID_REPLICATION_DATE",
                "endDate must be after startDate, rounded down to the minute",
            );
        }
        if now - start > MAX_REPLICATION_SPAN {
            return wire::error(
                StatusCode::BAD_REQUEST,
                "INVALID_REPLICATION_DATE",
                "startDate cannot be more than 30 days ago",
            );
        }
        let store = self.store.lock().unwrap();
        if !store.has_object(object) {
            return wire::error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "The requested resource does not exist",
            );
        }
        let covered = end.min(wire::floor_to(now, step));
        let retention = chrono::Duration::from_std(self.config.delete_log_retention).unwrap_or(MAX_REPLICATION_SPAN);
        let earliest = wire::floor_to(
            store
                .purged_before()
                .map_or(now - retention, |p| p.max(now - retention)),
            step,
        );
        let records: Vec<Value> = store
            .deleted_between(object, start.max(earliest), covered)
            .into_iter()
            .map(|(id, at)| json!({"id": id, "deletedDate": format_time(at)}))
            .collect();
        SimResponse::json(
            StatusCode::OK,
            &json!({
                "deletedRecords": records,
                "earliestDateAvailable": format_time(earliest),
                "latestDateCovered": format_time(covered),
            }),
        )
    }

    fn check_external_field(&self, object: &str, field: &str) -> Option<SimResponse> {
        let store = self.store.lock().unwrap();
        if !store.has_object(object) {
            return Some(wire::error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "The requested resource does not exist",
            ));
        }
        (field != self.config.external_id_field).then(|| {
            wire::error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("Provided external ID field does not exist or is not accessible: {field}"),
            )
        })
    }

    fn upsert(&self, request: &SimRequest, version: &str, object: &str, field: &str, value: &str) -> SimResponse {
        if let Some(refusal) = self.check_external_field(object, field) {
            return refusal;
        }
        let fields: Map<String, Value> = match serde_json::from_slice(&request.body) {
            Ok(Value::Object(map)) => map,
            _ => {
                return wire::error(
                    StatusCode::BAD_REQUEST,
                    "JSON_PARSER_ERROR",
                    "The request body must be a JSON object of field values",
                );
            }
        };
        for name in fields.keys() {
            if SYSTEM_FIELDS.iter().any(|s| s.eq_ignore_ascii_case(name)) {
                return wire::error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    &format!(
                        "Unable to create/update fields: {name}. Please check the security settings of this field."
                    ),
                );
            }
            let custom_ok = !name.contains("__") || name.ends_with("__c");
            let ident_ok = name.starts_with(|c: char| c.is_ascii_alphabetic())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !custom_ok || !ident_ok {
                return wire::error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    &format!("No such column '{name}' on sobject of type {object}"),
                );
            }
            if name == field && fields[name].as_str() != Some(value) {
                return wire::error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    &format!("The {field} in the body does not match the one in the URL"),
                );
            }
        }
        let result = self
            .store
            .lock()
            .unwrap()
            .upsert(object, field, value, fields, Shared::now());
        match result {
            Ok((id, true)) => SimResponse::json(
                StatusCode::CREATED,
                &json!({"id": id, "success": true, "errors": [], "created": true}),
            ),
            Ok((id, false)) if api_version(version).unwrap_or(0.0) >= UPDATE_BODY_SINCE => SimResponse::json(
                StatusCode::OK,
                &json!({"id": id, "success": true, "errors": [], "created": false}),
            ),
            Ok((_, false)) => SimResponse::new(StatusCode::NO_CONTENT, ""),
            Err(UpsertError::Multiple(ids)) => SimResponse::json(
                StatusCode::MULTIPLE_CHOICES,
                &json!(
                    ids.iter()
                        .map(|id| format!("/services/data/{version}/sobjects/{object}/{id}"))
                        .collect::<Vec<_>>()
                ),
            ),
        }
    }

    fn get_by_external_id(&self, version: &str, object: &str, field: &str, value: &str) -> SimResponse {
        if let Some(refusal) = self.check_external_field(object, field) {
            return refusal;
        }
        let store = self.store.lock().unwrap();
        match store.find_by(object, field, value).as_slice() {
            [id] => match store.get(object, id) {
                Some(record) => SimResponse::json(StatusCode::OK, &Value::Object(record.render(version))),
                None => not_found(),
            },
            [] => not_found(),
            ids => SimResponse::json(
                StatusCode::MULTIPLE_CHOICES,
                &json!(
                    ids.iter()
                        .map(|id| format!("/services/data/{version}/sobjects/{object}/{id}"))
                        .collect::<Vec<_>>()
                ),
            ),
        }
    }

    fn retrieve(&self, version: &str, object: &str, id: &str) -> SimResponse {
        let store = self.store.lock().unwrap();
        match store.get(object, id).filter(|r| r.deleted_at.is_none()) {
            Some(record) => SimResponse::json(StatusCode::OK, &Value::Object(record.render(version))),
            None => not_found(),
        }
    }
}

fn not_found() -> SimResponse {
    wire::error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
    )
}

fn server_error() -> SimResponse {
    if rand::random::<bool>() {
        wire::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_EXCEPTION",
            "An unexpected error occurred. Please include this ErrorId if you contact support: 1234567890-12345",
        )
    } else {
        wire::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER_UNAVAILABLE",
            "Server temporarily unavailable.",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_recognised_by_method_and_path() {
        let (get, patch) = (Method::GET, Method::PATCH);
        assert_eq!(
            Route::parse(&get, "/services/data/v62.0/query"),
            Route::Query("v62.0".into())
        );
        assert_eq!(
            Route::parse(&get, "/services/data/v62.0/query/01gHu0000000001AAA-2000"),
            Route::QueryMore("v62.0".into(), "01gHu0000000001AAA".into(), 2000)
        );
        assert_eq!(
            Route::parse(&get, "/services/data/v62.0/sobjects/Account/deleted/"),
            Route::Deleted("v62.0".into(), "Account".into())
        );
        assert_eq!(
            Route::parse(&patch, "/services/data/v62.0/sobjects/Account/Key__c/a%2Fb"),
            Route::Upsert("v62.0".into(), "Account".into(), "Key__c".into(), "a/b".into())
        );
        assert_eq!(Route::parse(&Method::POST, "/services/oauth2/token"), Route::Token);
        assert_eq!(Route::parse(&get, "/services/data/62.0/query"), Route::Unknown);
        assert_eq!(Route::parse(&get, "/services/data/v62.0/nothing"), Route::Unknown);
    }

    #[test]
    fn versions_parse_only_in_salesforce_form() {
        assert_eq!(api_version("v62.0"), Some(62.0));
        assert_eq!(api_version("v45.0"), Some(45.0));
        assert_eq!(api_version("62.0"), None);
        assert_eq!(api_version("v62"), None);
    }
}
