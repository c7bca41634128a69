//! Failed-login counting and lockout per normalized email (known or not).

use std::time::Duration;

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait as _,
    QueryFilter, QuerySelect, sea_query::OnConflict,
};

use super::{StorageError, StorageResult, entities::login_throttle};

/// Lockout rules: `max_failures` in `window` lock the email for `base_lock`, doubling with
/// every further lock up to `max_lock`. The lock count decays after a day without failures.
#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    /// Failures within the window that trigger a lock (0 disables lockout).
    pub max_failures: u32,
    /// The counting window.
    pub window: Duration,
    /// First lock duration.
    pub base_lock: Duration,
    /// Longest lock.
    pub max_lock: Duration,
}

impl LockoutPolicy {
    /// How long the lock after `previous_locks` earlier ones lasts.
    pub fn lock_duration(&self, previous_locks: u32) -> Duration {
        let factor = 1u32
            .checked_shl(Ord::min(previous_locks, 31))
            .unwrap_or(u32::MAX);
        self.base_lock.saturating_mul(factor).min(self.max_lock)
    }
}

/// The throttle state of one email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleState {
    /// Failures in the current window.
    pub failures: u32,
    /// Locked until (unix ms), if a lock was set.
    pub locked_until: Option<i64>,
}

impl ThrottleState {
    /// Whether the email is locked at `now`.
    pub fn is_locked(&self, now: i64) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }
}

const DECAY: i64 = 24 * 3600 * 1000;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The state of `email`, if it ever failed.
pub async fn find_throttle(
    conn: &impl ConnectionTrait,
    email: &str,
) -> StorageResult<Option<ThrottleState>> {
    Ok(login_throttle::Entity::find_by_id(email.to_owned())
        .one(conn)
        .await?
        .map(|m| ThrottleState {
            failures: u32::try_from(m.failures).unwrap_or(0),
            locked_until: m.locked_until,
        }))
}

/// Counts one failure of `email` (in the caller's transaction; on PostgreSQL the row stays
/// locked until it ends, so concurrent failures all count). Returns the lock end if this
/// failure locked the email.
pub async fn record_failure(
    conn: &impl ConnectionTrait,
    email: &str,
    now: i64,
    policy: &LockoutPolicy,
) -> StorageResult<Option<i64>> {
    login_throttle::Entity::insert(login_throttle::ActiveModel {
        email: Set(email.to_owned()),
        failures: Set(0),
        window_started_at: Set(now),
        locked_until: Set(None),
        lock_count: Set(0),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(login_throttle::Column::Email)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    let mut query = login_throttle::Entity::find_by_id(email.to_owned());
    if conn.get_database_backend() == sea_orm::DbBackend::Postgres {
        query = query.lock_exclusive();
    }
    let row = query
        .one(conn)
        .await?
        .ok_or_else(|| StorageError::Corrupt("login_throttle row vanished".into()))?;
    let mut failures = row.failures;
    let mut window_started_at = row.window_started_at;
    let mut lock_count = row.lock_count;
    let mut locked_until = row.locked_until;
    if row.updated_at < now - DECAY {
        lock_count = 0;
    }
    if window_started_at <= now - ms(policy.window) {
        failures = 0;
        window_started_at = now;
    }
    failures += 1;
    let mut newly_locked = None;
    if policy.max_failures > 0 && u32::try_from(failures).unwrap_or(u32::MAX) >= policy.max_failures
    {
        let until = now + ms(policy.lock_duration(u32::try_from(lock_count).unwrap_or(0)));
        locked_until = Some(until);
        newly_locked = Some(until);
        lock_count += 1;
        failures = 0;
        window_started_at = now;
    }
    let mut active: login_throttle::ActiveModel = row.into();
    active.failures = Set(failures);
    active.window_started_at = Set(window_started_at);
    active.locked_until = Set(locked_until);
    active.lock_count = Set(lock_count);
    active.updated_at = Set(now);
    active.update(conn).await?;
    Ok(newly_locked)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_double_up_to_the_maximum() {
        let policy = LockoutPolicy {
            max_failures: 5,
            window: Duration::from_secs(900),
            base_lock: Duration::from_secs(60),
            max_lock: Duration::from_secs(3600),
        };
        let minutes: Vec<u64> = (0..8)
            .map(|n| policy.lock_duration(n).as_secs() / 60)
            .collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy.lock_duration(200).as_secs(), 3600);
    }
}
