//! `change_counter`: the single row (`id` = 1) that hands out `records.change_seq` values.
//!
//! A writer reserves its values with `UPDATE change_counter SET value = value + n WHERE id = 1 RETURNING value`
//! inside the transaction that writes the records. The row lock it takes is held until that transaction commits,
//! so the next writer gets larger values only after this one is visible: change_seq order is commit order. A
//! database sequence would not give that (seq 10 can commit before seq 9, and a reader already past 10 would
//! never see 9).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// The counter row. There is exactly one, with `id` = 1, created by the migration.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "change_counter")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    /// The last `change_seq` handed out.
    pub value: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
