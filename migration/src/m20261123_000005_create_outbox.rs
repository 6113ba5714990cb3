//! `outbox`: writes to make in a CRM, unique on their idempotency key.

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
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Outbox::Id))
                    .col(text(Outbox::IdempotencyKey))
                    .col(text(Outbox::ConnectionId))
                    .col(text(Outbox::Object))
                    .col(text_null(Outbox::MatchKey))
                    .col(text_null(Outbox::MatchValue))
                    .col(json_binary(Outbox::Properties))
                    .col(text(Outbox::RequestHash))
                    .col(text(Outbox::Status).default("pending"))
                    .col(integer(Outbox::Attempts).default(0))
                    .col(timestamp_with_time_zone(Outbox::NextAttemptAt))
                    .col(text_null(Outbox::LastError))
                    .col(text_null(Outbox::RemoteId))
                    .col(timestamp_with_time_zone(Outbox::CreatedAt))
                    .col(timestamp_with_time_zone(Outbox::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // A key is applied at most once: the conflict target of the enqueue.
        manager
            .create_index(
                Index::create()
                    .name("ux_outbox_idempotency_key")
                    .table(Outbox::Table)
                    .col(Outbox::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The actor's "what is due" query.
        manager
            .create_index(
                Index::create()
                    .name("ix_outbox_connection_status_next_attempt")
                    .table(Outbox::Table)
                    .col(Outbox::ConnectionId)
                    .col(Outbox::Status)
                    .col(Outbox::NextAttemptAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Outbox::Table).to_owned()).await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    IdempotencyKey,
    ConnectionId,
    Object,
    MatchKey,
    MatchValue,
    Properties,
    RequestHash,
    Status,
    Attempts,
    NextAttemptAt,
    LastError,
    RemoteId,
    CreatedAt,
    UpdatedAt,
}
