//! Schema migrations for crmsyncd, one per file. The daemon runs [`Migrator::up`] at start; `main.rs` makes the
//! crate runnable on its own (`DATABASE_URL=... cargo run -p crmsyncd-migration -- status`), as sea-orm-cli
//! expects. Every migration must work unchanged on SQLite and PostgreSQL.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_create_records;
mod m20261123_000002_create_change_counter;
mod m20261123_000003_create_cursors;
mod m20261123_000004_create_webhook_events;
mod m20261123_000005_create_outbox;
mod m20261201_000006_create_credentials;

/// All migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_records::Migration),
            Box::new(m20261123_000002_create_change_counter::Migration),
            Box::new(m20261123_000003_create_cursors::Migration),
            Box::new(m20261123_000004_create_webhook_events::Migration),
            Box::new(m20261123_000005_create_outbox::Migration),
            Box::new(m20261201_000006_create_credentials::Migration),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm_migration::sea_orm::{ConnectOptions, Database};

    #[test]
    fn migration_names_are_unique_and_in_order() {
        let names: Vec<String> = Migrator::migrations().iter().map(|m| m.name().to_owned()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    const TABLES: [&str; 6] = [
        "records",
        "change_counter",
        "cursors",
        "webhook_events",
        "outbox",
        "credentials",
    ];

    #[tokio::test]
    async fn migrations_go_up_down_and_up_again_on_sqlite() {
        // One connection: every connection to `sqlite::memory:` would otherwise be its own empty database.
        let mut options = ConnectOptions::new("sqlite::memory:");
        options.max_connections(1).sqlx_logging(false);
        let db = Database::connect(options).await.unwrap();

        Migrator::up(&db, None).await.unwrap();
        let manager = SchemaManager::new(&db);
        for table in TABLES {
            assert!(manager.has_table(table).await.unwrap(), "{table} exists after up");
        }
        Migrator::down(&db, None).await.unwrap();
        for table in TABLES {
            assert!(!manager.has_table(table).await.unwrap(), "{table} is gone after down");
        }
        Migrator::up(&db, None).await.unwrap();
        assert!(Migrator::get_pending_migrations(&db).await.unwrap().is_empty());
    }
}
