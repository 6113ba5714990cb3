//! `webhook_events`: the webhook inbox. An event is stored (and committed) before the webhook is answered, then
//! processed by the connection's actor.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Where an inbox event is in its life. Stored as the lowercase word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize)]
#[sea_orm(rs_type = "String", db_type = "Text")]
#[serde(rename_all = "lowercase")]
pub enum WebhookStatus {
    /// Stored, not yet handled.
    #[sea_orm(string_value = "received")]
    Received,
    /// Handled.
    #[sea_orm(string_value = "processed")]
    Processed,
    /// Handling failed; `last_error` says why.
    #[sea_orm(string_value = "failed")]
    Failed,
}

/// One event a CRM delivered. A redelivery of the same `event_id` on the same connection is not stored again.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "webhook_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(column_type = "Text")]
    pub connection_id: String,
    /// The CRM's id for the event.
    #[sea_orm(column_type = "Text")]
    pub event_id: String,
    /// The CRM object the event is about, when the CRM says.
    #[sea_orm(column_type = "Text", nullable)]
    pub object: Option<String>,
    /// The few request headers that matter later (never the signature secret).
    #[sea_orm(column_type = "JsonBinary")]
    pub headers: Json,
    /// This one event's JSON.
    #[sea_orm(column_type = "JsonBinary")]
    pub body: Json,
    pub status: WebhookStatus,
    /// How many times handling was attempted.
    pub attempts: i32,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    pub received_at: DateTimeUtc,
    pub processed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
