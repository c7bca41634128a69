//! The `login_throttle` table: failed-login counts and locks per normalized email (queries
//! only; the lockout rules are in `domain/lockout.rs`).

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait as _,
    QueryFilter, QuerySelect,
};

use super::{StorageError, StorageResult, entities::login_throttle};

/// The stored failure count and lock of one email. The rules that move it live in
/// `domain/lockout.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRow {
    /// Failures in the current window.
    pub failures: i32,
    /// Start of the counting window (unix ms).
    pub window_started_at: i64,
    /// Locked until (unix ms), if a lock was set.
    pub locked_until: Option<i64>,
    /// Locks so far (the next lock lasts longer).
    pub lock_count: i32,
    /// Last change (unix ms).
    pub updated_at: i64,
}

impl From<login_throttle::Model> for ThrottleRow {
    fn from(m: login_throttle::Model) -> Self {
        Self {
            failures: m.failures,
            window_started_at: m.window_started_at,
            locked_until: m.locked_until,
            lock_count: m.lock_count,
            updated_at: m.updated_at,
        }
    }
}

/// The row of `email`, if it ever failed.
pub async fn find_throttle(
    conn: &impl ConnectionTrait,
    email: &str,
) -> StorageResult<Option<ThrottleRow>> {
    Ok(login_throttle::Entity::find_by_id(email.to_owned())
        .one(conn)
        .await?
        .map(ThrottleRow::from))
}

/// The row of `email`, created empty at `now` if missing, locked for the rest of the caller's
/// transaction on PostgreSQL (so concurrent failures are counted one after the other).
pub async fn find_throttle_for_update(
    conn: &impl ConnectionTrait,
    email: &str,
    now: i64,
) -> StorageResult<ThrottleRow> {
    super::insert_if_absent(
        conn,
        login_throttle::ActiveModel {
            email: Set(email.to_owned()),
            failures: Set(0),
            window_started_at: Set(now),
            locked_until: Set(None),
            lock_count: Set(0),
            updated_at: Set(now),
        },
        login_throttle::Column::Email,
    )
    .await?;
    let mut query = login_throttle::Entity::find_by_id(email.to_owned());
    if super::Store::locks_rows(conn) {
        query = query.lock_exclusive();
    }
    query
        .one(conn)
        .await?
        .map(ThrottleRow::from)
        .ok_or_else(|| StorageError::Corrupt("login_throttle row vanished".into()))
}

/// Stores the row of `email`.
pub async fn update_throttle(
    conn: &impl ConnectionTrait,
    email: &str,
    row: ThrottleRow,
) -> StorageResult<()> {
    login_throttle::ActiveModel {
        email: Set(email.to_owned()),
        failures: Set(row.failures),
        window_started_at: Set(row.window_started_at),
        locked_until: Set(row.locked_until),
        lock_count: Set(row.lock_count),
        updated_at: Set(row.updated_at),
    }
    .update(conn)
    .await?;
    Ok(())
}

/// Forgets `email`'s failures and lock (a success, an unlock or a reset). Whether there was
/// anything to forget.
pub async fn delete_throttle(conn: &impl ConnectionTrait, email: &str) -> StorageResult<bool> {
    let result = login_throttle::Entity::delete_many()
        .filter(login_throttle::Column::Email.eq(email))
        .exec(conn)
        .await?;
    Ok(result.rows_affected > 0)
}

/// Deletes rows untouched since `before` whose lock has ended (housekeeping).
pub async fn delete_stale_throttles(
    conn: &impl ConnectionTrait,
    before: i64,
    now: i64,
) -> StorageResult<u64> {
    let result = login_throttle::Entity::delete_many()
        .filter(login_throttle::Column::UpdatedAt.lt(before))
        .filter(
            login_throttle::Column::LockedUntil
                .is_null()
                .or(login_throttle::Column::LockedUntil.lt(now)),
        )
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}
