//! Schema migrations of the identity service, for sea-orm-migration.
//!
//! Every schema change is one module here, with `up` and `down`; `Migrator` lists them in
//! order. `auth-server migrate up|down|status` runs them, and `auth-server serve` applies the
//! pending ones on start. The same migrations run on SQLite, PostgreSQL and MySQL/MariaDB.

use sea_orm_migration::prelude::*;
pub use sea_orm_migration::{MigrationStatus, MigratorTrait};

mod m20261126_000001_core;
mod m20261126_000002_protection;
mod m20261126_000003_signing_keys;
mod m20261130_000004_external_ids;
mod m20261130_000005_api_keys;
mod m20261130_000006_organizations;
mod m20261130_000007_last_login;
mod m20261130_000008_email_verifications;
mod m20261201_000009_lifecycle;
mod m20261202_000010_staged_events;
mod m20261203_000011_lean_outbox;

/// Runs the migrations in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_core::Migration),
            Box::new(m20261126_000002_protection::Migration),
            Box::new(m20261126_000003_signing_keys::Migration),
            Box::new(m20261130_000004_external_ids::Migration),
            Box::new(m20261130_000005_api_keys::Migration),
            Box::new(m20261130_000006_organizations::Migration),
            Box::new(m20261130_000007_last_login::Migration),
            Box::new(m20261130_000008_email_verifications::Migration),
            Box::new(m20261201_000009_lifecycle::Migration),
            Box::new(m20261202_000010_staged_events::Migration),
            Box::new(m20261203_000011_lean_outbox::Migration),
        ]
    }
}

/// Creates a table. On MySQL/MariaDB the table is InnoDB (row locks, transactions, foreign keys)
/// with utf8mb4 text and a binary collation, whatever the server's or database's defaults: emails,
/// ids and token hashes then compare byte for byte, as on SQLite and PostgreSQL (a default
/// case-insensitive collation would make `A@x` and `a@x` one unique key and `LIKE` ignore case).
pub(crate) async fn create_table(
    manager: &SchemaManager<'_>,
    mut table: TableCreateStatement,
) -> Result<(), DbErr> {
    if manager.get_database_backend() == sea_orm_migration::sea_orm::DbBackend::MySql {
        table
            .engine("InnoDB")
            .character_set("utf8mb4")
            .collate("utf8mb4_bin");
    }
    manager.create_table(table).await
}
