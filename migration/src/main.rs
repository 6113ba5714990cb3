//! Runs the crmsyncd migrations from the command line (`up`, `down`, `status`, `fresh`, ...); reads DATABASE_URL.

use sea_orm_migration::prelude::*;

#[tokio::main]
async fn main() {
    cli::run_cli(migration::Migrator).await;
}
