//! Schema migrations, serialized across processes.
//!
//! Replicas and CLI commands that start together on a new or upgraded schema would otherwise
//! race: each reads "not applied" and runs the same DDL, and all but one crash (a duplicate
//! type, a column that already exists, `seaql_migrations` created twice). Every migration run
//! therefore holds a lock that only one process at a time can have:
//! - PostgreSQL: a session advisory lock (`pg_advisory_lock`) on a dedicated connection,
//!   released when the run ends (or the connection drops, if the process dies);
//! - MySQL/MariaDB: a named lock (`GET_LOCK`) on a dedicated connection, likewise;
//! - SQLite: an exclusive `flock` on `<database file>.migrate-lock` beside the database, released
//!   when the file is closed (also when the process dies).
//!
//! The second process waits, then finds everything applied and does nothing.

use std::{path::PathBuf, time::Duration};

use migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};

use super::{StorageError, StorageResult, Store};

/// The advisory lock key of auth-server's migrations (any constant other tools do not use).
const PG_MIGRATION_LOCK: i64 = 0x6175_7468_6d69_6772; // "authmigr"

/// The MySQL named lock of auth-server's migrations, and how long to wait for it (seconds).
const MYSQL_MIGRATION_LOCK: &str = "auth_server_migrations";
const MYSQL_LOCK_WAIT_SECS: u32 = 600;

/// Held while migrations run; dropping it releases the lock.
enum MigrationLock {
    Postgres(DatabaseConnection),
    MySql(DatabaseConnection),
    Sqlite(std::fs::File),
    None,
}

impl MigrationLock {
    async fn release(self) {
        match self {
            MigrationLock::Postgres(conn) => {
                let unlock = format!("SELECT pg_advisory_unlock({PG_MIGRATION_LOCK})");
                let _ = conn.execute_unprepared(&unlock).await;
                let _ = conn.close().await;
            }
            MigrationLock::MySql(conn) => {
                let unlock = format!("SELECT RELEASE_LOCK('{MYSQL_MIGRATION_LOCK}')");
                let _ = conn.execute_unprepared(&unlock).await;
                let _ = conn.close().await;
            }
            MigrationLock::Sqlite(file) => drop(file),
            MigrationLock::None => {}
        }
    }
}

/// The database file of a SQLite URL (`sqlite://path?…` or `sqlite:path`); `None` for an
/// in-memory database.
pub(super) fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.split('&').any(|p| p == "mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

fn lock_error(what: &str, error: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(DbErr::Custom(format!("migration lock: {what}: {error}")))
}

impl Store {
    /// One connection of its own, so the lock and the unlock run in the same session.
    async fn lock_connection(&self) -> StorageResult<DatabaseConnection> {
        let mut options = ConnectOptions::new(self.url.clone());
        options
            .max_connections(1)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(5))
            .sqlx_logging(false);
        Ok(Database::connect(options).await?)
    }

    async fn lock_migrations(&self) -> StorageResult<MigrationLock> {
        match self.backend() {
            DbBackend::Postgres => {
                let conn = self.lock_connection().await?;
                conn.execute_unprepared(&format!("SELECT pg_advisory_lock({PG_MIGRATION_LOCK})"))
                    .await?;
                Ok(MigrationLock::Postgres(conn))
            }
            DbBackend::MySql => {
                let conn = self.lock_connection().await?;
                let row = conn
                    .query_one_raw(sea_orm::Statement::from_string(
                        DbBackend::MySql,
                        format!(
                            "SELECT GET_LOCK('{MYSQL_MIGRATION_LOCK}', {MYSQL_LOCK_WAIT_SECS})"
                        ),
                    ))
                    .await?;
                let got: Option<i64> = match row {
                    Some(row) => row.try_get_by_index(0)?,
                    None => None,
                };
                if got != Some(1) {
                    let _ = conn.close().await;
                    return Err(lock_error(
                        MYSQL_MIGRATION_LOCK,
                        format!("not granted within {MYSQL_LOCK_WAIT_SECS} s"),
                    ));
                }
                Ok(MigrationLock::MySql(conn))
            }
            DbBackend::Sqlite => {
                let Some(db_file) = sqlite_file(&self.url) else {
                    return Ok(MigrationLock::None);
                };
                let mut name = db_file.into_os_string();
                name.push(".migrate-lock");
                let path = PathBuf::from(name);
                tokio::task::spawn_blocking(move || {
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&path)
                        .map_err(|e| lock_error(&path.display().to_string(), e))?;
                    file.lock()
                        .map_err(|e| lock_error(&path.display().to_string(), e))?;
                    Ok(MigrationLock::Sqlite(file))
                })
                .await
                .map_err(|e| lock_error("lock task", e))?
            }
            _ => Ok(MigrationLock::None),
        }
    }

    /// Applies every pending migration (one process at a time).
    pub async fn migrate_up(&self) -> StorageResult<()> {
        let lock = self.lock_migrations().await?;
        let result = Migrator::up(&self.db, None).await;
        lock.release().await;
        result?;
        Ok(())
    }

    /// Rolls back `steps` migrations (one process at a time).
    pub async fn migrate_down(&self, steps: u32) -> StorageResult<()> {
        let lock = self.lock_migrations().await?;
        let result = Migrator::down(&self.db, Some(steps)).await;
        lock.release().await;
        result?;
        Ok(())
    }

    /// Every migration with whether it is applied.
    pub async fn migration_status(&self) -> StorageResult<Vec<(String, bool)>> {
        let migrations = Migrator::get_migration_with_status(&self.db).await?;
        Ok(migrations
            .iter()
            .map(|m| {
                let applied = matches!(m.status(), migrations::MigrationStatus::Applied);
                (m.name().to_owned(), applied)
            })
            .collect())
    }

    /// Whether every migration is applied.
    pub async fn is_migrated(&self) -> StorageResult<bool> {
        Ok(self
            .migration_status()
            .await?
            .iter()
            .all(|(_, applied)| *applied))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_file("sqlite://./auth-data/auth.db?mode=rwc"),
            Some(PathBuf::from("./auth-data/auth.db"))
        );
        assert_eq!(
            sqlite_file("sqlite:/tmp/a.db"),
            Some(PathBuf::from("/tmp/a.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://x.db?mode=memory"), None);
        assert_eq!(sqlite_file("postgres://db/auth"), None);
    }
}
