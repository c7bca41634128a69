//! Storage: the sea-orm connection (SQLite, PostgreSQL or MySQL/MariaDB), transactions, and one
//! repository module per table group. No tonic types here; callers get domain records and
//! [`StorageError`].
//!
//! Writes go through [`Store::begin_write`]. On SQLite it also takes an in-process lock, because
//! SQLite has a single writer and a deferred transaction that reads and then writes can fail with
//! `SQLITE_BUSY` instead of waiting; serializing writers in process makes them simply queue.
//! On MySQL a write transaction runs at READ COMMITTED, as PostgreSQL's do by default: reads see
//! the latest committed rows and InnoDB takes no gap locks, so the row-locking reads
//! (`SELECT … FOR UPDATE`) behave on both servers alike.

pub mod audit;
mod entities;
pub mod events;
pub mod keys;
pub mod listen;
pub mod mfa;
mod migrate;
mod pool;
pub mod resets;
pub mod sessions;
pub mod throttle;
pub mod users;

use std::{
    ops::Deref,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sea_orm::{
    AccessMode, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, IsolationLevel, SqlErr, TransactionTrait,
};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

pub use events::{EventKind, StoredEvent};
pub use pool::{DbTls, PoolSettings, TlsMode, backend_of, describe_target};
pub use users::{PasswordHash, UserRecord};

/// Storage failures, by cause.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached.
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),
    /// A unique constraint refused the write.
    #[error("unique constraint violated")]
    Duplicate(#[source] DbErr),
    /// Any other database failure.
    #[error("database error")]
    Db(#[source] DbErr),
    /// The database server could not be reached at start (the address is the URL's host part,
    /// never its password).
    #[error("cannot reach the database at {at}")]
    Unreachable {
        /// `host:port/database`.
        at: String,
        /// The cause.
        #[source]
        source: DbErr,
    },
    /// TLS to the database failed; says which certificate and why (never the password).
    #[error("TLS to the database at {at} failed: {detail}")]
    Tls {
        /// `host:port/database`.
        at: String,
        /// What was wrong.
        detail: String,
    },
    /// The URL names no backend this server speaks, or has parameters it cannot use.
    #[error("{0}")]
    BadUrl(String),
    /// The PostgreSQL database named in the URL does not exist.
    #[error(
        "database {0:?} does not exist on that server: create it (for example `createdb {0}`) or point AUTH_DATABASE_URL at one that does"
    )]
    MissingDatabase(String),
    /// A row holds data this version cannot read.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<DbErr> for StorageError {
    fn from(error: DbErr) -> Self {
        if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
            return StorageError::Duplicate(error);
        }
        if is_connection_error(&error) {
            return StorageError::Unavailable(error);
        }
        StorageError::Db(error)
    }
}

/// Whether the error is about reaching the database rather than about the statement: no
/// connection to be had, or one lost mid-query (reset, EOF, TLS failure, server shutting down,
/// the pool closed). The caller may retry these elsewhere or later.
fn is_connection_error(error: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx::Error as Sqlx};
    let runtime = match error {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => return true,
        DbErr::Exec(e) | DbErr::Query(e) => e,
        _ => return false,
    };
    let RuntimeErr::SqlxError(sqlx) = runtime else {
        return false;
    };
    match &**sqlx {
        Sqlx::Io(_)
        | Sqlx::Tls(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed
        | Sqlx::Protocol(_) => true,
        Sqlx::Database(db) => db.code().is_some_and(|code| {
            // Connection exceptions (SQLSTATE class 08, both servers); PostgreSQL's
            // administrator shutdown / crash shutdown / cannot connect now (57P01-03).
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// Result of storage calls.
pub type StorageResult<T> = Result<T, StorageError>;

/// One timed database step, for metrics.
#[derive(Debug, Clone, Copy)]
pub enum DbTiming {
    /// A statement ran (on a connection it already had).
    Query {
        /// `select`, `insert`, `update`, `delete` or `other`.
        operation: &'static str,
        /// How long it took.
        elapsed: Duration,
        /// Whether it failed.
        failed: bool,
    },
    /// A transaction started: the wait for a pooled connection plus `BEGIN`.
    Begin {
        /// How long it took.
        elapsed: Duration,
    },
}

/// Receives every [`DbTiming`] of a store.
pub type DbObserver = Arc<dyn Fn(DbTiming) + Send + Sync>;

/// The statement kind of an SQL text, by its first word.
fn operation_of(sql: &str) -> &'static str {
    let word = sql.trim_start().split_whitespace().next().unwrap_or("");
    for op in ["select", "insert", "update", "delete"] {
        if word.eq_ignore_ascii_case(op) {
            return op;
        }
    }
    "other"
}

/// The database handle shared by the whole server. `Debug` shows the backend only (the URL
/// may hold a password).
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    observer: Arc<std::sync::OnceLock<DbObserver>>,
    /// The URL, for the dedicated connection that holds the migration lock.
    url: String,
    write_lock: Option<Arc<Mutex<()>>>,
    events_committed: Arc<Notify>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// A write transaction (plus, on SQLite, the in-process writer lock until it ends). Knows
/// whether it appended events, and wakes the event tailer when it commits them.
pub struct WriteTx {
    tx: DatabaseTransaction,
    _guard: Option<OwnedMutexGuard<()>>,
    has_events: AtomicBool,
    events_committed: Arc<Notify>,
}

impl Deref for WriteTx {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl WriteTx {
    /// Commits the transaction; if it appended events, wakes this process's event tailer.
    pub async fn commit(self) -> StorageResult<()> {
        let has_events = self.has_events.load(Ordering::Relaxed);
        let signal = Arc::clone(&self.events_committed);
        self.tx.commit().await?;
        if has_events {
            signal.notify_one();
        }
        Ok(())
    }

    pub(crate) fn mark_events(&self) {
        self.has_events.store(true, Ordering::Relaxed);
    }
}

/// Per database URL, the SQLite writer lock and the "events committed" signal are shared by
/// every `Store` of this process (a server, a CLI command or a test opening its own pool), so
/// writers still queue in process and every commit wakes the event tailer at once.
fn process_wide(url: &str, is_sqlite: bool) -> (Option<Arc<Mutex<()>>>, Arc<Notify>) {
    type Shared = (Arc<Mutex<()>>, Arc<Notify>);
    static SHARED: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, Shared>>,
    > = std::sync::LazyLock::new(Default::default);
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    let (lock, signal) = shared
        .entry(url.to_owned())
        .or_insert_with(|| (Arc::new(Mutex::new(())), Arc::new(Notify::new())));
    (is_sqlite.then(|| Arc::clone(lock)), Arc::clone(signal))
}

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

/// Inserts `model` unless a row with the same key exists; whether it inserted. One statement on
/// SQLite and PostgreSQL (`ON CONFLICT (key) DO NOTHING`). MySQL has no such clause (`INSERT
/// IGNORE` would also swallow foreign-key and data errors, and `ON DUPLICATE KEY UPDATE k = k`
/// reports a found row as affected): there the plain insert runs and a duplicate-key error,
/// which rolls back only that statement on InnoDB, means "exists".
pub(crate) async fn insert_if_absent<A>(
    conn: &impl ConnectionTrait,
    model: A,
    key: <A::Entity as sea_orm::EntityTrait>::Column,
) -> StorageResult<bool>
where
    A: sea_orm::ActiveModelTrait + Send,
{
    use sea_orm::sea_query::OnConflict;
    let insert = <A::Entity as sea_orm::EntityTrait>::insert(model);
    if conn.get_database_backend() == DbBackend::MySql {
        return match insert.exec_without_returning(conn).await {
            Ok(rows) => Ok(rows == 1),
            Err(error) => match StorageError::from(error) {
                StorageError::Duplicate(_) => Ok(false),
                other => Err(other),
            },
        };
    }
    let rows = insert
        .on_conflict(OnConflict::column(key).do_nothing().to_owned())
        .exec_without_returning(conn)
        .await?;
    Ok(rows == 1)
}

/// What a login records about the client.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// Remote address.
    pub addr: Option<String>,
    /// `user-agent` metadata.
    pub user_agent: Option<String>,
}

/// `s` cut to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
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
    match StorageError::from(error) {
        StorageError::Unavailable(source) | StorageError::Db(source) => StorageError::Unreachable {
            at: describe_target(url),
            source,
        },
        other => other,
    }
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
        let mut db = match Database::connect(options.clone()).await {
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
        }
        let (write_lock, events_committed) = process_wide(url, is_sqlite);
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
            events_committed,
        })
    }

    /// Sends every query and transaction start of this store (and its clones) to `observer`;
    /// only the first observer set is kept.
    pub fn observe(&self, observer: DbObserver) {
        let _ = self.observer.set(observer);
    }

    fn observe_begin(&self, started: std::time::Instant) {
        if let Some(observe) = self.observer.get() {
            observe(DbTiming::Begin {
                elapsed: started.elapsed(),
            });
        }
    }

    /// The connection, for reads.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The backend in use.
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Starts a write transaction.
    pub async fn begin_write(&self) -> StorageResult<WriteTx> {
        let guard = match &self.write_lock {
            Some(lock) => Some(Arc::clone(lock).lock_owned().await),
            None => None,
        };
        let started = std::time::Instant::now();
        let tx = if self.backend() == DbBackend::MySql {
            self.db
                .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
                .await?
        } else {
            self.db.begin().await?
        };
        self.observe_begin(started);
        Ok(WriteTx {
            tx,
            _guard: guard,
            has_events: AtomicBool::new(false),
            events_committed: Arc::clone(&self.events_committed),
        })
    }

    /// Starts a read-only transaction that sees one consistent snapshot (REPEATABLE READ on
    /// PostgreSQL and MySQL; a WAL read transaction on SQLite).
    pub async fn begin_snapshot(&self) -> StorageResult<DatabaseTransaction> {
        let started = std::time::Instant::now();
        let tx = match self.backend() {
            DbBackend::Postgres | DbBackend::MySql => {
                self.db
                    .begin_with_config(
                        Some(IsolationLevel::RepeatableRead),
                        Some(AccessMode::ReadOnly),
                    )
                    .await?
            }
            _ => self.db.begin().await?,
        };
        self.observe_begin(started);
        Ok(tx)
    }

    /// Signalled after every commit that appended events in this process.
    pub fn events_committed(&self) -> Arc<Notify> {
        Arc::clone(&self.events_committed)
    }

    /// Connections in the pool and how many of them are idle.
    pub fn pool_usage(&self) -> (u32, u32) {
        let idle = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        match self.backend() {
            DbBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                (pool.size(), idle(pool.num_idle()))
            }
            DbBackend::MySql => {
                let pool = self.db.get_mysql_connection_pool();
                (pool.size(), idle(pool.num_idle()))
            }
            _ => {
                let pool = self.db.get_sqlite_connection_pool();
                (pool.size(), idle(pool.num_idle()))
            }
        }
    }

    /// Whether writes here take row locks (`SELECT … FOR UPDATE`): PostgreSQL and MySQL. SQLite
    /// has one writer at a time and needs none.
    pub fn locks_rows(conn: &impl ConnectionTrait) -> bool {
        conn.get_database_backend() != DbBackend::Sqlite
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

    /// Round trip to the database (health checks).
    pub async fn ping(&self) -> StorageResult<()> {
        self.db
            .execute_unprepared("SELECT 1")
            .await
            .map_err(StorageError::Unavailable)?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(self) {
        let _ = self.db.close().await;
    }
}
