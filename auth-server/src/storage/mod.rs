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

pub mod api_keys;
pub mod audit;
mod connect;
mod entities;
pub mod erasure;
mod error;
pub mod events;
pub mod imports;
pub mod keys;
pub mod listen;
mod memberships;
pub mod mfa;
mod migrate;
mod org_entities;
pub mod organizations;
mod pool;
pub mod resets;
pub mod retention;
pub mod sequencer;
pub mod sessions;
mod signals;
mod staged;
pub mod throttle;
pub mod users;
mod values;
pub mod verifications;

use std::{
    ops::Deref,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend,
    IsolationLevel, TransactionTrait,
};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use error::{StorageError, StorageResult};
pub use events::{EventKind, EventSubject, StoredEvent};
pub use pool::{DbTls, PoolSettings, TlsMode, backend_of, describe_target};
use signals::EventSignals;
pub use signals::{CommitSignal, CommitWaiter, RecentEvents};
pub use users::{PasswordHash, UserRecord};

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
    let word = sql.split_whitespace().next().unwrap_or("");
    for op in ["select", "insert", "update", "delete"] {
        if word.eq_ignore_ascii_case(op) {
            return op;
        }
    }
    "other"
}

/// How long [`Store::close`] waits for connections still in use.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The database handle shared by the whole server. `Debug` shows the backend only (the URL
/// may hold a password).
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    observer: Arc<std::sync::OnceLock<DbObserver>>,
    /// The URL, for the dedicated connection that holds the migration lock.
    url: String,
    write_lock: Option<Arc<Mutex<()>>>,
    signals: EventSignals,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// What is left once a write transaction committed: release the SQLite writer lock, then wake
/// whoever reads what it did to the outbox: the event tailers (sequenced events) or the
/// sequencer (staged events).
struct AfterCommit {
    _guard: Option<OwnedMutexGuard<()>>,
    events: u8,
    signals: EventSignals,
}

impl AfterCommit {
    fn committed(self) {
        let Self {
            _guard,
            events,
            signals,
        } = self;
        drop(_guard);
        match events {
            STAGED_EVENTS => signals.staged.notify(),
            SEQUENCED_EVENTS => signals.committed.notify(),
            HANDED_OVER_EVENTS => signals.committed.notify_handed_over(),
            _ => {}
        }
    }
}

/// What a write transaction did to the outbox.
const NO_EVENTS: u8 = 0;
const STAGED_EVENTS: u8 = 1;
const SEQUENCED_EVENTS: u8 = 2;
/// Sequenced events that are also in [`RecentEvents`]: the tailers need not read them.
const HANDED_OVER_EVENTS: u8 = 3;

/// A write transaction (plus, on SQLite, the in-process writer lock until it ends). Knows
/// whether it appended events, and when it commits them wakes the event tailers (sequenced
/// events) or the sequencer (staged events).
pub struct WriteTx {
    tx: DatabaseTransaction,
    _guard: Option<OwnedMutexGuard<()>>,
    events: AtomicU8,
    signals: EventSignals,
}

impl Deref for WriteTx {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl WriteTx {
    /// Commits the transaction; if it appended events, wakes this process's event tailers
    /// (sequenced events) or its sequencer (staged events).
    pub async fn commit(self) -> StorageResult<()> {
        let (tx, after) = self.split();
        tx.commit().await?;
        after.committed();
        Ok(())
    }

    /// For a transaction whose `COMMIT` ran as a statement (SQLite, [`Self::commit_with_events`]):
    /// drops the now empty transaction, then finishes as `commit` does.
    fn committed(self) {
        let (tx, after) = self.split();
        drop(tx);
        after.committed();
    }

    /// The transaction, and what is left to do once it committed.
    fn split(self) -> (DatabaseTransaction, AfterCommit) {
        let Self {
            tx,
            _guard,
            events,
            signals,
        } = self;
        let after = AfterCommit {
            _guard,
            events: events.into_inner(),
            signals,
        };
        (tx, after)
    }

    /// Rolls the transaction back now (dropping it also rolls back, but only when its pooled
    /// connection is next used: until then its locks stay held).
    pub async fn rollback(self) -> StorageResult<()> {
        self.tx.rollback().await?;
        Ok(())
    }

    /// Records that this transaction wrote sequenced events (`user_events` rows).
    pub(crate) fn mark_sequenced(&self) {
        self.events.store(SEQUENCED_EVENTS, Ordering::Relaxed);
    }

    /// Hands the sequenced events this transaction wrote, as they will read once committed, to
    /// this process's tailers (see [`signals`]). Only for a transaction that wrote no other
    /// events; call it after `COMMIT` and before [`Self::committed`] lets the next writer in.
    pub(crate) fn hand_over(&self, events: Vec<Arc<StoredEvent>>) {
        self.signals.recent.push(events);
        let _ = self.events.compare_exchange(
            NO_EVENTS,
            HANDED_OVER_EVENTS,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Records that this transaction staged events (`staged_events` rows).
    pub(crate) fn mark_staged(&self) {
        // Never downgrade: sequenced events must wake the tailers.
        let _ = self.events.compare_exchange(
            NO_EVENTS,
            STAGED_EVENTS,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
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

impl Store {
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
            events: AtomicU8::new(NO_EVENTS),
            signals: self.signals.clone(),
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

    /// Signalled after every commit of sequenced events in this process.
    pub fn events_committed(&self) -> CommitSignal {
        self.signals.committed.clone()
    }

    /// The events this process committed with their sequences, for its tailers.
    pub fn recent_events(&self) -> Arc<RecentEvents> {
        Arc::clone(&self.signals.recent)
    }

    /// Signalled after every commit of staged events in this process (the sequencer's wake-up).
    pub fn events_staged(&self) -> CommitSignal {
        self.signals.staged.clone()
    }

    /// Whether writers stage their events for the sequencer (PostgreSQL, MySQL/MariaDB) rather
    /// than numbering them in their own transaction (SQLite, which has one writer anyway).
    pub fn stages_events(&self) -> bool {
        self.backend() != DbBackend::Sqlite
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

    /// Round trip to the database (health checks).
    pub async fn ping(&self) -> StorageResult<()> {
        self.db
            .execute_unprepared("SELECT 1")
            .await
            .map_err(StorageError::Unavailable)?;
        Ok(())
    }

    /// Numbers the events still staged (so that a command which wrote events and exits leaves
    /// none for a server's poll to find), then closes the pool. A failure to number them only
    /// delays them: every server numbers staged events at start and on its poll.
    ///
    /// Closing waits for every checked-out connection, at most [`CLOSE_WAIT`]: a connection
    /// whose query was cancelled mid-flight (a task stopped at shutdown) can stay checked out
    /// for good while the driver waits for an answer the server never sends (seen with MariaDB:
    /// a test's server stop hung for 19 minutes), and shutting down must not hang on it.
    pub async fn close(self) {
        if let Err(error) = sequencer::drain(&self).await {
            tracing::warn!(error.message = %error, "staged events not numbered before closing; a server numbers them");
        }
        if tokio::time::timeout(CLOSE_WAIT, self.db.close())
            .await
            .is_err()
        {
            tracing::warn!(
                wait_secs = CLOSE_WAIT.as_secs(),
                "database connections still in use at close; leaving them to the process exit"
            );
        }
    }
}
