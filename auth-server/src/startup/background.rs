//! The server's background tasks, owned in one place: a `JoinSet` and a stop signal. Every
//! task is spawned through [`Background::spawn`], so shutdown stops them all (each gets a
//! moment to finish what it is doing, then is aborted) and nothing outlives the server.

use std::{future::Future, time::Duration};

use tokio::{sync::watch, task::JoinSet};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    audit_rollup::AuditRollup,
    domain::{Accounts, EventRetention, RetentionPolicy},
    events::EventHub,
    rate_limit::RateLimiter,
    revocation::Revocations,
    storage::{StorageError, Store},
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

/// Every `interval` (hourly by default): the pruning rules of `domain/retention.rs`, and idle
/// rate-limit buckets. Logs what it removed and how fast.
pub(super) async fn housekeeping(
    accounts: Accounts,
    limiter: RateLimiter,
    policy: RetentionPolicy,
    events: Option<(EventRetention, EventHub)>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        limiter.prune();
        match accounts.prune(policy).await {
            Ok(report) if report.rows() == 0 => tracing::debug!("housekeeping: nothing to prune"),
            Ok(report) => {
                let secs = report.elapsed.as_secs_f64().max(1e-6);
                tracing::info!(
                    sessions = report.sessions.sessions,
                    refresh_tokens = report.sessions.refresh_tokens,
                    audit = report.audit,
                    tokens = report.tokens,
                    throttles = report.throttles,
                    elapsed_ms = report.elapsed.as_millis(),
                    rows_per_sec = (report.rows() as f64 / secs).round(),
                    "housekeeping pruned old rows"
                )
            }
            Err(error) => {
                tracing::warn!(error.message = %error, error.cause_chain = ?error, "housekeeping failed; retrying next run")
            }
        }
        if let Some((retention, hub)) = &events {
            let started = std::time::Instant::now();
            match accounts
                .prune_events(*retention, hub.oldest_live_cursor())
                .await
            {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(
                    events = deleted,
                    elapsed_ms = started.elapsed().as_millis(),
                    "housekeeping pruned old events"
                ),
                Err(error) => {
                    tracing::warn!(error.message = %error, error.cause_chain = ?error, "event pruning failed; retrying next run")
                }
            }
        }
    }
}

/// Every second: the counts of aggregated audit records (`audit_rollup.rs`).
pub(super) async fn flush_audit_rollup(rollup: AuditRollup) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = rollup.flush().await {
            tracing::warn!(error.message = %error, "audit counts not written; retrying");
        }
    }
}

/// At least every minute (more often when housekeeping runs more often): erases the deleted
/// users whose erasure is due.
pub(super) async fn erase_due(accounts: Accounts, interval: Duration) {
    let mut ticker = tokio::time::interval(interval.min(Duration::from_secs(60)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = accounts.erase_due().await {
            tracing::warn!(error.message = %error, error.cause_chain = ?error, "erasure failed; retrying");
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
