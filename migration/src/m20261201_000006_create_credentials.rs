//! `credentials`: OAuth tokens a connection was given by its CRM (rotated refresh tokens, the current access
//! token), sealed with the daemon's credential key. One row per connection.

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
                    .table(Credentials::Table)
                    .if_not_exists()
                    .col(text(Credentials::ConnectionId).primary_key())
                    .col(text(Credentials::Sealed))
                    .col(timestamp_with_time_zone(Credentials::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Credentials::Table).to_owned())
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[derive(DeriveIden)]
enum Credentials {
    Table,
    ConnectionId,
    Sealed,
    UpdatedAt,
}
