//! `POST /webhooks/{connection_id}`: verify on raw bytes, store in the inbox, commit, and only then answer 2xx.
//! Every refusal maps to exactly one status in [`respond`]; nothing that failed verification is stored.

use bytes::Bytes;
use chrono::Utc;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::HttpState;
use super::body::{self, BodyError};
use super::db_wait;
use super::response::{self, Body};
use crate::actors::ConnectionMsg;
use crate::metrics::WebhookOutcome;
use crate::providers::{WebhookError, WebhookRequest};
use crate::store::StoreError;

/// Everything that can become of one webhook request.
enum Refusal {
    UnknownConnection,
    WrongMethod,
    Body(BodyError),
    Verify(WebhookError),
    Store(StoreError),
}

/// The one place where a refusal becomes an HTTP status and an outcome label.
fn respond(state: &HttpState, connection: &str, refusal: Refusal) -> Response<Body> {
    let (status, outcome, message) = match &refusal {
        Refusal::UnknownConnection => (
            StatusCode::NOT_FOUND,
            Some(WebhookOutcome::UnknownConnection),
            "unknown connection".to_string(),
        ),
        Refusal::WrongMethod => (StatusCode::METHOD_NOT_ALLOWED, None, "use POST".to_string()),
        Refusal::Body(BodyError::TooLarge) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            Some(WebhookOutcome::TooLarge),
            "body too large".to_string(),
        ),
        Refusal::Body(BodyError::Timeout) => (
            StatusCode::REQUEST_TIMEOUT,
            Some(WebhookOutcome::Malformed),
            "body not received in time".to_string(),
        ),
        Refusal::Body(BodyError::Broken) => (
            StatusCode::BAD_REQUEST,
            Some(WebhookOutcome::Malformed),
            "unreadable body".to_string(),
        ),
        Refusal::Verify(WebhookError::Unauthorized(why)) => (
            StatusCode::UNAUTHORIZED,
            Some(WebhookOutcome::Unauthorized),
            why.to_string(),
        ),
        Refusal::Verify(WebhookError::Stale) => (
            StatusCode::UNAUTHORIZED,
            Some(WebhookOutcome::Unauthorized),
            "timestamp outside the allowed window".to_string(),
        ),
        Refusal::Verify(WebhookError::Malformed(why)) => {
            (StatusCode::BAD_REQUEST, Some(WebhookOutcome::Malformed), why.clone())
        }
        // 503 (not 500) so the CRM retries: the event was not stored.
        Refusal::Store(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(WebhookOutcome::Unavailable),
            "storage unavailable; retry later".to_string(),
        ),
    };
    if let Some(outcome) = outcome {
        let label = if matches!(refusal, Refusal::UnknownConnection) {
            "unknown"
        } else {
            connection
        };
        state.metrics.webhook(label, outcome);
    }
    match &refusal {
        Refusal::Store(e) => tracing::error!(connection, error = %e, "Webhook not stored; answered 503."),
        Refusal::Verify(e) => tracing::warn!(connection, error = %e, "Webhook refused."),
        _ => tracing::debug!(connection, status = status.as_u16(), "Webhook refused."),
    }
    let mut answer = response::error(status, &message);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        answer
            .headers_mut()
            .insert(http::header::RETRY_AFTER, "5".parse().expect("static header"));
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        answer
            .headers_mut()
            .insert(http::header::ALLOW, "POST".parse().expect("static header"));
    }
    answer
}

pub async fn handle(state: &HttpState, connection: &str, request: Request<Incoming>) -> Response<Body> {
    let Some(entry) = state.registry.get(connection) else {
        return respond(state, connection, Refusal::UnknownConnection);
    };
    if request.method() != Method::POST {
        return respond(state, connection, Refusal::WrongMethod);
    }
    let (parts, incoming) = request.into_parts();
    let body: Bytes = match body::read(
        incoming,
        &parts.headers,
        state.http.max_body_bytes,
        state.http.body_read_timeout,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return respond(state, connection, Refusal::Body(e)),
    };
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let verified = entry.provider.verify_webhook(&WebhookRequest {
        method: &parts.method,
        path_and_query,
        headers: &parts.headers,
        body: &body,
        public_url: state.http.public_url.as_ref(),
        now: Utc::now(),
    });
    let events = match verified {
        Ok(events) => events,
        Err(e) => return respond(state, connection, Refusal::Verify(e)),
    };
    // A request cut off by the wait may still be committed by the inbox writer later: the CRM got a 503 and
    // re-sends, and the copy is a duplicate. What cannot happen is a 2xx for events that were not committed.
    let stored = db_wait::retry_within(db_wait::WEBHOOK_DB_WAIT, || {
        state.inbox.insert(connection, events.clone())
    });
    let outcome = match stored.await {
        Ok(outcome) => outcome,
        Err(e) => return respond(state, connection, Refusal::Store(e)),
    };
    // Committed: only now may the CRM hear 2xx.
    if outcome.inserted > 0 {
        state.metrics.webhook(connection, WebhookOutcome::Accepted);
        entry.notify(ConnectionMsg::WebhookArrived);
    } else {
        state.metrics.webhook(connection, WebhookOutcome::Duplicate);
    }
    match entry.provider.webhook_ack() {
        Some(ack) => response::text(StatusCode::OK, ack.body, ack.content_type),
        None => response::json(
            StatusCode::OK,
            &json!({"accepted": outcome.inserted, "duplicates": outcome.duplicates}),
        ),
    }
}
