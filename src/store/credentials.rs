//! Sealed OAuth credentials, one row per connection. The store only keeps the opaque sealed text; sealing and
//! opening belong to `auth::vault`.

use crmsyncd_entities::credentials;
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ConnectionTrait, EntityTrait};

use super::{Store, StoreError, now};

impl Store {
    /// The connection's sealed credentials, if any were saved.
    pub async fn sealed_credentials(&self, connection: &str) -> Result<Option<String>, StoreError> {
        Ok(credentials::Entity::find_by_id(connection.to_owned())
            .one(&self.db)
            .await?
            .map(|row| row.sealed))
    }

    /// Replaces the connection's sealed credentials.
    pub async fn save_sealed_credentials(&self, connection: &str, sealed: &str) -> Result<(), StoreError> {
        let upsert = Query::insert()
            .into_table(credentials::Entity)
            .columns([
                credentials::Column::ConnectionId,
                credentials::Column::Sealed,
                credentials::Column::UpdatedAt,
            ])
            .values_panic([connection.into(), sealed.into(), now().into()])
            .on_conflict(
                OnConflict::column(credentials::Column::ConnectionId)
                    .update_columns([credentials::Column::Sealed, credentials::Column::UpdatedAt])
                    .to_owned(),
            )
            .to_owned();
        self.db.execute(&upsert).await?;
        Ok(())
    }
}
