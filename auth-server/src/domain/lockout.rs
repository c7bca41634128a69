//! The failed-login lockout, per normalized email (known or not).
//!
//! `max_failures` wrong passwords or codes within `window` lock the email for `base_lock`;
//! every further lock doubles up to `max_lock`; the lock count decays after a day without
//! failures. A locked email answers exactly like a wrong password, without computing a hash,
//! and the attempt is audited. A success, an admin unlock, a password reset or a deletion
//! clears the email's state. The flags are `--lockout-*` (`config.rs`); the table is
//! `storage/throttle.rs` (queries only).

use std::time::Duration;

use serde_json::json;

use super::Accounts;
use crate::{
    audit_rollup::Occurrence,
    clock,
    error::AuthError,
    storage::{
        self, ClientInfo,
        audit::{AuditKind, AuditRecord, Outcome},
        throttle::ThrottleRow,
    },
};

/// Lockout rules.
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

/// A day without failures resets the lock count.
const DECAY: Duration = Duration::from_secs(24 * 3600);

impl LockoutPolicy {
    /// How long the lock after `previous_locks` earlier ones lasts.
    pub fn lock_duration(&self, previous_locks: u32) -> Duration {
        let factor = 1u32
            .checked_shl(Ord::min(previous_locks, 31))
            .unwrap_or(u32::MAX);
        self.base_lock.saturating_mul(factor).min(self.max_lock)
    }

    /// The state after one more failure at `now`, and the lock end if this failure locked.
    fn after_failure(&self, row: ThrottleRow, now: i64) -> (ThrottleRow, Option<i64>) {
        let mut next = row;
        if row.updated_at < now - clock::duration_millis(DECAY) {
            next.lock_count = 0;
        }
        if row.window_started_at <= now - clock::duration_millis(self.window) {
            next.failures = 0;
            next.window_started_at = now;
        }
        next.failures = next.failures.saturating_add(1);
        next.updated_at = now;
        // A negative count can only come from a corrupt row: treat it as none.
        let failures = u32::try_from(next.failures).unwrap_or(0);
        if self.max_failures == 0 || failures < self.max_failures {
            return (next, None);
        }
        let previous_locks = u32::try_from(next.lock_count).unwrap_or(0);
        let until = now.saturating_add(clock::duration_millis(self.lock_duration(previous_locks)));
        next.locked_until = Some(until);
        next.lock_count = next.lock_count.saturating_add(1);
        next.failures = 0;
        next.window_started_at = now;
        (next, Some(until))
    }
}

/// Whether the state locks the email at `now`.
fn is_locked_at(row: &ThrottleRow, now: i64) -> bool {
    row.locked_until.is_some_and(|until| until > now)
}

/// The lockout state an admin sees.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LockoutState {
    /// Lock end, while locked.
    pub locked_until: Option<i64>,
    /// Failures in the current window.
    pub failures: u32,
}

/// What the lockout says about an email before its password or code is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Throttle {
    /// Locked now: refuse without checking.
    Locked,
    /// Not locked, but failures are on record: a success clears them.
    Counting,
    /// Nothing on record: a success has nothing to clear (and skips the delete).
    Clear,
}

impl Accounts {
    /// Whether `email` is locked now; a locked attempt is audited (no hash is spent).
    pub(super) async fn check_throttle(
        &self,
        email: &str,
        subject: Option<&str>,
        client: &ClientInfo,
    ) -> Result<Throttle, AuthError> {
        let conn = self.d.store.conn();
        let Some(state) = storage::throttle::find_throttle(conn, email).await? else {
            return Ok(Throttle::Clear);
        };
        if !is_locked_at(&state, clock::now_millis()) {
            return Ok(Throttle::Counting);
        }
        // A flood against a locked email writes one record per minute with a count.
        let mut detail = serde_json::Map::new();
        detail.insert("email".into(), json!(email));
        detail.insert("locked_until".into(), json!(state.locked_until));
        self.d
            .audit_rollup
            .record(Occurrence {
                kind: AuditKind::LoginLocked,
                key: email,
                outcome: Outcome::Denied,
                subject,
                client,
                detail,
            })
            .await?;
        tracing::info!("login refused: email locked");
        Ok(Throttle::Locked)
    }

    /// Counts a failed password or code toward the email's lockout and audits it, in one
    /// small transaction of its own (on PostgreSQL the row lock makes concurrent failures
    /// count one after the other).
    pub(super) async fn record_failure(
        &self,
        email: &str,
        subject: Option<&str>,
        kind: AuditKind,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let now = clock::now_millis();
        let change = self.d.begin().await?;
        let row = storage::throttle::find_throttle_for_update(change.db(), email, now).await?;
        let (next, locked) = self.d.settings.lockout.after_failure(row, now);
        storage::throttle::update_throttle(change.db(), email, next).await?;
        let mut record = AuditRecord::new(kind, client)
            .outcome(Outcome::Failure)
            .detail(json!({ "email": email, "locked_until": locked }));
        if let Some(subject) = subject {
            record = record.subject(subject);
        }
        change.audit(record).await?;
        change.commit().await?;
        if let Some(until) = locked {
            self.d.metrics.lockout();
            tracing::warn!(locked_until = until, "email locked after repeated failures");
        }
        Ok(())
    }

    /// The email's lock and failure count now.
    pub(super) async fn lockout_state(&self, email: &str) -> Result<LockoutState, AuthError> {
        let row = storage::throttle::find_throttle(self.d.store.conn(), email).await?;
        let now = clock::now_millis();
        Ok(row.map_or_else(LockoutState::default, |row| LockoutState {
            locked_until: row.locked_until.filter(|_| is_locked_at(&row, now)),
            failures: u32::try_from(row.failures).unwrap_or(0),
        }))
    }
}

/// Forgets the email's failures and lock in `db` (a success, an unlock, a reset, a deletion).
/// Whether there was anything to forget.
pub(super) async fn clear(
    db: &impl sea_orm::ConnectionTrait,
    email: &str,
) -> Result<bool, AuthError> {
    Ok(storage::throttle::delete_throttle(db, email).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 5,
            window: Duration::from_secs(900),
            base_lock: Duration::from_secs(60),
            max_lock: Duration::from_secs(3600),
        }
    }

    #[test]
    fn locks_double_up_to_the_maximum() {
        let policy = policy();
        let minutes: Vec<u64> = (0..8)
            .map(|n| policy.lock_duration(n).as_secs() / 60)
            .collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy.lock_duration(200).as_secs(), 3600);
    }

    #[test]
    fn the_fifth_failure_in_the_window_locks_and_the_window_restarts() {
        let policy = policy();
        let mut row = ThrottleRow {
            failures: 0,
            window_started_at: 0,
            locked_until: None,
            lock_count: 0,
            updated_at: 0,
        };
        for i in 1..=4 {
            let (next, locked) = policy.after_failure(row, i);
            assert_eq!(
                (next.failures, locked),
                (i32::try_from(i).unwrap_or(0), None)
            );
            row = next;
        }
        let (row, locked) = policy.after_failure(row, 5);
        assert_eq!(locked, Some(5 + 60_000));
        assert!(is_locked_at(&row, 6) && !is_locked_at(&row, 5 + 60_000));
        assert_eq!((row.failures, row.lock_count), (0, 1));
        // Outside the window the count starts again.
        let (row, _) = policy.after_failure(row, 5 + 900_001);
        assert_eq!(row.failures, 1);
    }
}
