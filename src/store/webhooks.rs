//! The webhook inbox: events are stored (and committed) before the webhook is answered, deduplicated on the
//! CRM's event id, then processed by the connection's actor.

use std::collections::HashSet;

use crmsyncd_entities::webhook_events::{self, WebhookStatus};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;

use super::{BATCH, Store, StoreError, now};

/// An event as a provider parsed it from a verified webhook request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWebhookEvent {
    /// The CRM's id for the event; a redelivery carries the same one.
    pub event_id: String,
    /// The CRM object the event is about, when known.
    pub object: Option<String>,
    /// The few request headers worth keeping.
    pub headers: Value,
    /// This one event's JSON.
    pub body: Value,
}

/// One webhook request's events, as [`Store::insert_webhook_batches`] takes them.
#[derive(Debug, Clone, Copy)]
pub struct WebhookBatch<'a> {
    pub connection: &'a str,
    pub events: &'a [NewWebhookEvent],
}

/// What [`Store::insert_webhook_events`] stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxOutcome {
    /// Events stored now.
    pub inserted: usize,
    /// Events already in the inbox (redeliveries), or repeated within the request.
    pub duplicates: usize,
}

impl Store {
    /// Stores `events` in one transaction, skipping event ids already stored for the connection. Returns after
    /// the commit, so a 2xx answered afterwards is never for an event that could still be lost.
    pub async fn insert_webhook_events(
        &self,
        connection: &str,
        events: &[NewWebhookEvent],
    ) -> Result<InboxOutcome, StoreError> {
        if events.is_empty() {
            return Ok(InboxOutcome::default());
        }
        let batch = [WebhookBatch { connection, events }];
        let outcomes = self.insert_webhook_batches(&batch).await?;
        Ok(outcomes.into_iter().next().unwrap_or_default())
    }

    /// Stores several requests' events in one transaction (group commit) and tells each request what became of
    /// its own events. An event id repeated across requests in the batch counts as stored for the first request
    /// that carries it and as a duplicate for the others, as it would had they come one after the other.
    pub async fn insert_webhook_batches(&self, requests: &[WebhookBatch<'_>]) -> Result<Vec<InboxOutcome>, StoreError> {
        let received_at = now();
        let rows: Vec<(&str, &NewWebhookEvent)> = requests
            .iter()
            .flat_map(|r| r.events.iter().map(move |e| (r.connection, e)))
            .collect();
        let mut stored: HashSet<(String, String)> = HashSet::with_capacity(rows.len());
        let txn = self.begin_write().await?;
        for chunk in rows.chunks(BATCH) {
            let mut insert = Query::insert();
            insert.into_table(webhook_events::Entity).columns([
                webhook_events::Column::ConnectionId,
                webhook_events::Column::EventId,
                webhook_events::Column::Object,
                webhook_events::Column::Headers,
                webhook_events::Column::Body,
                webhook_events::Column::Status,
                webhook_events::Column::Attempts,
                webhook_events::Column::ReceivedAt,
            ]);
            for (connection, event) in chunk {
                insert.values_panic([
                    (*connection).into(),
                    event.event_id.as_str().into(),
                    event.object.clone().into(),
                    event.headers.clone().into(),
                    event.body.clone().into(),
                    WebhookStatus::Received.into(),
                    0i32.into(),
                    received_at.into(),
                ]);
            }
            insert
                .on_conflict(
                    OnConflict::columns([webhook_events::Column::ConnectionId, webhook_events::Column::EventId])
                        .do_nothing()
                        .to_owned(),
                )
                .returning(
                    Query::returning().columns([webhook_events::Column::ConnectionId, webhook_events::Column::EventId]),
                );
            for row in txn.query_all(&insert).await? {
                stored.insert((row.try_get_by_index(0)?, row.try_get_by_index(1)?));
            }
        }
        txn.commit().await?;
        Ok(requests
            .iter()
            .map(|request| {
                let mut outcome = InboxOutcome::default();
                for event in request.events {
                    // Taking the key out credits a stored event to its first request only.
                    if stored.remove(&(request.connection.to_string(), event.event_id.clone())) {
                        outcome.inserted += 1;
                    } else {
                        outcome.duplicates += 1;
                    }
                }
                outcome
            })
            .collect())
    }

    /// Up to `limit` of the connection's events still to process (status `received`), oldest first.
    pub async fn pending_webhook_events(
        &self,
        connection: &str,
        limit: u64,
    ) -> Result<Vec<webhook_events::Model>, StoreError> {
        Ok(webhook_events::Entity::find()
            .filter(webhook_events::Column::ConnectionId.eq(connection))
            .filter(webhook_events::Column::Status.eq(WebhookStatus::Received))
            .order_by_asc(webhook_events::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Marks events handled: `processed` on `Ok`, `failed` with the message on `Err`. Counts the attempt.
    pub async fn finish_webhook_events(&self, ids: &[i64], outcome: Result<(), String>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let (status, last_error, processed_at) = match outcome {
            Ok(()) => (WebhookStatus::Processed, None, Some(now())),
            Err(message) => (WebhookStatus::Failed, Some(message), None),
        };
        let txn = self.begin_write().await?;
        for chunk in ids.chunks(BATCH) {
            webhook_events::Entity::update_many()
                .col_expr(webhook_events::Column::Status, Expr::value(status))
                .col_expr(
                    webhook_events::Column::Attempts,
                    Expr::col(webhook_events::Column::Attempts).add(1),
                )
                .col_expr(webhook_events::Column::LastError, Expr::value(last_error.clone()))
                .col_expr(webhook_events::Column::ProcessedAt, Expr::value(processed_at))
                .filter(webhook_events::Column::Id.is_in(chunk.iter().copied()))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }
}
