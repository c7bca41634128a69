//! Storage failures, by cause, and which database errors mean "could not reach the database".

use sea_orm::{DbErr, SqlErr};

/// Storage failures, by cause.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached.
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),
    /// A unique constraint refused the write.
    #[error("unique constraint violated")]
    Duplicate(#[source] DbErr),
    /// The database aborted the transaction to break a deadlock or a lock wait, or for a
    /// serialization failure: nothing was written, and the same call may simply be retried.
    #[error("transaction aborted by a concurrent one")]
    Contention(#[source] DbErr),
    /// The database cannot store a text value (PostgreSQL and NUL: SQLSTATE 22021). The
    /// domain refuses such input first; this is the net under it.
    #[error("text the database cannot store")]
    InvalidText(#[source] DbErr),
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
    /// The server answered and refused the connection (authentication, `pg_hba.conf`, TLS
    /// required): its own words, which name the rule (never the password).
    #[error("the database at {at} refused the connection: {reason}")]
    Refused {
        /// `host:port/database`.
        at: String,
        /// The server's message.
        reason: String,
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
        if is_contention(&error) {
            return StorageError::Contention(error);
        }
        if sqlstate(&error).is_some_and(|code| code == "22021" || code == "22P05") {
            return StorageError::InvalidText(error);
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

/// The database's own error behind a failed statement, if the server answered one.
fn statement_error(error: &DbErr) -> Option<&(dyn sea_orm::sqlx::error::DatabaseError + 'static)> {
    let (DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
    | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e))) = error
    else {
        return None;
    };
    e.as_database_error()
}

/// The SQLSTATE of a statement's database error.
fn sqlstate(error: &DbErr) -> Option<String> {
    Some(statement_error(error)?.code()?.into_owned())
}

/// Deadlock victims, lock wait timeouts and serialization failures: PostgreSQL 40001/40P01,
/// MySQL 1213 (deadlock, SQLSTATE 40001) and 1205 (lock wait timeout).
fn is_contention(error: &DbErr) -> bool {
    sqlstate(error).is_some_and(|code| matches!(&*code, "40001" | "40P01"))
        || statement_error(error)
            .and_then(|db| db.try_downcast_ref::<sea_orm::sqlx::mysql::MySqlDatabaseError>())
            .is_some_and(|my| matches!(my.number(), 1205 | 1213))
}
