//! Storage: the sea-orm connection (SQLite or PostgreSQL), transactions, and one repository
//! module per table group. No tonic types here; callers get domain records and
//! [`StorageError`].
//!
//! Writes go through [`Store::begin_write`]. On SQLite it also takes an in-process lock, because
//! SQLite has a single writer and a deferred transaction that reads and then writes can fail with
//! `SQLITE_BUSY` instead of waiting; serializing writers in process makes them simply queue.

pub mod audit;
mod entities;
pub mod events;
pub mod keys;
pub mod mfa;
mod migrate;
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
    AccessMode, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction,
    DbBackend, DbErr, IsolationLevel, SqlErr, TransactionTrait,
};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

pub use events::{EventKind, StoredEvent};
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
        match error {
            DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => StorageError::Unavailable(error),
            other => StorageError::Db(other),
        }
    }
}

/// Result of storage calls.
pub type StorageResult<T> = Result<T, StorageError>;

/// The database handle shared by the whole server. `Debug` shows the backend only (the URL
/// may hold a password).
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
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

/// PostgreSQL's "database does not exist" (SQLSTATE 3D000) at connect.
fn is_missing_database(error: &DbErr) -> bool {
    let DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)) = error else {
        return false;
    };
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "3D000")
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

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`); a SQLite file is created if missing.
    pub async fn connect(url: &str, max_connections: u32) -> StorageResult<Self> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(max_connections)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            .sqlx_logging(false);
        let is_sqlite = url.starts_with("sqlite:");
        if is_sqlite {
            options.map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    .create_if_missing(true)
            });
        }
        let db = Database::connect(options).await.map_err(|error| {
            if is_missing_database(&error) {
                let name = url.rsplit('/').next().unwrap_or_default();
                let name = name.split('?').next().unwrap_or_default();
                StorageError::MissingDatabase(name.to_owned())
            } else {
                match StorageError::from(error) {
                    StorageError::Unavailable(source) => StorageError::Unreachable {
                        at: url.rsplit('@').next().unwrap_or(url).to_owned(),
                        source,
                    },
                    other => other,
                }
            }
        })?;
        if is_sqlite {
            restrict_sqlite_files(url);
        }
        let (write_lock, events_committed) = process_wide(url, is_sqlite);
        Ok(Self {
            db,
            url: url.to_owned(),
            write_lock,
            events_committed,
        })
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
        let tx = self.db.begin().await?;
        Ok(WriteTx {
            tx,
            _guard: guard,
            has_events: AtomicBool::new(false),
            events_committed: Arc::clone(&self.events_committed),
        })
    }

    /// Starts a read-only transaction that sees one consistent snapshot (REPEATABLE READ on
    /// PostgreSQL; a WAL read transaction on SQLite).
    pub async fn begin_snapshot(&self) -> StorageResult<DatabaseTransaction> {
        let tx = match self.backend() {
            DbBackend::Postgres => {
                self.db
                    .begin_with_config(
                        Some(IsolationLevel::RepeatableRead),
                        Some(AccessMode::ReadOnly),
                    )
                    .await?
            }
            _ => self.db.begin().await?,
        };
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
            _ => {
                let pool = self.db.get_sqlite_connection_pool();
                (pool.size(), idle(pool.num_idle()))
            }
        }
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
