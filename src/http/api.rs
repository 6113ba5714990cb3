//! The small authenticated API under `/v1`: queue writes with an `Idempotency-Key`, read their status, replay
//! dead ones, list connections, and resume a connection parked by an auth failure.

use chrono::{DateTime, Utc};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use super::HttpState;
use super::body::{self, BodyError};
use super::response::{self, Body};
use crate::actors::{ConnectionMsg, SupervisorMsg};
use crate::store::{Enqueued, NewWrite, StoreError};

/// Longest idempotency key accepted.
const MAX_KEY_LEN: usize = 255;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteBody {
    object: String,
    #[serde(default, rename = "match")]
    match_: Option<serde_json::Map<String, Value>>,
    properties: serde_json::Map<String, Value>,
}

pub async fn handle(state: &HttpState, segments: &[&str], request: Request<Incoming>) -> Response<Body> {
    let Some(token) = &state.http.api_token else {
        return response::error(StatusCode::NOT_FOUND, "the API is disabled (set http.api_token)");
    };
    if !token.matches(bearer_token(request.headers()).unwrap_or_default()) {
        let mut r = response::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, "Bearer".parse().expect("static header"));
        return r;
    }
    let method = request.method().clone();
    let result = match (&method, segments) {
        (&Method::GET, ["connections"]) => connections(state).await,
        (&Method::POST, ["connections", id, "writes"]) => {
            let id = id.to_string();
            create_write(state, &id, request).await
        }
        (&Method::POST, ["connections", id, "resume"]) => resume(state, id),
        (&Method::GET, ["writes", id]) => get_write(state, id).await,
        (&Method::POST, ["writes", id, "replay"]) => replay(state, id).await,
        _ => Ok(response::error(StatusCode::NOT_FOUND, "no such API route")),
    };
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "API request failed on the database.");
        response::error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable; retry later")
    })
}

/// The credentials of an `Authorization: Bearer <token>` header. The scheme is case-insensitive (RFC 9110
/// section 11.1), so `bearer x` is the token `x`; any other scheme, or none, is no token at all.
fn bearer_token(headers: &http::HeaderMap) -> Option<&[u8]> {
    let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let value = value.trim_ascii();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
        .filter(|t| !t.is_empty())
}

async fn connections(state: &HttpState) -> Result<Response<Body>, StoreError> {
    let statuses = state
        .supervisor
        .call(SupervisorMsg::Status, Some(std::time::Duration::from_secs(5)))
        .await
        .ok()
        .and_then(|r| r.success_or(()).ok())
        .unwrap_or_default();
    let list: Vec<Value> = state
        .registry
        .all()
        .iter()
        .map(|entry| {
            let status = statuses.iter().find(|s| s.id == entry.id());
            json!({
                "id": entry.id(),
                "provider": entry.config.provider.kind().as_str(),
                "objects": entry.provider.objects(),
                "state": state.metrics.current_state(entry.id()).map(|s| s.as_str()),
                "running": status.map(|s| s.running),
                "restarts": status.map(|s| s.restarts),
            })
        })
        .collect();
    Ok(response::json(StatusCode::OK, &json!({ "connections": list })))
}

fn resume(state: &HttpState, id: &str) -> Result<Response<Body>, StoreError> {
    let Some(entry) = state.registry.get(id) else {
        return Ok(response::error(StatusCode::NOT_FOUND, "unknown connection"));
    };
    entry.notify(ConnectionMsg::Resume);
    Ok(response::json(
        StatusCode::ACCEPTED,
        &json!({"connection": id, "resumed": true}),
    ))
}

async fn create_write(state: &HttpState, id: &str, request: Request<Incoming>) -> Result<Response<Body>, StoreError> {
    let Some(entry) = state.registry.get(id) else {
        return Ok(response::error(StatusCode::NOT_FOUND, "unknown connection"));
    };
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("")
        .to_string();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Ok(response::error(
            StatusCode::BAD_REQUEST,
            "an Idempotency-Key header (1 to 255 characters) is required",
        ));
    }
    let (parts, incoming) = request.into_parts();
    let bytes = match body::read(
        incoming,
        &parts.headers,
        state.http.max_body_bytes,
        state.http.body_read_timeout,
    )
    .await
    {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return Ok(response::error(StatusCode::PAYLOAD_TOO_LARGE, "body too large")),
        Err(_) => return Ok(response::error(StatusCode::BAD_REQUEST, "unreadable body")),
    };
    let write: WriteBody = match serde_json::from_slice(&bytes) {
        Ok(w) => w,
        Err(e) => return Ok(response::error(StatusCode::BAD_REQUEST, &format!("invalid body: {e}"))),
    };
    if !entry.provider.objects().contains(&write.object) {
        return Ok(response::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("connection {id} does not sync object {:?}", write.object),
        ));
    }
    let (match_key, match_value) = match write.match_ {
        None => (None, None),
        Some(m) if m.len() == 1 => {
            let (k, v) = m.into_iter().next().expect("one entry");
            let v = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                _ => {
                    return Ok(response::error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "the match value must be a string or a number",
                    ));
                }
            };
            (Some(k), Some(v))
        }
        Some(_) => {
            return Ok(response::error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "match must name exactly one unique property",
            ));
        }
    };
    let enqueued = state
        .store
        .enqueue_write(NewWrite {
            idempotency_key: key,
            connection_id: id.to_string(),
            object: write.object,
            match_key,
            match_value,
            properties: Value::Object(write.properties),
        })
        .await?;
    Ok(match enqueued {
        Enqueued::Created(w) => {
            entry.notify(ConnectionMsg::WritesQueued);
            response::json(StatusCode::ACCEPTED, &write_json(&w))
        }
        Enqueued::Existing(w) => response::json(StatusCode::ACCEPTED, &write_json(&w)),
        Enqueued::Conflict(_) => response::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was already used with a different body",
        ),
    })
}

async fn get_write(state: &HttpState, id: &str) -> Result<Response<Body>, StoreError> {
    let Ok(id) = id.parse::<i64>() else {
        return Ok(response::error(StatusCode::NOT_FOUND, "no such write"));
    };
    Ok(match state.store.write_by_id(id).await? {
        Some(w) => response::json(StatusCode::OK, &write_json(&w)),
        None => response::error(StatusCode::NOT_FOUND, "no such write"),
    })
}

async fn replay(state: &HttpState, id: &str) -> Result<Response<Body>, StoreError> {
    let Ok(id) = id.parse::<i64>() else {
        return Ok(response::error(StatusCode::NOT_FOUND, "no such write"));
    };
    Ok(match state.store.replay_write(id).await? {
        Some(w) => {
            if let Some(entry) = state.registry.get(&w.connection_id) {
                entry.notify(ConnectionMsg::WritesQueued);
            }
            response::json(StatusCode::OK, &write_json(&w))
        }
        None => response::error(StatusCode::NOT_FOUND, "no such write"),
    })
}

fn write_json(w: &crmsyncd_entities::outbox::Model) -> Value {
    fn time(t: &DateTime<Utc>) -> String {
        t.to_rfc3339()
    }
    json!({
        "id": w.id,
        "idempotency_key": w.idempotency_key,
        "connection": w.connection_id,
        "object": w.object,
        "status": w.status,
        "attempts": w.attempts,
        "last_error": w.last_error,
        "remote_id": w.remote_id,
        "created_at": time(&w.created_at),
        "updated_at": time(&w.updated_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &[u8]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_bytes(value).unwrap(),
        );
        headers
    }

    #[test]
    fn bearer_scheme_is_matched_whatever_its_case() {
        for value in [&b"Bearer tok"[..], b"bearer tok", b"BEARER tok", b"bEaReR   tok  "] {
            assert_eq!(bearer_token(&with_auth(value)), Some(&b"tok"[..]), "{value:?}");
        }
    }

    #[test]
    fn other_schemes_and_empty_tokens_present_no_token() {
        for value in [
            &b"Basic dG9rOnRvaw=="[..],
            b"Bearer",
            b"Bearer ",
            b"tok",
            b"Bearertok",
            b"Token tok",
        ] {
            assert_eq!(bearer_token(&with_auth(value)), None, "{value:?}");
        }
        assert_eq!(bearer_token(&http::HeaderMap::new()), None);
    }
}
