//! The tailer: one per process (per hub), it publishes every committed event to the feed in
//! sequence order, and keeps the revoked sessions and API keys current.

use std::{sync::Arc, time::Duration};

use super::{EventHub, FeedSinks, PAGE, TAIL_LINGER};
use crate::storage::{
    self, CommitSignal, CommitWaiter, EventKind, StorageError, Store, StoredEvent,
    events::{NOTIFY_CHANNEL, find_events_after},
};

/// The tailer: on every wake-up (or poll), takes the events after the last published one (from
/// memory when this process committed them itself, see `storage::signals`, else from the
/// database) and fans them out; applies revocations to the in-memory set.
pub(super) async fn tail(
    hub: EventHub,
    sinks: FeedSinks,
    mut wake: CommitWaiter,
    poll: Duration,
    head: i64,
) {
    let mut tailer = Tailer {
        recent: hub.inner.store.recent_events(),
        hub,
        sinks,
        published: head,
        failures: 0,
    };
    let mut shutdown = tailer.hub.inner.shutdown.subscribe();
    // Under a stream of commits, one read per TAIL_LINGER serves them all.
    let mut linger = storage::sequencer::Linger::new(TAIL_LINGER, TAIL_LINGER * 10);
    while let Some(woken) = linger.next_wake(&mut wake, poll, &mut shutdown).await {
        let before = tailer.published;
        let must_read = wake.must_read() || !woken || tailer.failures > 0;
        let from_memory = if must_read {
            None
        } else {
            tailer.recent.after(tailer.published)
        };
        match from_memory {
            Some(events) => {
                tailer.publish(events).await;
            }
            None => tailer.read().await,
        }
        if tailer.published > before {
            linger.served();
        }
    }
}

struct Tailer {
    hub: EventHub,
    sinks: FeedSinks,
    recent: Arc<storage::RecentEvents>,
    published: i64,
    failures: u32,
}

impl Tailer {
    /// Reads and publishes everything after `published` that is in the database now.
    async fn read(&mut self) {
        loop {
            match find_events_after(self.hub.inner.store.conn(), self.published, PAGE).await {
                Ok(page) => {
                    self.failures = 0;
                    let done = (page.len() as u64) < PAGE;
                    if !self.publish(page.into_iter().map(Arc::new)).await || done {
                        return;
                    }
                }
                Err(error) => {
                    self.failures += 1;
                    tracing::warn!(error.message = %error, failures = self.failures, "event tailer cannot read the outbox");
                    tokio::time::sleep(backoff(self.failures)).await;
                    return;
                }
            }
        }
    }

    /// Publishes `events` in order, up to a gap or an event it cannot apply; whether all were.
    async fn publish(&mut self, events: impl IntoIterator<Item = Arc<StoredEvent>>) -> bool {
        let mut all = true;
        for event in events {
            if event.sequence != self.published + 1 {
                // Cannot happen with the counter-row design; never publish past a hole.
                tracing::error!(
                    expected = self.published + 1,
                    found = event.sequence,
                    "gap in the event outbox"
                );
                all = false;
                break;
            }
            if let Err(error) = apply(&self.hub.inner.store, &self.sinks, &event).await {
                // Not published: read again after the backoff.
                self.failures += 1;
                tracing::warn!(error.message = %error, failures = self.failures, "event tailer cannot read an issued API key");
                tokio::time::sleep(backoff(self.failures)).await;
                all = false;
                break;
            }
            self.failures = 0;
            self.published = event.sequence;
            // No receivers is fine: nobody is streaming right now.
            let _ = self.hub.inner.feed.send(event);
        }
        self.hub.inner.published.send_replace(self.published);
        all
    }
}

/// Applies an event to this server's revoked sessions and API keys.
async fn apply(store: &Store, sinks: &FeedSinks, event: &StoredEvent) -> Result<(), StorageError> {
    let subject = event.session_id.as_deref();
    match (event.kind, subject) {
        (EventKind::SessionRevoked, Some(session_id)) => sinks.revocations.revoke(session_id),
        (EventKind::ApiKeyIssued, Some(key_id)) => {
            // The hash is not in the event (events go to every subscriber): read it.
            for key in storage::api_keys::live_keys(store.conn(), Some(key_id)).await? {
                sinks.api_keys.insert(&key);
            }
        }
        (EventKind::ApiKeyRevoked, Some(key_id)) => sinks.api_keys.revoke(key_id),
        _ => {
            if let Some(user) = event.user() {
                sinks.api_keys.apply_user(user);
            }
        }
    }
    Ok(())
}

pub(super) fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(5))
}

/// Keeps one `LISTEN auth_user_events` connection open and turns notifications into wake-ups.
pub(super) async fn listen_postgres(url: String, wake: CommitSignal) {
    let mut failures = 0u32;
    loop {
        match crate::storage::listen::listen(&url, NOTIFY_CHANNEL, &wake).await {
            Ok(()) => failures = 0,
            Err(error) => {
                failures += 1;
                tracing::warn!(error.message = %error, failures, "event LISTEN connection lost; reconnecting");
            }
        }
        // Whatever happened while we were not listening is picked up by this wake-up.
        wake.notify();
        tokio::time::sleep(backoff(failures)).await;
    }
}
