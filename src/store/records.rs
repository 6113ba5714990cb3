//! Synced records: applying a page of CRM records (and its cursor) atomically, marking deletions, and reading
//! the table back in change order.
//!
//! Every insert or change of a `records` row takes a fresh `change_seq` from the single `change_counter` row,
//! reserved with `UPDATE ... SET value = value + n ... RETURNING value` in the writing transaction. The row lock
//! that UPDATE takes is held until commit, so a later writer gets larger values only after this one is visible:
//! change_seq order is commit order, and a reader of `WHERE change_seq > ?` never skips a row. (A database
//! sequence would hand out 9 and 10 at statement time and let 10 commit first.) The reservation is the last
//! step before the upsert, so writers serialise only for the upsert and the commit.
//!
//! Writers of one (connection, object) stream are serialised by locking that stream's `cursors` row first
//! (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's `BEGIN IMMEDIATE` already serialises all writers), so the
//! page's "what is stored now" read stays true until the upsert.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use crmsyncd_entities::{change_counter, cursors, records};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;

use super::{BATCH, Store, StoreError, content_hash, db_time, now};
use crate::model::{Cursor, RemoteRecord};

/// What [`Store::apply_page`] did with a page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageOutcome {
    /// Records seen for the first time.
    pub inserted: usize,
    /// Stored records whose content, timestamp or deleted flag changed.
    pub updated: usize,
    /// Records skipped: identical to the stored row, older than it, or repeated within the page.
    pub unchanged: usize,
}

/// A page record ready to store.
struct Incoming<'a> {
    remote_id: &'a str,
    updated_at: DateTime<Utc>,
    data: &'a Value,
    hash: String,
}

/// The stored state of a record, as far as deciding whether to write it goes.
struct Stored {
    hash: String,
    updated_at: DateTime<Utc>,
    deleted: bool,
}

impl Store {
    /// Stores one page of records and, if given, the cursor after it, in one transaction: a crash repeats the
    /// page, never skips it.
    ///
    /// A record is written (with a fresh `change_seq`, `deleted = false`, `synced_at = now`) when it is new, or
    /// when it differs from the stored row and is not older than it. A re-read of an unchanged record writes
    /// nothing, and a record never goes back to an older `remote_updated_at`. The cursor is stored only if it is
    /// past the stored one: a cursor never moves backwards.
    pub async fn apply_page(
        &self,
        connection: &str,
        object: &str,
        records: &[RemoteRecord],
        cursor: Option<&Cursor>,
    ) -> Result<PageOutcome, StoreError> {
        let incoming = dedupe(records);
        let mut outcome = PageOutcome {
            unchanged: records.len() - incoming.len(),
            ..Default::default()
        };

        let txn = self.begin_write().await?;
        let stream = lock_stream(&txn, connection, object).await?;
        let ids: Vec<&str> = incoming.iter().map(|r| r.remote_id).collect();
        let stored = stored_states(&txn, connection, object, &ids).await?;

        let mut writes = Vec::with_capacity(incoming.len());
        for record in &incoming {
            match stored.get(record.remote_id) {
                None => {
                    outcome.inserted += 1;
                    writes.push(record);
                }
                Some(s) if s.updated_at > record.updated_at => outcome.unchanged += 1,
                // A deletion at the same instant as this version happened after it.
                Some(s) if s.deleted && s.updated_at == record.updated_at => outcome.unchanged += 1,
                Some(s) if s.updated_at == record.updated_at && s.hash == record.hash && !s.deleted => {
                    outcome.unchanged += 1
                }
                Some(_) => {
                    outcome.updated += 1;
                    writes.push(record);
                }
            }
        }

        if !writes.is_empty() {
            let first_seq = reserve_change_seqs(&txn, writes.len()).await?;
            let synced_at = now();
            for (chunk_index, chunk) in writes.chunks(BATCH).enumerate() {
                let mut insert = Query::insert();
                insert.into_table(records::Entity).columns([
                    records::Column::ConnectionId,
                    records::Column::Object,
                    records::Column::RemoteId,
                    records::Column::Data,
                    records::Column::ContentHash,
                    records::Column::RemoteUpdatedAt,
                    records::Column::Deleted,
                    records::Column::SyncedAt,
                    records::Column::ChangeSeq,
                ]);
                for (i, record) in chunk.iter().enumerate() {
                    let seq = first_seq + (chunk_index * BATCH + i) as i64;
                    insert.values_panic([
                        connection.into(),
                        object.into(),
                        record.remote_id.into(),
                        record.data.clone().into(),
                        record.hash.clone().into(),
                        record.updated_at.into(),
                        false.into(),
                        synced_at.into(),
                        seq.into(),
                    ]);
                }
                insert.on_conflict(
                    OnConflict::columns([
                        records::Column::ConnectionId,
                        records::Column::Object,
                        records::Column::RemoteId,
                    ])
                    .update_columns([
                        records::Column::Data,
                        records::Column::ContentHash,
                        records::Column::RemoteUpdatedAt,
                        records::Column::Deleted,
                        records::Column::SyncedAt,
                        records::Column::ChangeSeq,
                    ])
                    // Belt and braces for "never back in time": the stream lock already makes the read above
                    // current, but the database has the last word.
                    .action_and_where(Expr::cust("records.remote_updated_at <= excluded.remote_updated_at"))
                    .to_owned(),
                );
                txn.execute(&insert).await?;
            }
        }

        if let Some(cursor) = cursor {
            advance_cursor(&txn, &stream, cursor).await?;
        }
        txn.commit().await?;
        self.records_inserted(outcome.inserted).await;
        Ok(outcome)
    }

    /// Records that the CRM deleted these records at `at`. A live row is flagged deleted (with a fresh
    /// `change_seq`) and its `remote_updated_at` moves up to `at`; an id with no row gets a tombstone (deleted,
    /// empty data, `remote_updated_at = at`). Either way a version of the record older than the deletion that
    /// arrives later (HubSpot's search index lags, every pull re-reads an overlap window) is recognised as older and
    /// skipped instead of bringing the record back; a newer version (a restore) still does. Returns how many live
    /// rows became deleted.
    pub async fn mark_deleted(
        &self,
        connection: &str,
        object: &str,
        remote_ids: &[String],
        at: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        if remote_ids.is_empty() {
            return Ok(0);
        }
        let at = db_time(at);
        let mut wanted: Vec<&str> = remote_ids.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let txn = self.begin_write().await?;
        lock_stream(&txn, connection, object).await?;
        let stored = stored_states(&txn, connection, object, &wanted).await?;
        let live: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|id| stored.get(*id).is_some_and(|s| !s.deleted))
            .collect();
        let unknown: Vec<&str> = wanted.iter().copied().filter(|id| !stored.contains_key(*id)).collect();
        if live.is_empty() && unknown.is_empty() {
            txn.commit().await?;
            return Ok(0);
        }

        let first_seq = reserve_change_seqs(&txn, live.len() + unknown.len()).await?;
        let synced_at = now();
        for (chunk_index, chunk) in live.chunks(BATCH).enumerate() {
            // One UPDATE per chunk, each row getting its own sequence number through a CASE on its id.
            let mut seq = None::<sea_orm::sea_query::CaseStatement>;
            for (i, id) in chunk.iter().enumerate() {
                let value = first_seq + (chunk_index * BATCH + i) as i64;
                let condition = Expr::col(records::Column::RemoteId).eq(*id);
                seq = Some(match seq {
                    None => Expr::case(condition, value),
                    Some(case) => case.case(condition, value),
                });
            }
            let seq = seq
                .expect("chunks are never empty")
                .finally(Expr::col(records::Column::ChangeSeq));
            let updated_at = Expr::case(Expr::col(records::Column::RemoteUpdatedAt).lt(at), at)
                .finally(Expr::col(records::Column::RemoteUpdatedAt));
            records::Entity::update_many()
                .col_expr(records::Column::Deleted, Expr::value(true))
                .col_expr(records::Column::SyncedAt, Expr::value(synced_at))
                .col_expr(records::Column::RemoteUpdatedAt, updated_at.into())
                .col_expr(records::Column::ChangeSeq, seq.into())
                .filter(records::Column::ConnectionId.eq(connection))
                .filter(records::Column::Object.eq(object))
                .filter(records::Column::RemoteId.is_in(chunk.iter().copied()))
                .filter(records::Column::Deleted.eq(false))
                .exec(&txn)
                .await?;
        }
        let empty = Value::Object(Default::default());
        let empty_hash = content_hash(&empty);
        let tombstone_seq = first_seq + live.len() as i64;
        for (chunk_index, chunk) in unknown.chunks(BATCH).enumerate() {
            let mut insert = Query::insert();
            insert.into_table(records::Entity).columns([
                records::Column::ConnectionId,
                records::Column::Object,
                records::Column::RemoteId,
                records::Column::Data,
                records::Column::ContentHash,
                records::Column::RemoteUpdatedAt,
                records::Column::Deleted,
                records::Column::SyncedAt,
                records::Column::ChangeSeq,
            ]);
            for (i, id) in chunk.iter().enumerate() {
                insert.values_panic([
                    connection.into(),
                    object.into(),
                    (*id).into(),
                    empty.clone().into(),
                    empty_hash.clone().into(),
                    at.into(),
                    true.into(),
                    synced_at.into(),
                    (tombstone_seq + (chunk_index * BATCH + i) as i64).into(),
                ]);
            }
            txn.execute(&insert).await?;
        }
        txn.commit().await?;
        self.records_inserted(unknown.len()).await;
        Ok(live.len())
    }

    /// The remote ids of the stream's records that are not deleted (what a delete sweep compares with the CRM).
    pub async fn live_remote_ids(&self, connection: &str, object: &str) -> Result<Vec<String>, StoreError> {
        Ok(records::Entity::find()
            .select_only()
            .column(records::Column::RemoteId)
            .filter(records::Column::ConnectionId.eq(connection))
            .filter(records::Column::Object.eq(object))
            .filter(records::Column::Deleted.eq(false))
            .order_by_asc(records::Column::Id)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// The earliest `synced_at` of the stream's live records, or `None` when it has none. Each of them was live in
    /// the CRM when it was read, so a deletion of any of them happened after this moment: a delete log read from
    /// here on cannot miss one.
    pub async fn oldest_live_sync(&self, connection: &str, object: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let oldest: Option<Option<DateTime<Utc>>> = records::Entity::find()
            .select_only()
            .column_as(records::Column::SyncedAt.min(), "oldest")
            .filter(records::Column::ConnectionId.eq(connection))
            .filter(records::Column::Object.eq(object))
            .filter(records::Column::Deleted.eq(false))
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(oldest.flatten())
    }

    /// One stored record, deleted or not.
    pub async fn record(
        &self,
        connection: &str,
        object: &str,
        remote_id: &str,
    ) -> Result<Option<records::Model>, StoreError> {
        Ok(records::Entity::find()
            .filter(records::Column::ConnectionId.eq(connection))
            .filter(records::Column::Object.eq(object))
            .filter(records::Column::RemoteId.eq(remote_id))
            .one(&self.db)
            .await?)
    }

    /// Every stored record of the stream, deleted ones included, in insertion order.
    pub async fn records(&self, connection: &str, object: &str) -> Result<Vec<records::Model>, StoreError> {
        Ok(records::Entity::find()
            .filter(records::Column::ConnectionId.eq(connection))
            .filter(records::Column::Object.eq(object))
            .order_by_asc(records::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Up to `limit` records (of every connection) whose latest change has `change_seq > after_seq`, in
    /// `change_seq` order. Polling with the last seen `change_seq` never misses a change.
    pub async fn changes_since(&self, after_seq: i64, limit: u64) -> Result<Vec<records::Model>, StoreError> {
        Ok(records::Entity::find()
            .filter(records::Column::ChangeSeq.gt(after_seq))
            .order_by_asc(records::Column::ChangeSeq)
            .limit(limit)
            .all(&self.db)
            .await?)
    }
}

/// The page's records, hashed and at database precision, one per remote id: a CRM page can repeat a record, and
/// PostgreSQL refuses to upsert one row twice in a statement. The newest version wins (the later one on a tie).
fn dedupe(records: &[RemoteRecord]) -> Vec<Incoming<'_>> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(records.len());
    let mut out: Vec<Incoming<'_>> = Vec::with_capacity(records.len());
    for record in records {
        let incoming = Incoming {
            remote_id: &record.remote_id,
            updated_at: db_time(record.updated_at),
            data: &record.data,
            hash: content_hash(&record.data),
        };
        match index.get(record.remote_id.as_str()) {
            Some(&i) if out[i].updated_at <= incoming.updated_at => out[i] = incoming,
            Some(_) => {}
            None => {
                index.insert(&record.remote_id, out.len());
                out.push(incoming);
            }
        }
    }
    out
}

/// Creates the stream's `cursors` row if needed and locks it for the rest of the transaction; returns it.
async fn lock_stream(txn: &DatabaseTransaction, connection: &str, object: &str) -> Result<cursors::Model, StoreError> {
    let insert = Query::insert()
        .into_table(cursors::Entity)
        .columns([cursors::Column::ConnectionId, cursors::Column::Object])
        .values_panic([connection.into(), object.into()])
        .on_conflict(
            OnConflict::columns([cursors::Column::ConnectionId, cursors::Column::Object])
                .do_nothing()
                .to_owned(),
        )
        .to_owned();
    txn.execute(&insert).await?;
    cursors::Entity::find_by_id((connection.to_owned(), object.to_owned()))
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or_else(|| StoreError::Inconsistent(format!("cursor row for {connection}/{object} vanished")))
}

/// The stored hash, timestamp and deleted flag of the given records that exist.
async fn stored_states(
    txn: &DatabaseTransaction,
    connection: &str,
    object: &str,
    remote_ids: &[&str],
) -> Result<HashMap<String, Stored>, StoreError> {
    let mut stored = HashMap::with_capacity(remote_ids.len());
    for chunk in remote_ids.chunks(BATCH) {
        let rows: Vec<(String, String, DateTime<Utc>, bool)> = records::Entity::find()
            .select_only()
            .columns([
                records::Column::RemoteId,
                records::Column::ContentHash,
                records::Column::RemoteUpdatedAt,
                records::Column::Deleted,
            ])
            .filter(records::Column::ConnectionId.eq(connection))
            .filter(records::Column::Object.eq(object))
            .filter(records::Column::RemoteId.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(txn)
            .await?;
        for (remote_id, hash, updated_at, deleted) in rows {
            stored.insert(
                remote_id,
                Stored {
                    hash,
                    updated_at,
                    deleted,
                },
            );
        }
    }
    Ok(stored)
}

/// Reserves `n` consecutive change_seq values and returns the first. Holds the counter row's lock until the
/// transaction ends; see the module docs for why that is the point.
async fn reserve_change_seqs(txn: &DatabaseTransaction, n: usize) -> Result<i64, StoreError> {
    let n = n as i64;
    let update = Query::update()
        .table(change_counter::Entity)
        .value(
            change_counter::Column::Value,
            Expr::col(change_counter::Column::Value).add(n),
        )
        .and_where(Expr::col(change_counter::Column::Id).eq(1))
        .returning_col(change_counter::Column::Value)
        .to_owned();
    let row = txn
        .query_one(&update)
        .await?
        .ok_or_else(|| StoreError::Inconsistent("the change_counter row is missing".into()))?;
    let last: i64 = row.try_get_by_index(0)?;
    Ok(last - n + 1)
}

/// Moves the stream's cursor to `cursor` if that is past the stored one.
async fn advance_cursor(txn: &DatabaseTransaction, stream: &cursors::Model, cursor: &Cursor) -> Result<(), StoreError> {
    let cursor = Cursor {
        ts: db_time(cursor.ts),
        id: cursor.id.clone(),
    };
    let stored = match (stream.cursor_ts, &stream.cursor_id) {
        (Some(ts), Some(id)) => Some(Cursor { ts, id: id.clone() }),
        _ => None,
    };
    if stored.is_some_and(|stored| cursor <= stored) {
        return Ok(());
    }
    cursors::Entity::update_many()
        .col_expr(cursors::Column::CursorTs, Expr::value(cursor.ts))
        .col_expr(cursors::Column::CursorId, Expr::value(cursor.id))
        .col_expr(cursors::Column::AdvancedAt, Expr::value(now()))
        .filter(cursors::Column::ConnectionId.eq(stream.connection_id.as_str()))
        .filter(cursors::Column::Object.eq(stream.object.as_str()))
        .exec(txn)
        .await?;
    Ok(())
}
