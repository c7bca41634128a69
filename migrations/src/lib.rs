//! Schema migrations of the identity service, for sea-orm-migration.
//!
//! Every schema change is one module here, with `up` and `down`; `Migrator` lists them in
//! order. `auth-server migrate up|down|status` runs them, and `auth-server serve` applies the
//! pending ones on start. The same migrations run on SQLite and PostgreSQL.

use sea_orm_migration::prelude::*;
pub use sea_orm_migration::{MigrationStatus, MigratorTrait};

mod m20261126_000001_core;
mod m20261126_000002_protection;
mod m20261126_000003_signing_keys;

/// Runs the migrations in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_core::Migration),
            Box::new(m20261126_000002_protection::Migration),
            Box::new(m20261126_000003_signing_keys::Migration),
        ]
    }
}
