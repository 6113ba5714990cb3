//! `records`: one row per CRM record per connection and object, with the record's fields as JSON.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A CRM record as last synced. Applications read this table; `change_seq` lets them follow it incrementally
/// (`WHERE change_seq > ? ORDER BY change_seq`) without ever missing a change.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "records")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The configured connection the record came from.
    #[sea_orm(column_type = "Text")]
    pub connection_id: String,
    /// The CRM object type (`contacts`, `res.partner`, ...).
    #[sea_orm(column_type = "Text")]
    pub object: String,
    /// The CRM's id for the record.
    #[sea_orm(column_type = "Text")]
    pub remote_id: String,
    /// The record's fields as the CRM returned them.
    #[sea_orm(column_type = "JsonBinary")]
    pub data: Json,
    /// Hex SHA-256 of the canonical JSON of `data`; an unchanged re-read is recognised by it and skipped.
    #[sea_orm(column_type = "Text")]
    pub content_hash: String,
    /// The CRM's "modified" timestamp of the stored version. A stored row never goes back to an older one.
    pub remote_updated_at: DateTimeUtc,
    /// True once the record has disappeared from the CRM (found by a delete sweep or a deletion event).
    pub deleted: bool,
    /// When crmsyncd last wrote this row.
    pub synced_at: DateTimeUtc,
    /// Position of this row's latest change in the global commit order (see `change_counter`).
    #[sea_orm(unique)]
    pub change_seq: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
