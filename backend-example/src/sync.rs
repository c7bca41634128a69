//! The background sync: bootstrap an empty mirror from `UserSnapshot`, then apply `UserEvents`
//! from the stored cursor, forever, surviving restarts of either side. Every event also goes to
//! the API's [`Validator`] so revocations evict cached tokens at once. A mirror that was away
//! longer than the auth service keeps events (`--event-retention-days`) is told so by the
//! subscriber, which hands it a snapshot: the mirror is reconciled to it (users it lacks become
//! tombstones, their cached tokens are evicted) and follows on from there.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use auth_client::{Delivery, Subscriber, Validator, pb};
use sea_orm::DatabaseConnection;
use tokio::sync::watch;

use crate::db;

/// What `/health/sync` reports about the stream.
#[derive(Debug, Default)]
pub struct SyncStatus {
    /// Whether the stream is currently open.
    pub connected: AtomicBool,
    /// Highest sequence seen from auth-server (the head as far as we know).
    pub head_sequence: AtomicI64,
    /// Cursor the current run resumed from.
    pub resumed_from: AtomicI64,
}

/// Runs until `shutdown` turns true.
pub async fn run(
    db: DatabaseConnection,
    subscriber: Arc<Subscriber>,
    validator: Validator,
    status: Arc<SyncStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            return;
        }
        match sync_once(&db, &subscriber, &validator, &status, shutdown.clone()).await {
            Ok(()) => return,
            Err(error) => {
                failures += 1;
                status.connected.store(false, Ordering::Relaxed);
                tracing::warn!(error.message = %error, failures, "sync stopped; retrying");
            }
        }
        let delay = Duration::from_millis(200u64.saturating_mul(1 << failures.min(6)))
            .min(Duration::from_secs(10));
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

async fn sync_once(
    db: &DatabaseConnection,
    subscriber: &Subscriber,
    validator: &Validator,
    status: &SyncStatus,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut state = db::find_sync_state(db).await?;
    if state.snapshot_users.is_none() && state.last_sequence == 0 {
        let snapshot = subscriber.snapshot().await?;
        apply_snapshot(db, validator, &snapshot).await?;
        state = db::find_sync_state(db).await?;
    }
    let cursor = u64::try_from(state.last_sequence).unwrap_or(0);
    status
        .resumed_from
        .store(state.last_sequence, Ordering::Relaxed);
    status
        .head_sequence
        .fetch_max(state.last_sequence, Ordering::Relaxed);
    tracing::info!(cursor, "following user events");
    let handler = |delivery: Delivery| {
        status.connected.store(true, Ordering::Relaxed);
        async move {
            match delivery {
                Delivery::Event(event) => {
                    status.head_sequence.fetch_max(
                        i64::try_from(event.sequence).unwrap_or(0),
                        Ordering::Relaxed,
                    );
                    validator.apply_event(&event);
                    db::apply_event(db, &event).await
                }
                Delivery::Snapshot(snapshot) => {
                    status.head_sequence.fetch_max(
                        i64::try_from(snapshot.as_of_sequence).unwrap_or(0),
                        Ordering::Relaxed,
                    );
                    apply_snapshot(db, validator, &snapshot).await
                }
            }
        }
    };
    subscriber
        .follow(cursor, handler, async {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await?;
    Ok(())
}

/// Reconciles the mirror to `snapshot`; users gone from it lose their cached tokens.
async fn apply_snapshot(
    db: &DatabaseConnection,
    validator: &Validator,
    snapshot: &auth_client::Snapshot,
) -> Result<(), sea_orm::DbErr> {
    let gone = db::apply_snapshot(db, snapshot).await?;
    for id in &gone {
        validator.apply_event(&pb::UserEvent {
            kind: pb::UserEventKind::UserDeleted.into(),
            user: Some(pb::User {
                id: id.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    tracing::info!(
        users = snapshot.users.len(),
        gone = gone.len(),
        as_of = snapshot.as_of_sequence,
        "mirror set to a snapshot"
    );
    Ok(())
}
