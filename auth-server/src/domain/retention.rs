//! Pruning: what housekeeping deletes and when. Ended sessions (with their refresh tokens) and
//! spent or expired refresh tokens after the session retention; audit records after the audit
//! retention; reset, invite, verification tokens and MFA challenges a day after they expired;
//! lockout rows a day after their last failure, once unlocked. Sessions and refresh tokens, the
//! tables that grow with every login and refresh, go in small batches, one short write
//! transaction each, so a login never waits long behind housekeeping.

use std::time::{Duration, Instant};

use super::Accounts;
use crate::{
    clock,
    error::AuthError,
    storage::{self, retention::Pruned},
};

/// How long things are kept.
#[derive(Debug, Clone, Copy)]
pub struct RetentionPolicy {
    /// Ended sessions and spent or expired refresh tokens.
    pub sessions: Duration,
    /// Audit records.
    pub audit: Duration,
    /// Rows per delete statement.
    pub batch: u64,
}

/// What one housekeeping run removed.
#[derive(Debug, Clone, Copy, Default)]
pub struct PruneReport {
    /// Sessions and refresh tokens.
    pub sessions: Pruned,
    /// Audit records.
    pub audit: u64,
    /// Expired reset, invite and verification tokens and MFA challenges.
    pub tokens: u64,
    /// Lockout rows.
    pub throttles: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl PruneReport {
    /// Rows removed in all.
    pub fn rows(&self) -> u64 {
        self.sessions.rows() + self.audit + self.tokens + self.throttles
    }
}

/// After a batch that took `since` until now, waits as long again (up to 100 ms): a backlog is
/// deleted at no more than half the database's write time, so logins and refreshes (on SQLite
/// they queue for the same write lock) get their turn between batches.
async fn pace(since: Instant) {
    tokio::time::sleep(since.elapsed().min(Duration::from_millis(100))).await;
}

/// Expired one-time tokens and quiet lockout rows are kept this long (for support questions).
const DAY: Duration = Duration::from_secs(24 * 3600);

impl Accounts {
    /// Runs every pruning rule once.
    pub async fn prune(&self, policy: RetentionPolicy) -> Result<PruneReport, AuthError> {
        let started = Instant::now();
        let cutoff = clock::millis_ago(policy.sessions);
        let mut report = PruneReport::default();
        // Ended sessions first: their tokens go with them, fewer for the second pass.
        loop {
            let started = Instant::now();
            let change = self.d.begin().await?;
            let batch =
                storage::retention::delete_ended_sessions(change.db(), cutoff, policy.batch)
                    .await?;
            change.commit().await?;
            report.sessions.sessions += batch.sessions;
            report.sessions.refresh_tokens += batch.refresh_tokens;
            if batch.sessions < policy.batch {
                break;
            }
            pace(started).await;
        }
        loop {
            let started = Instant::now();
            let change = self.d.begin().await?;
            let batch =
                storage::retention::delete_old_refresh_tokens(change.db(), cutoff, policy.batch)
                    .await?;
            change.commit().await?;
            report.sessions.refresh_tokens += batch.refresh_tokens;
            if batch.refresh_tokens < policy.batch {
                break;
            }
            pace(started).await;
        }
        // Through a write transaction like every other write, so on SQLite it queues behind
        // the writers of this process instead of making them fail "database is locked".
        let change = self.d.begin().await?;
        let conn = change.db();
        let day_ago = clock::millis_ago(DAY);
        report.audit =
            storage::audit::delete_audit_before(conn, clock::millis_ago(policy.audit)).await?;
        report.tokens = storage::resets::delete_expired_resets(conn, day_ago).await?
            + storage::verifications::delete_expired_verifications(conn, day_ago).await?
            + storage::mfa::delete_expired_challenges(conn, day_ago).await?;
        report.throttles =
            storage::throttle::delete_stale_throttles(conn, day_ago, clock::now_millis()).await?;
        change.commit().await?;
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

/// How long events are kept.
#[derive(Debug, Clone, Copy)]
pub struct EventRetention {
    /// Events older than this go...
    pub keep: Duration,
    /// ...unless a subscriber connected here has not received them yet, for this much longer.
    pub grace: Duration,
    /// Events per delete statement.
    pub batch: u64,
}

impl Accounts {
    /// Deletes events past the retention, from the oldest, in batches; never one after
    /// `floor` (the oldest cursor of this server's live streams) unless it is past the grace
    /// too. Touches no row of the event counter, so writers never wait for it. Returns how
    /// many were deleted.
    pub async fn prune_events(
        &self,
        policy: EventRetention,
        floor: Option<i64>,
    ) -> Result<u64, AuthError> {
        let conn = self.d.store.conn();
        let cutoff = clock::millis_ago(policy.keep);
        let Some(mut last) = storage::retention::find_last_event_before(conn, cutoff).await? else {
            return Ok(0);
        };
        if let Some(floor) = floor
            && floor < last
        {
            let overdue = clock::millis_ago(policy.keep.saturating_add(policy.grace));
            let forced = storage::retention::find_last_event_before(conn, overdue).await?;
            last = floor.max(forced.unwrap_or(0));
        }
        let mut deleted = 0;
        loop {
            let started = Instant::now();
            let change = self.d.begin().await?;
            let batch =
                storage::retention::delete_events_through(change.db(), last, policy.batch).await?;
            change.commit().await?;
            deleted += batch;
            if batch < policy.batch {
                return Ok(deleted);
            }
            pace(started).await;
        }
    }
}
