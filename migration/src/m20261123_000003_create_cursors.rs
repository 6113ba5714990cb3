//! `cursors`: one row per (connection, object) stream: the pull cursor and the pass/sweep timestamps.

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
                    .table(Cursors::Table)
                    .if_not_exists()
                    .col(text(Cursors::ConnectionId))
                    .col(text(Cursors::Object))
                    .col(timestamp_with_time_zone_null(Cursors::CursorTs))
                    .col(text_null(Cursors::CursorId))
                    .col(timestamp_with_time_zone_null(Cursors::AdvancedAt))
                    .col(timestamp_with_time_zone_null(Cursors::PassStartedAt))
                    .col(timestamp_with_time_zone_null(Cursors::SweptAt))
                    .primary_key(Index::create().col(Cursors::ConnectionId).col(Cursors::Object))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Cursors::Table).to_owned()).await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[derive(DeriveIden)]
enum Cursors {
    Table,
    ConnectionId,
    Object,
    CursorTs,
    CursorId,
    AdvancedAt,
    PassStartedAt,
    SweptAt,
}
