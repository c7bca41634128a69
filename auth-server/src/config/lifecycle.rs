//! The data lifecycle flags of `serve`: how long ended sessions, spent refresh tokens and
//! events are kept, when a deleted user's history is erased, and how often housekeeping runs.

use std::time::Duration;

use clap::Args;

use super::ConfigError;

const DAY: u64 = 24 * 3600;

/// Data lifecycle flags.
#[derive(Debug, Clone, Args)]
pub struct LifecycleArgs {
    /// Days ended sessions (logged out, revoked, expired) and spent or expired refresh tokens
    /// are kept before housekeeping deletes them. A spent refresh token presented again within
    /// this time revokes its session (reuse detection); after it, it is only unknown.
    #[arg(long, env = "AUTH_SESSION_RETENTION_DAYS", default_value_t = 7)]
    pub session_retention_days: u32,
    /// Days events are kept in the outbox (default: forever). A subscriber whose cursor falls
    /// behind gets OUT_OF_RANGE `CURSOR_PRUNED` and re-bootstraps from `UserSnapshot`.
    #[arg(long, env = "AUTH_EVENT_RETENTION_DAYS")]
    pub event_retention_days: Option<u32>,
    /// Seconds past the event retention during which events a subscriber connected to this
    /// server has not received yet are still kept.
    #[arg(long, env = "AUTH_EVENT_RETENTION_GRACE_SECS", default_value_t = DAY)]
    pub event_retention_grace_secs: u64,
    /// Seconds after a user's deletion (admin or self) until their email, display name and
    /// metadata are erased from earlier event payloads and audit details (0: at once, right
    /// after the deletion commits).
    #[arg(long, env = "AUTH_ERASURE_DELAY_SECS", default_value_t = 0)]
    pub erasure_delay_secs: u64,
    /// Seconds between housekeeping runs (pruning; erasures due are checked at least every
    /// minute).
    #[arg(long, env = "AUTH_HOUSEKEEPING_INTERVAL_SECS", default_value_t = 3600)]
    pub housekeeping_interval_secs: u64,
    /// Rows one housekeeping statement deletes at most (small batches keep locks short).
    #[arg(long, env = "AUTH_PRUNE_BATCH", default_value_t = 1000)]
    pub prune_batch: u64,
}

/// Validated lifecycle settings.
#[derive(Debug, Clone, Copy)]
pub struct LifecycleSettings {
    /// How long ended sessions and spent or expired refresh tokens are kept.
    pub session_retention: Duration,
    /// How long events are kept, if not forever.
    pub event_retention: Option<Duration>,
    /// Extra time for events a connected subscriber has not received yet.
    pub event_retention_grace: Duration,
    /// Delay between a deletion and the erasure of the user's history.
    pub erasure_delay: Duration,
    /// Time between housekeeping runs.
    pub housekeeping_interval: Duration,
    /// Rows per delete statement.
    pub prune_batch: u64,
}

impl LifecycleArgs {
    /// Validates the arguments.
    pub fn settings(&self) -> Result<LifecycleSettings, ConfigError> {
        if self.session_retention_days == 0 {
            return Err(ConfigError(
                "session retention must be at least 1 day".into(),
            ));
        }
        if self.event_retention_days == Some(0) {
            return Err(ConfigError("event retention must be at least 1 day".into()));
        }
        if self.erasure_delay_secs > 90 * DAY {
            return Err(ConfigError("erasure delay must be at most 90 days".into()));
        }
        if !(1..=DAY).contains(&self.housekeeping_interval_secs) {
            return Err(ConfigError(
                "housekeeping interval must be 1 s to 1 day".into(),
            ));
        }
        if !(1..=100_000).contains(&self.prune_batch) {
            return Err(ConfigError("prune batch must be 1 to 100000 rows".into()));
        }
        Ok(LifecycleSettings {
            session_retention: Duration::from_secs(u64::from(self.session_retention_days) * DAY),
            event_retention: self
                .event_retention_days
                .map(|days| Duration::from_secs(u64::from(days) * DAY)),
            event_retention_grace: Duration::from_secs(self.event_retention_grace_secs),
            erasure_delay: Duration::from_secs(self.erasure_delay_secs),
            housekeeping_interval: Duration::from_secs(self.housekeeping_interval_secs),
            prune_batch: self.prune_batch,
        })
    }
}
