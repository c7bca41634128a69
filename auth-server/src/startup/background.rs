//! The server's background tasks, owned in one place: a `JoinSet` and a stop signal. Every
//! task is spawned through [`Background::spawn`], so shutdown stops them all (each gets a
//! moment to finish what it is doing, then is aborted) and nothing outlives the server.

use std::{future::Future, time::Duration};

use tokio::{sync::watch, task::JoinSet};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    clock,
    rate_limit::RateLimiter,
    revocation::Revocations,
    storage::{self, StorageError, Store},
};

/// The names the health service reports on.
pub(super) const HEALTH_SERVICES: [&str; 3] = ["", "auth.v1.AuthService", "auth.v1.AdminService"];

/// The background tasks and their stop signal.
#[derive(Debug)]
pub(super) struct Background {
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
}

impl Background {
    pub(super) fn new() -> Self {
        Self {
            tasks: JoinSet::new(),
            stop: watch::channel(false).0,
        }
    }

    /// Resolves once [`stop`](Self::stop) was called.
    pub(super) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.subscribe();
        async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
    }

    /// Runs `task` until it ends or the stop signal comes.
    pub(super) fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let stopped = self.stopped();
        self.tasks.spawn(async move {
            tokio::select! {
                () = task => tracing::debug!(task = name, "background task ended"),
                () = stopped => {}
            }
        });
    }

    /// Signals every task to stop, waits up to `grace` for them, and aborts the rest.
    pub(super) async fn stop(mut self, grace: Duration) {
        self.stop.send_replace(true);
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
    }
}

/// Pings the database every `interval`; NOT_SERVING while it fails, SERVING again after.
pub(super) async fn check_health(store: Store, reporter: HealthReporter, interval: Duration) {
    let mut serving = true;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let healthy = matches!(
            tokio::time::timeout(interval.max(Duration::from_secs(1)), store.ping()).await,
            Ok(Ok(()))
        );
        if healthy == serving {
            continue;
        }
        serving = healthy;
        let status = if healthy {
            tracing::info!("database reachable again: SERVING");
            ServingStatus::Serving
        } else {
            tracing::warn!("database unreachable: NOT_SERVING");
            ServingStatus::NotServing
        };
        for name in HEALTH_SERVICES {
            reporter.set_service_status(name, status).await;
        }
    }
}

/// Every minute, forgets revocations older than any access token that could still be valid.
pub(super) async fn prune_revocations(revocations: Revocations, max_age: Duration) {
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    loop {
        ticker.tick().await;
        revocations.prune(max_age);
    }
}

/// Hourly: drops audit records past retention, expired reset tokens and MFA challenges, stale
/// lockout rows, and idle rate-limit buckets.
pub(super) async fn housekeeping(store: Store, limiter: RateLimiter, audit_retention: Duration) {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let mut ticker = tokio::time::interval(Duration::from_secs(3600));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        limiter.prune();
        let now = clock::now_millis();
        let day_ago = clock::millis_ago(DAY);
        let conn = store.conn();
        let result = async {
            let audit =
                storage::audit::delete_audit_before(conn, clock::millis_ago(audit_retention))
                    .await?;
            let resets = storage::resets::delete_expired_resets(conn, day_ago).await?
                + storage::verifications::delete_expired_verifications(conn, day_ago).await?;
            let challenges = storage::mfa::delete_expired_challenges(conn, day_ago).await?;
            let throttles = storage::throttle::delete_stale_throttles(conn, day_ago, now).await?;
            Ok::<_, StorageError>((audit, resets, challenges, throttles))
        }
        .await;
        match result {
            Ok((0, 0, 0, 0)) => tracing::debug!("housekeeping: nothing to prune"),
            Ok((audit, resets, challenges, throttles)) => {
                tracing::info!(
                    audit,
                    resets,
                    challenges,
                    throttles,
                    "housekeeping pruned old rows"
                )
            }
            Err(error) => {
                tracing::warn!(error.message = %error, error.cause_chain = ?error, "housekeeping failed; retrying next hour")
            }
        }
    }
}

/// Runs a start-up read again while the database answers "unavailable" (a pooled connection
/// cut a moment ago, the server restarting), for up to 10 s, so one lost connection does not
/// stop the server before it serves; any other error, or the last one, is returned.
pub(super) async fn read_at_start<T, F, Fut>(what: &str, mut read: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut delay = Duration::from_millis(50);
    loop {
        match read().await {
            Err(StorageError::Unavailable(error)) if std::time::Instant::now() < deadline => {
                tracing::warn!(what, error.message = %error, "database unavailable at start; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}
