//! `credentials`: a connection's OAuth tokens, sealed (encrypted and authenticated) with the credential key.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One connection's stored tokens.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "credentials")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub connection_id: String,
    /// base64(nonce || ciphertext) of the tokens as JSON; the connection id is the associated data, so a sealed
    /// value copied to another connection's row does not open.
    #[sea_orm(column_type = "Text")]
    pub sealed: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
