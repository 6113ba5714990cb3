//! `records`: the synced CRM records, unique per (connection, object, remote id), ordered by `change_seq`.

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
                    .table(Records::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Records::Id))
                    .col(text(Records::ConnectionId))
                    .col(text(Records::Object))
                    .col(text(Records::RemoteId))
                    .col(json_binary(Records::Data))
                    .col(text(Records::ContentHash))
                    .col(timestamp_with_time_zone(Records::RemoteUpdatedAt))
                    .col(boolean(Records::Deleted).default(false))
                    .col(timestamp_with_time_zone(Records::SyncedAt))
                    .col(big_integer(Records::ChangeSeq))
                    .to_owned(),
            )
            .await?;
        // The upsert's conflict target, and the lookup of a page's existing rows.
        manager
            .create_index(
                Index::create()
                    .name("ux_records_connection_object_remote_id")
                    .table(Records::Table)
                    .col(Records::ConnectionId)
                    .col(Records::Object)
                    .col(Records::RemoteId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Readers follow the table with `WHERE change_seq > ? ORDER BY change_seq`.
        manager
            .create_index(
                Index::create()
                    .name("ux_records_change_seq")
                    .table(Records::Table)
                    .col(Records::ChangeSeq)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Records::Table).to_owned()).await
    }

    fn use_transaction(&self) -> Option<bool> {
        // SQLite has transactional DDL too: a crash mid-migration must not leave half a schema.
        Some(true)
    }
}

#[derive(DeriveIden)]
enum Records {
    Table,
    Id,
    ConnectionId,
    Object,
    RemoteId,
    Data,
    ContentHash,
    RemoteUpdatedAt,
    Deleted,
    SyncedAt,
    ChangeSeq,
}
