//! `cursors`: the pull position of each (connection, object) stream, plus when its last full pass started and
//! when it was last swept for deletions.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One stream's progress. `cursor_ts`/`cursor_id` are both set or both null.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "cursors")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub connection_id: String,
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub object: String,
    /// Modified timestamp of the last record committed locally.
    pub cursor_ts: Option<DateTimeUtc>,
    /// Id of the last record committed locally (ties on `cursor_ts` are broken by id).
    #[sea_orm(column_type = "Text", nullable)]
    pub cursor_id: Option<String>,
    /// When the cursor last moved forward.
    pub advanced_at: Option<DateTimeUtc>,
    /// When the last *complete* pull pass started; everything the CRM changed before it is stored locally, so
    /// sync lag is measured from here.
    pub pass_started_at: Option<DateTimeUtc>,
    /// When the last delete sweep finished.
    pub swept_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
