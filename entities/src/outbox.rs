//! `outbox`: writes an application asked crmsyncd to make in a CRM, each under an idempotency key.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Where a write is in its life. Stored as the lowercase word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "Text")]
#[serde(rename_all = "lowercase")]
pub enum OutboxStatus {
    /// Waiting for its `next_attempt_at`.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Applied; `remote_id` is the CRM's id of the written record.
    #[sea_orm(string_value = "done")]
    Done,
    /// Failed permanently; an operator can inspect and replay it.
    #[sea_orm(string_value = "dead")]
    Dead,
}

/// One requested write. `idempotency_key` is unique: a key is applied at most once.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(column_type = "Text", unique)]
    pub idempotency_key: String,
    #[sea_orm(column_type = "Text")]
    pub connection_id: String,
    #[sea_orm(column_type = "Text")]
    pub object: String,
    /// The unique property to upsert by (e.g. `email`), if any.
    #[sea_orm(column_type = "Text", nullable)]
    pub match_key: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub match_value: Option<String>,
    /// The fields to write.
    #[sea_orm(column_type = "JsonBinary")]
    pub properties: Json,
    /// Hex SHA-256 over connection, object, match and properties: tells a retried request ("same key, same body")
    /// from a misuse of the key ("same key, different body").
    #[sea_orm(column_type = "Text")]
    pub request_hash: String,
    pub status: OutboxStatus,
    /// How many attempts failed.
    pub attempts: i32,
    pub next_attempt_at: DateTimeUtc,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub remote_id: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
