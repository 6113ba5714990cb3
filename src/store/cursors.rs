//! Pull cursors and the per-stream pass and sweep timestamps. The cursor itself is written by
//! [`Store::apply_page`](super::Store::apply_page), in the same transaction as the page it follows.

use chrono::{DateTime, Utc};
use crmsyncd_entities::cursors;
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ConnectionTrait, EntityTrait};

use super::{Store, StoreError, db_time};
use crate::model::Cursor;

impl Store {
    /// The stream's cursor: the position of the last record committed locally, or `None` before the first page.
    pub async fn cursor(&self, connection: &str, object: &str) -> Result<Option<Cursor>, StoreError> {
        Ok(self
            .cursor_row(connection, object)
            .await?
            .and_then(|row| match (row.cursor_ts, row.cursor_id) {
                (Some(ts), Some(id)) => Some(Cursor { ts, id }),
                _ => None,
            }))
    }

    /// The stream's whole `cursors` row. It exists once anything was written for the stream; its cursor columns
    /// may still be null (e.g. only webhooks so far).
    pub async fn cursor_row(&self, connection: &str, object: &str) -> Result<Option<cursors::Model>, StoreError> {
        Ok(cursors::Entity::find_by_id((connection.to_owned(), object.to_owned()))
            .one(&self.db)
            .await?)
    }

    /// Records that a full pull pass, started at `pass_started_at`, reached the end: everything the CRM changed
    /// before that moment is stored locally.
    pub async fn pass_completed(
        &self,
        connection: &str,
        object: &str,
        pass_started_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.set_stream_time(connection, object, cursors::Column::PassStartedAt, pass_started_at)
            .await
    }

    /// Records that a delete sweep of the stream finished at `at`.
    pub async fn swept(&self, connection: &str, object: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.set_stream_time(connection, object, cursors::Column::SweptAt, at)
            .await
    }

    async fn set_stream_time(
        &self,
        connection: &str,
        object: &str,
        column: cursors::Column,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let upsert = Query::insert()
            .into_table(cursors::Entity)
            .columns([cursors::Column::ConnectionId, cursors::Column::Object, column])
            .values_panic([connection.into(), object.into(), db_time(at).into()])
            .on_conflict(
                OnConflict::columns([cursors::Column::ConnectionId, cursors::Column::Object])
                    .update_column(column)
                    .to_owned(),
            )
            .to_owned();
        self.db.execute(&upsert).await?;
        Ok(())
    }
}
