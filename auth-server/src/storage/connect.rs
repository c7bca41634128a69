//! Opening a store: the pool, a missing MySQL database created, SQLite files restricted to their
//! owner, and a failed first connection explained (TLS, refusal, unreachable, missing database).

use std::{sync::Arc, time::Duration};

use sea_orm::{ConnectionTrait, Database, DbBackend, DbErr};

use super::{
    DbObserver, DbTiming, DbTls, PoolSettings, StorageError, StorageResult, Store, backend_of,
    describe_target, migrate, operation_of, pool, signals::process_wide,
};

/// Makes the SQLite database file and its WAL and shared-memory files readable by the owner
/// only (they hold password hashes and MFA secrets); SQLite creates them with the umask.
fn restrict_sqlite_files(url: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(file) = migrate::sqlite_file(url) else {
        return;
    };
    for suffix in ["", "-wal", "-shm"] {
        let mut path = file.clone().into_os_string();
        path.push(suffix);
        if let Err(error) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %std::path::Path::new(&path).display(), error.message = %error, "cannot restrict the database file to its owner");
        }
    }
}

/// "Database does not exist" at connect: PostgreSQL's SQLSTATE 3D000, MySQL's error 1049
/// (SQLSTATE 42000 "Unknown database").
fn is_missing_database(error: &DbErr) -> bool {
    let DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)) = error else {
        return false;
    };
    let Some(db) = e.as_database_error() else {
        return false;
    };
    db.code().is_some_and(|code| code == "3D000")
        || db
            .try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|my| my.number() == 1049)
}

/// The database name of a server URL (the path without its query).
fn database_name(url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Creates the MySQL database a URL names (utf8mb4 with a binary collation, so that emails,
/// token hashes and ids compare byte for byte as on the other backends).
async fn create_mysql_database(url: &str) -> StorageResult<()> {
    let name = database_name(url);
    if name.is_empty() || name.contains('`') || name.contains('\0') {
        return Err(StorageError::BadUrl(format!(
            "cannot create a MySQL database named {name:?}"
        )));
    }
    let (server, query) = match url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (url, None),
    };
    let base = server.rsplit_once('/').map_or(server, |(base, _)| base);
    let server_url = match query {
        Some(query) => format!("{base}/?{query}"),
        None => format!("{base}/"),
    };
    let admin = Database::connect(PoolSettings::with_max(1).apply(&server_url)).await?;
    let created = admin
        .execute_unprepared(&format!(
            "CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        ))
        .await;
    admin.close().await.ok();
    created?;
    tracing::info!(database = %name, "created the MySQL database");
    Ok(())
}

/// The error of a failed first connection: a missing database, a TLS problem (which certificate
/// and why) or an unreachable server, naming `host:port/database` and never the password.
fn connect_error(url: &str, error: DbErr) -> StorageError {
    if is_missing_database(&error) {
        return StorageError::MissingDatabase(database_name(url));
    }
    if let Some(detail) = pool::describe_tls_failure(url, &error) {
        return StorageError::Tls {
            at: describe_target(url),
            detail,
        };
    }
    if let DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)) = &error
        && let Some(db) = e.as_database_error()
        && db.code().is_some_and(|code| code.starts_with("28"))
    {
        // SQLSTATE class 28, invalid authorization: a pg_hba.conf rule (for example one that
        // demands TLS: "no encryption"), a wrong password, MySQL's "access denied".
        let mut reason = db.message().to_owned();
        if reason.contains("no encryption") {
            reason.push_str(" (the server demands TLS: set sslmode=require or stronger)");
        }
        return StorageError::Refused {
            at: describe_target(url),
            reason,
        };
    }
    match StorageError::from(error) {
        StorageError::Unavailable(source) | StorageError::Db(source) => StorageError::Unreachable {
            at: describe_target(url),
            source,
        },
        other => other,
    }
}

/// Connects; on SQLite retries for up to 10 s while the file is locked. Switching a new file to
/// WAL needs an exclusive lock and SQLite answers `database is locked` at once (no busy wait)
/// when another process holds one, for example a second server migrating the same new file.
async fn connect_retrying_locked(
    options: &sea_orm::ConnectOptions,
    is_sqlite: bool,
) -> Result<sea_orm::DatabaseConnection, sea_orm::DbErr> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Database::connect(options.clone()).await {
            Err(error)
                if is_sqlite
                    && error.to_string().contains("database is locked")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// SQLite's compile-time options (`PRAGMA compile_options`), for example `ENABLE_QPSG`.
async fn sqlite_compile_options(
    db: &sea_orm::DatabaseConnection,
) -> Result<Vec<String>, sea_orm::DbErr> {
    db.query_all_raw(sea_orm::Statement::from_string(
        DbBackend::Sqlite,
        "PRAGMA compile_options",
    ))
    .await?
    .iter()
    .map(|row| row.try_get_by_index::<String>(0))
    .collect()
}

/// Warns once per process if the bundled SQLite was built without the query planner stability
/// guarantee (the workspace's `.cargo/config.toml` sets it): then every query with a `LIMIT` is
/// compiled again on each run, which costs about a tenth of the CPU of a busy writer.
async fn warn_without_stable_plans(db: &sea_orm::DatabaseConnection) {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    if CHECKED.is_completed() {
        return;
    }
    let stable = sqlite_compile_options(db)
        .await
        .is_ok_and(|options| options.iter().any(|o| o == "ENABLE_QPSG"));
    CHECKED.call_once(|| {
        if !stable {
            tracing::warn!(
                "this build's SQLite lacks ENABLE_QPSG: queries with a LIMIT are compiled again \
                 on every run; build inside the workspace, whose .cargo/config.toml sets \
                 LIBSQLITE3_FLAGS"
            );
        }
    });
}

impl Store {
    /// Connects to `url` (`sqlite://…`, `postgres://…` or `mysql://…`) with a pool of at most
    /// `max_connections` and otherwise default settings.
    pub async fn connect(url: &str, max_connections: u32) -> StorageResult<Self> {
        Self::connect_with(url, &PoolSettings::with_max(max_connections)).await
    }

    /// Connects with `pool` settings. A SQLite file is created if missing, and so is a MySQL
    /// database (if the user may); a missing PostgreSQL database is an error that says so.
    pub async fn connect_with(url: &str, pool: &PoolSettings) -> StorageResult<Self> {
        let backend = backend_of(url).ok_or_else(|| {
            StorageError::BadUrl(
                "the database URL must start with sqlite:, postgres:, postgresql: or mysql:".into(),
            )
        })?;
        if backend != DbBackend::Sqlite {
            DbTls::from_url(url).map_err(|e| StorageError::BadUrl(e.to_string()))?;
        }
        let is_sqlite = backend == DbBackend::Sqlite;
        let mut options = pool.apply(url);
        if is_sqlite {
            options.map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    .create_if_missing(true)
            });
        }
        let mut db = match connect_retrying_locked(&options, is_sqlite).await {
            Ok(db) => db,
            Err(error) if backend == DbBackend::MySql && is_missing_database(&error) => {
                create_mysql_database(url).await?;
                Database::connect(options)
                    .await
                    .map_err(|error| connect_error(url, error))?
            }
            Err(error) => return Err(connect_error(url, error)),
        };
        if is_sqlite {
            restrict_sqlite_files(url);
            warn_without_stable_plans(&db).await;
        }
        let (write_lock, signals) = process_wide(url, is_sqlite);
        let observer = Arc::new(std::sync::OnceLock::<DbObserver>::new());
        let callback_observer = Arc::clone(&observer);
        db.set_metric_callback(move |info| {
            if let Some(observe) = callback_observer.get() {
                observe(DbTiming::Query {
                    operation: operation_of(&info.statement.sql),
                    elapsed: info.elapsed,
                    failed: info.failed,
                });
            }
        });
        Ok(Self {
            db,
            observer,
            url: url.to_owned(),
            write_lock,
            signals,
        })
    }

    /// SQLite's compile-time options (`PRAGMA compile_options`); empty on the other backends.
    pub async fn sqlite_compile_options(&self) -> StorageResult<Vec<String>> {
        if self.backend() != DbBackend::Sqlite {
            return Ok(Vec::new());
        }
        Ok(sqlite_compile_options(&self.db).await?)
    }

    /// The backend's name and the server's version, for `/readyz` and `migrate status`
    /// (for example `PostgreSQL 15.19`, `MariaDB 10.11.19`, `SQLite 3.46.0`).
    pub async fn server_version(&self) -> StorageResult<String> {
        let (sql, name) = match self.backend() {
            DbBackend::Postgres => ("SHOW server_version", "PostgreSQL"),
            DbBackend::MySql => ("SELECT VERSION()", "MySQL"),
            _ => ("SELECT sqlite_version()", "SQLite"),
        };
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_string(self.backend(), sql))
            .await?
            .ok_or_else(|| StorageError::Corrupt("no server version".into()))?;
        let version: String = row.try_get_by_index(0)?;
        // MariaDB reports itself as such (`10.11.19-MariaDB-0+deb12u1`).
        let (name, version) = match version.split_once("-MariaDB") {
            Some((number, _)) => ("MariaDB", number.to_owned()),
            None => (
                name,
                version.split_whitespace().next().unwrap_or("").to_owned(),
            ),
        };
        Ok(format!("{name} {version}"))
    }
}
