//! The HTTP front of the fake Creatio: routing, the rate-limit window and injected faults in front of everything,
//! authentication (session cookies plus `BPMCSRF`, or a bearer token), and the OData 4 entity endpoints.

use std::time::Duration;

use http::{Method, StatusCode};
use rand::seq::IndexedRandom;
use serde_json::{Map, Value, json};

use super::filter::{ColumnType, column_type};
use super::query::Query;
use super::session::SessionCheck;
use super::store::new_id;
use super::wire::{self, error};
use super::{LOGIN_PATH, Shared, TOKEN_PATH};
use crate::faults::Fault;
use crate::oauth::AccessCheck;
use crate::request_log::RequestRecord;
use crate::server::{Handler, SimRequest, SimResponse};
use crate::window::Admission;

/// What a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Login,
    Token,
    /// `GET /0/odata/Contact?...`
    List(String),
    /// `GET /0/odata/Contact(<guid>)`
    Get(String, String),
    /// `POST /0/odata/Contact`
    Create(String),
    /// `PATCH /0/odata/Contact(<guid>)`
    Update(String, String),
    /// `DELETE /0/odata/Contact(<guid>)`
    Delete(String, String),
    /// A known resource with a method it does not take.
    WrongMethod(&'static str),
    NotFound,
}

impl Route {
    pub(crate) fn parse(method: &Method, path: &str) -> Route {
        match (method, path) {
            (&Method::POST, LOGIN_PATH) => return Route::Login,
            (&Method::POST, TOKEN_PATH) => return Route::Token,
            (_, LOGIN_PATH | TOKEN_PATH) => return Route::WrongMethod("POST"),
            _ => {}
        }
        // Creatio on .NET Framework serves OData 4 at /0/odata; on .NET 6 and later at /odata.
        let Some(resource) = path.strip_prefix("/0/odata/").or_else(|| path.strip_prefix("/odata/")) else {
            return Route::NotFound;
        };
        let resource = resource.trim_end_matches('/');
        let (entity, key) = match resource.split_once('(') {
            Some((entity, rest)) => match rest.strip_suffix(')') {
                Some(key) => (entity, Some(key.to_ascii_lowercase())),
                None => return Route::NotFound,
            },
            None => (resource, None),
        };
        if entity.is_empty() || entity.contains('/') {
            return Route::NotFound;
        }
        let entity = entity.to_owned();
        match (method, key) {
            (&Method::GET, None) => Route::List(entity),
            (&Method::POST, None) => Route::Create(entity),
            (_, None) => Route::WrongMethod("GET, POST"),
            (&Method::GET, Some(key)) => Route::Get(entity, key),
            (&Method::PATCH, Some(key)) => Route::Update(entity, key),
            (&Method::DELETE, Some(key)) => Route::Delete(entity, key),
            (_, Some(_)) => Route::WrongMethod("GET, PATCH, DELETE"),
        }
    }

    /// The name the request log records.
    pub(crate) fn operation(&self) -> &'static str {
        match self {
            Route::Login => "login",
            Route::Token => "token",
            Route::List(_) => "list",
            Route::Get(..) => "get",
            Route::Create(_) => "create",
            Route::Update(..) => "update",
            Route::Delete(..) => "delete",
            Route::WrongMethod(_) => "method_not_allowed",
            Route::NotFound => "not_found",
        }
    }
}

impl Handler for Shared {
    async fn handle(&self, request: SimRequest) -> SimResponse {
        let route = Route::parse(&request.method, request.path());
        let response = self.answer(&request, &route);
        self.log.push(RequestRecord {
            at: request.received_at,
            method: request.method.to_string(),
            path: request.path().to_owned(),
            operation: route.operation().to_owned(),
            // A reset connection gets no status at all: logged as 0.
            status: if response.reset { 0 } else { response.status.as_u16() },
        });
        response
    }
}

/// Whole seconds, rounded up and at least 1, as Retry-After carries them.
fn retry_after_secs(d: Duration) -> u64 {
    (d.as_millis().div_ceil(1000) as u64).max(1)
}

fn too_many_requests(retry_after: Duration) -> SimResponse {
    SimResponse::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
        .with_header("content-type", "text/plain; charset=utf-8")
        .with_header("retry-after", retry_after_secs(retry_after).to_string())
}

fn server_error() -> SimResponse {
    let choices = [
        error(StatusCode::INTERNAL_SERVER_ERROR, "An error has occurred."),
        SimResponse::new(
            StatusCode::BAD_GATEWAY,
            "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>",
        )
        .with_header("content-type", "text/html"),
    ];
    choices.choose(&mut rand::rng()).expect("not empty").clone()
}

fn unauthorized() -> SimResponse {
    error(StatusCode::UNAUTHORIZED, "Authentication failed.")
}

fn not_found(segment: &str) -> SimResponse {
    error(
        StatusCode::NOT_FOUND,
        format!("Resource not found for the segment '{segment}'."),
    )
}

fn is_guid(key: &str) -> bool {
    uuid::Uuid::parse_str(key).is_ok() && key.len() == 36
}

impl Shared {
    /// The answer. Order: rate-limit window, injected fault, authentication, then the endpoint.
    fn answer(&self, request: &SimRequest, route: &Route) -> SimResponse {
        if let Some(window) = self.window.lock().unwrap().as_mut()
            && let Admission::Refused { retry_after } = window.admit(request.received_at)
        {
            return too_many_requests(retry_after);
        }
        let targeted = {
            let mut targeted = self.targeted.lock().unwrap();
            let at = targeted.iter().position(|(op, _)| op == route.operation());
            at.map(|i| targeted.remove(i).1)
        };
        let fault = targeted.unwrap_or_else(|| self.faults.lock().unwrap().roll());
        match fault {
            Fault::ServerError => return server_error(),
            Fault::RateLimited(retry_after) => return too_many_requests(retry_after),
            _ => {}
        }
        let mut response = match route {
            Route::Login => self.sessions.lock().unwrap().login(request),
            Route::Token => match &self.issuer {
                Some(issuer) => issuer.handle(request),
                None => not_found("connect"),
            },
            Route::WrongMethod(allow) => {
                error(StatusCode::METHOD_NOT_ALLOWED, "The HTTP verb is not supported.").with_header("allow", *allow)
            }
            Route::NotFound => error(StatusCode::NOT_FOUND, format!("No resource at '{}'.", request.path())),
            _ => match self.refuse_unauthenticated(request) {
                Some(refusal) => refusal,
                None => self.odata(request, route),
            },
        };
        // These faults hit after the request ran: the client cannot tell whether a write happened.
        match fault {
            Fault::Slow(delay) => response.delay = Some(delay),
            Fault::TruncatedJson if response.status.is_success() && !response.body.is_empty() => {
                response.truncate = true
            }
            Fault::ConnectionReset => response.reset = true,
            _ => {}
        }
        response
    }

    /// The refusal of a request that proves no identity, or None. A bearer token when the request has one, else
    /// the session cookies and `BPMCSRF`.
    fn refuse_unauthenticated(&self, request: &SimRequest) -> Option<SimResponse> {
        if let Some((scheme, token)) = request.header("authorization").and_then(|h| h.split_once(' '))
            && scheme.eq_ignore_ascii_case("bearer")
        {
            let check = self.issuer.as_ref().map(|issuer| issuer.check(token.trim()));
            return match check {
                Some(AccessCheck::Valid) => None,
                _ => Some(unauthorized().with_header("www-authenticate", "Bearer error=\"invalid_token\"")),
            };
        }
        match self.sessions.lock().unwrap().check(request) {
            SessionCheck::Valid => None,
            SessionCheck::Unauthenticated => Some(unauthorized()),
            SessionCheck::BadCsrf => Some(error(StatusCode::FORBIDDEN, "Invalid CSRF token.")),
        }
    }

    fn odata(&self, request: &SimRequest, route: &Route) -> SimResponse {
        let base = self.base_url.get().map(String::as_str).unwrap_or("");
        let mut store = self.store.lock().unwrap();
        let now = store.clock.now();
        match route {
            Route::List(entity) => {
                let Some(table) = store.table(entity) else {
                    return not_found(entity);
                };
                let params: Vec<(String, String)> =
                    url::form_urlencoded::parse(request.uri.query().unwrap_or("").as_bytes())
                        .into_owned()
                        .collect();
                let query = match Query::parse(table, &params) {
                    Ok(q) => q,
                    Err(e) => return error(StatusCode::BAD_REQUEST, e.0),
                };
                let (ids, total) = query.run(table);
                let rows = ids
                    .iter()
                    .map(|id| wire::entity(table, id, &table.rows[id], query.select.as_deref()))
                    .collect();
                SimResponse::json(
                    StatusCode::OK,
                    &wire::collection(base, entity, rows, query.count.then_some(total)),
                )
            }
            Route::Get(entity, key) => {
                let Some(table) = store.table(entity) else {
                    return not_found(entity);
                };
                match table.rows.get(key) {
                    Some(row) => {
                        let mut body = wire::entity(table, key, row, None);
                        body["@odata.context"] = json!(wire::context(base, &format!("{entity}/$entity")));
                        SimResponse::json(StatusCode::OK, &body)
                    }
                    None => not_found(entity),
                }
            }
            Route::Create(entity) => {
                let fields = match body_fields(request, store.table(entity), entity) {
                    Ok(f) => f,
                    Err((status, message)) => return error(status, message),
                };
                let id = match fields.get("Id").and_then(Value::as_str) {
                    Some(given) if is_guid(given) => given.to_ascii_lowercase(),
                    Some(_) => return error(StatusCode::BAD_REQUEST, "Cannot convert the literal to 'Edm.Guid'."),
                    None => new_id(),
                };
                let table = store.table_mut(entity).expect("checked by body_fields");
                if table.rows.contains_key(&id) {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Violation of PRIMARY KEY constraint. Cannot insert duplicate key.",
                    );
                }
                table.insert(&id, &fields, now);
                let mut body = wire::entity(table, &id, &table.rows[&id], None);
                body["@odata.context"] = json!(wire::context(base, &format!("{entity}/$entity")));
                store.count_create(entity, &fields);
                SimResponse::json(StatusCode::CREATED, &body)
            }
            Route::Update(entity, key) => {
                let fields = match body_fields(request, store.table(entity), entity) {
                    Ok(f) => f,
                    Err((status, message)) => return error(status, message),
                };
                let table = store.table_mut(entity).expect("checked by body_fields");
                if table.update(key, &fields, now) {
                    SimResponse::new(StatusCode::NO_CONTENT, "")
                } else {
                    not_found(entity)
                }
            }
            Route::Delete(entity, key) => {
                if store.table_mut(entity).is_some_and(|table| table.remove(key)) {
                    SimResponse::new(StatusCode::NO_CONTENT, "")
                } else {
                    not_found(entity)
                }
            }
            Route::Login | Route::Token | Route::WrongMethod(_) | Route::NotFound => unreachable!("routed earlier"),
        }
    }
}

/// The JSON object of a POST or PATCH, every property checked against the entity's columns; or the status and
/// message of the refusal.
fn body_fields(
    request: &SimRequest,
    table: Option<&super::store::Table>,
    entity: &str,
) -> Result<Map<String, Value>, (StatusCode, String)> {
    let Some(table) = table else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("Resource not found for the segment '{entity}'."),
        ));
    };
    let fields: Map<String, Value> = match serde_json::from_slice(&request.body) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Err((
                StatusCode::BAD_REQUEST,
                "The request body must be a JSON object describing the entity.".to_owned(),
            ));
        }
    };
    for (name, value) in &fields {
        if !table.knows(name) {
            return Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "The property '{name}' does not exist on type 'Terrasoft.Configuration.{entity}'. Make sure to only use property names that are defined by the type."
                ),
            ));
        }
        // Creatio fills the system dates itself, but still refuses a value that is not a date-time.
        if column_type(name) == ColumnType::DateTime && !value.is_string() {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("Cannot convert the value of '{name}'."),
            ));
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_odata_4_urls() {
        let id = "0d4c1c9c-5b4e-4d0c-9a63-8a2f5c1c0e1a";
        assert_eq!(
            Route::parse(&Method::GET, "/0/odata/Contact"),
            Route::List("Contact".into())
        );
        assert_eq!(
            Route::parse(&Method::GET, "/odata/Contact"),
            Route::List("Contact".into())
        );
        assert_eq!(
            Route::parse(&Method::PATCH, &format!("/0/odata/Contact({})", id.to_uppercase())),
            Route::Update("Contact".into(), id.into())
        );
        assert_eq!(
            Route::parse(&Method::DELETE, &format!("/0/odata/Contact({id})")),
            Route::Delete("Contact".into(), id.into())
        );
        assert_eq!(
            Route::parse(&Method::POST, "/0/odata/Contact"),
            Route::Create("Contact".into())
        );
        assert_eq!(
            Route::parse(&Method::PUT, "/0/odata/Contact"),
            Route::WrongMethod("GET, POST")
        );
        assert_eq!(Route::parse(&Method::POST, LOGIN_PATH), Route::Login);
        assert_eq!(Route::parse(&Method::GET, "/1/odata/Contact"), Route::NotFound);
        assert_eq!(Route::parse(&Method::GET, "/0/odata/Contact(x"), Route::NotFound);
    }
}
