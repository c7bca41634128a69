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
            tokio::task::yield_now().await;
        }
        loop {
            let change = self.d.begin().await?;
            let batch =
                storage::retention::delete_old_refresh_tokens(change.db(), cutoff, policy.batch)
                    .await?;
            change.commit().await?;
            report.sessions.refresh_tokens += batch.refresh_tokens;
            if batch.refresh_tokens < policy.batch {
                break;
            }
            tokio::task::yield_now().await;
        }
        let conn = self.d.store.conn();
        let day_ago = clock::millis_ago(DAY);
        report.audit =
            storage::audit::delete_audit_before(conn, clock::millis_ago(policy.audit)).await?;
        report.tokens = storage::resets::delete_expired_resets(conn, day_ago).await?
            + storage::verifications::delete_expired_verifications(conn, day_ago).await?
            + storage::mfa::delete_expired_challenges(conn, day_ago).await?;
        report.throttles =
            storage::throttle::delete_stale_throttles(conn, day_ago, clock::now_millis()).await?;
        report.elapsed = started.elapsed();
        Ok(report)
    }
}
