//! `change_counter`: one row (`id` = 1) from which every insert or change of a `records` row takes its
//! `change_seq`.
//!
//! Why one row and not a sequence: applications read `records` with `WHERE change_seq > ?` and must never miss a
//! row. With a sequence, values are handed out at statement time but become visible at commit time, so seq 10 can
//! commit before seq 9 and a reader that has already seen 10 skips 9 forever. A writer that instead takes its
//! values with `UPDATE change_counter SET value = value + n WHERE id = 1 RETURNING value` inside its own
//! transaction holds that row's lock until it commits; the next writer blocks on the lock and gets larger values
//! only after the first one is visible. So change_seq order is commit order. The price is that record writers
//! serialise on this row for the tail of their transaction, which is short (one upsert and a commit).

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
                    .table(ChangeCounter::Table)
                    .if_not_exists()
                    .col(integer(ChangeCounter::Id).primary_key())
                    .col(big_integer(ChangeCounter::Value).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(ChangeCounter::Table)
                    .columns([ChangeCounter::Id, ChangeCounter::Value])
                    .values_panic([1.into(), 0i64.into()])
                    .on_conflict(OnConflict::column(ChangeCounter::Id).do_nothing().to_owned())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ChangeCounter::Table).to_owned())
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[derive(DeriveIden)]
enum ChangeCounter {
    Table,
    Id,
    Value,
}
