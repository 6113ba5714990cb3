//! The write outbox: writes an application asked for, each under an idempotency key that is applied at most
//! once, drained by the connection's actor with retries and a dead state an operator can replay.

use chrono::{DateTime, Utc};
use crmsyncd_entities::outbox::{self, OutboxStatus};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Value, json};

use super::{Store, StoreError, content_hash, db_time, now};

/// A write to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWrite {
    /// The caller's key: enqueuing the same key again is a no-op (or a conflict if the body differs).
    pub idempotency_key: String,
    pub connection_id: String,
    pub object: String,
    /// The unique property to upsert by (e.g. `email`), if any, and its value.
    pub match_key: Option<String>,
    pub match_value: Option<String>,
    /// The fields to write (a JSON object).
    pub properties: Value,
}

/// What [`Store::enqueue_write`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// A new outbox row.
    Created(outbox::Model),
    /// The key was already used with the same request: the existing row.
    Existing(outbox::Model),
    /// The key was already used with a different request: the existing row, unchanged.
    Conflict(outbox::Model),
}

/// Pending and dead write counts of a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: u64,
    pub dead: u64,
}

/// Hex SHA-256 over everything that makes two requests "the same write": connection, object, match and
/// properties (not the key itself).
pub fn request_hash(write: &NewWrite) -> String {
    content_hash(&json!({
        "connection_id": write.connection_id,
        "object": write.object,
        "match_key": write.match_key,
        "match_value": write.match_value,
        "properties": write.properties,
    }))
}

impl Store {
    /// Enqueues `write` unless its key is already used. Race-safe: concurrent enqueues of one key leave one row
    /// (the insert does nothing on a conflicting key, then the row is read back).
    pub async fn enqueue_write(&self, write: NewWrite) -> Result<Enqueued, StoreError> {
        let hash = request_hash(&write);
        let at = now();
        let insert = Query::insert()
            .into_table(outbox::Entity)
            .columns([
                outbox::Column::IdempotencyKey,
                outbox::Column::ConnectionId,
                outbox::Column::Object,
                outbox::Column::MatchKey,
                outbox::Column::MatchValue,
                outbox::Column::Properties,
                outbox::Column::RequestHash,
                outbox::Column::Status,
                outbox::Column::Attempts,
                outbox::Column::NextAttemptAt,
                outbox::Column::CreatedAt,
                outbox::Column::UpdatedAt,
            ])
            .values_panic([
                write.idempotency_key.as_str().into(),
                write.connection_id.as_str().into(),
                write.object.as_str().into(),
                write.match_key.clone().into(),
                write.match_value.clone().into(),
                write.properties.clone().into(),
                hash.as_str().into(),
                OutboxStatus::Pending.into(),
                0i32.into(),
                at.into(),
                at.into(),
                at.into(),
            ])
            .on_conflict(
                OnConflict::column(outbox::Column::IdempotencyKey)
                    .do_nothing()
                    .to_owned(),
            )
            .to_owned();
        let created = self.db.execute(&insert).await?.rows_affected() == 1;
        let row = outbox::Entity::find()
            .filter(outbox::Column::IdempotencyKey.eq(write.idempotency_key.as_str()))
            .one(&self.db)
            .await?
            .ok_or_else(|| StoreError::Inconsistent(format!("outbox row {:?} vanished", write.idempotency_key)))?;
        Ok(if created {
            Enqueued::Created(row)
        } else if row.request_hash == hash {
            Enqueued::Existing(row)
        } else {
            Enqueued::Conflict(row)
        })
    }

    pub async fn write_by_id(&self, id: i64) -> Result<Option<outbox::Model>, StoreError> {
        Ok(outbox::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// Up to `limit` of the connection's pending writes whose `next_attempt_at` has come, oldest first.
    pub async fn due_writes(
        &self,
        connection: &str,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<outbox::Model>, StoreError> {
        Ok(outbox::Entity::find()
            .filter(outbox::Column::ConnectionId.eq(connection))
            .filter(outbox::Column::Status.eq(OutboxStatus::Pending))
            .filter(outbox::Column::NextAttemptAt.lte(db_time(now)))
            .order_by_asc(outbox::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// When the connection's next pending write is due (its earliest `next_attempt_at`), if it has any.
    pub async fn next_write_at(&self, connection: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let next = outbox::Entity::find()
            .filter(outbox::Column::ConnectionId.eq(connection))
            .filter(outbox::Column::Status.eq(OutboxStatus::Pending))
            .order_by_asc(outbox::Column::NextAttemptAt)
            .one(&self.db)
            .await?;
        Ok(next.map(|w| w.next_attempt_at))
    }

    /// The write was applied; `remote_id` is the CRM's id of the written record.
    pub async fn write_done(&self, id: i64, remote_id: &str) -> Result<(), StoreError> {
        outbox::Entity::update_many()
            .col_expr(outbox::Column::Status, Expr::value(OutboxStatus::Done))
            .col_expr(outbox::Column::RemoteId, Expr::value(remote_id))
            .col_expr(outbox::Column::UpdatedAt, Expr::value(now()))
            .filter(outbox::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The attempt failed transiently: count it and try again at `next_attempt_at`.
    pub async fn write_retry(&self, id: i64, error: &str, next_attempt_at: DateTime<Utc>) -> Result<(), StoreError> {
        outbox::Entity::update_many()
            .col_expr(outbox::Column::Attempts, Expr::col(outbox::Column::Attempts).add(1))
            .col_expr(outbox::Column::LastError, Expr::value(error))
            .col_expr(outbox::Column::NextAttemptAt, Expr::value(db_time(next_attempt_at)))
            .col_expr(outbox::Column::UpdatedAt, Expr::value(now()))
            .filter(outbox::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The write failed permanently: count the attempt and park it as `dead` until an operator replays it.
    pub async fn write_dead(&self, id: i64, error: &str) -> Result<(), StoreError> {
        outbox::Entity::update_many()
            .col_expr(outbox::Column::Status, Expr::value(OutboxStatus::Dead))
            .col_expr(outbox::Column::Attempts, Expr::col(outbox::Column::Attempts).add(1))
            .col_expr(outbox::Column::LastError, Expr::value(error))
            .col_expr(outbox::Column::UpdatedAt, Expr::value(now()))
            .filter(outbox::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Puts a dead write back in the queue, due now, keeping its attempt count and last error. Returns the row
    /// (unchanged if it was not dead), or `None` if there is no write with that id.
    pub async fn replay_write(&self, id: i64) -> Result<Option<outbox::Model>, StoreError> {
        let at = now();
        outbox::Entity::update_many()
            .col_expr(outbox::Column::Status, Expr::value(OutboxStatus::Pending))
            .col_expr(outbox::Column::NextAttemptAt, Expr::value(at))
            .col_expr(outbox::Column::UpdatedAt, Expr::value(at))
            .filter(outbox::Column::Id.eq(id))
            .filter(outbox::Column::Status.eq(OutboxStatus::Dead))
            .exec(&self.db)
            .await?;
        self.write_by_id(id).await
    }

    /// How many of the connection's writes are pending and dead.
    pub async fn outbox_counts(&self, connection: &str) -> Result<OutboxCounts, StoreError> {
        let rows: Vec<(OutboxStatus, i64)> = outbox::Entity::find()
            .select_only()
            .column(outbox::Column::Status)
            .column_as(Expr::col(outbox::Column::Id).count(), "n")
            .filter(outbox::Column::ConnectionId.eq(connection))
            .filter(outbox::Column::Status.is_in([OutboxStatus::Pending, OutboxStatus::Dead]))
            .group_by(outbox::Column::Status)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut counts = OutboxCounts::default();
        for (status, n) in rows {
            match status {
                OutboxStatus::Pending => counts.pending = n as u64,
                OutboxStatus::Dead => counts.dead = n as u64,
                OutboxStatus::Done => {}
            }
        }
        Ok(counts)
    }
}
