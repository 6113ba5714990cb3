//! `webhook_events`: the webhook inbox, unique on (connection, CRM event id) so a redelivery is a no-op.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookEvents::Table)
                    .if_not_exists()
                    .col(big_pk_auto(WebhookEvents::Id))
                    .col(text(WebhookEvents::ConnectionId))
                    .col(text(WebhookEvents::EventId))
                    .col(text_null(WebhookEvents::Object))
                    .col(json_binary(WebhookEvents::Headers))
                    .col(json_binary(WebhookEvents::Body))
                    .col(text(WebhookEvents::Status).default("received"))
                    .col(integer(WebhookEvents::Attempts).default(0))
                    .col(text_null(WebhookEvents::LastError))
                    .col(timestamp_with_time_zone(WebhookEvents::ReceivedAt))
                    .col(timestamp_with_time_zone_null(WebhookEvents::ProcessedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_webhook_events_connection_event")
                    .table(WebhookEvents::Table)
                    .col(WebhookEvents::ConnectionId)
                    .col(WebhookEvents::EventId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The actor's "what is left to process" query.
        manager
            .create_index(
                Index::create()
                    .name("ix_webhook_events_connection_status")
                    .table(WebhookEvents::Table)
                    .col(WebhookEvents::ConnectionId)
                    .col(WebhookEvents::Status)
                    .col(WebhookEvents::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WebhookEvents::Table).to_owned())
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    Id,
    ConnectionId,
    EventId,
    Object,
    Headers,
    Body,
    Status,
    Attempts,
    LastError,
    ReceivedAt,
    ProcessedAt,
}
