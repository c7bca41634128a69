//! The user event feed: one tailer per process reads newly committed events from the outbox
//! and fans them out in memory to every `UserEvents` stream, and keeps the revocation set
//! current across replicas.
//!
//! # Wake-ups
//!
//! The tailer reads `user_events` after the last sequence it published whenever it is woken:
//! - by this process's own commits (an in-process signal from `WriteTx::commit`);
//! - on PostgreSQL, by `NOTIFY auth_user_events` from any replica, received on one
//!   `tokio-postgres` `LISTEN` connection per process that reconnects with backoff;
//! - and by a periodic poll, the safety net: a lost notification only delays, never drops.
//!
//! On SQLite, a commit of this process hands its numbered events over in memory as well, and
//! the tailer takes them from there when they follow the last one it published without a gap;
//! anything else (a gap, a poll, a `NOTIFY`, a commit that handed nothing over) is a read
//! (`storage::signals`).
//!
//! One database read per wake-up feeds every stream of the process. Because `user_events` only
//! ever holds committed, consecutively numbered events (numbered in the writer's transaction on
//! SQLite, by the sequencer after commit elsewhere: `storage::sequencer`), a read of
//! `sequence > N` always returns a gap-free run, so the tailer never publishes N+1 before N.
//! The feed's tasks include this process's sequencer.
//!
//! # Streams and slow subscribers
//!
//! A stream first replays from the database after its cursor, then follows the in-memory feed.
//! Each stream has a bounded buffer towards its client; a subscriber that reads slowly (or not
//! at all) only stalls its own task. Writers never wait for subscribers, and the feed never
//! waits for a stream: a stream that falls more than the feed's capacity behind is **served from
//! the database at its own pace** until it catches up, then follows the feed again. Nobody is
//! disconnected for being slow and no event is skipped; every event is checked to be exactly
//! `cursor + 1` before it is sent.
//!
//! On shutdown every stream ends with `Unavailable`, and the subscriber resumes from its cursor
//! elsewhere or after the restart.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{broadcast, mpsc, watch};

mod tail;
use tail::{listen_postgres, tail};

pub use crate::snapshot::SnapshotItem;

use crate::{
    apikeys::ApiKeys,
    revocation::Revocations,
    storage::{
        self, StorageError, Store, StoredEvent,
        events::{find_events_after, find_head_sequence},
    },
};

/// What the feed keeps current on this server besides the streams: revoked sessions and
/// API keys (issued, revoked, and their owners' roles and state).
#[derive(Debug, Clone)]
pub struct FeedSinks {
    /// The revoked-session set.
    pub revocations: Revocations,
    /// The API key set.
    pub api_keys: ApiKeys,
}

/// Events read from the database per query.
const PAGE: u64 = 500;
/// Under a stream of commits, how long the tailer lets more commit before it reads them all.
const TAIL_LINGER: Duration = Duration::from_millis(2);
/// Buffer between a stream's task and its client.
const STREAM_BUFFER: usize = 64;

/// Why a stream ended early.
#[derive(Debug, thiserror::Error)]
pub enum StreamEnd {
    /// The server is shutting down; resume from the cursor.
    #[error("server shutting down; resume from your last sequence")]
    ShuttingDown,
    /// The database failed while reading events.
    #[error("event storage unavailable")]
    Storage(#[source] StorageError),
    /// The events after the cursor were pruned (event retention); `oldest` is the first kept.
    #[error("events after the cursor were pruned; the oldest kept is {oldest}")]
    Pruned {
        /// The oldest sequence still in the outbox.
        oldest: i64,
    },
}

/// Settings of the feed.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// How often the tailer polls even without a wake-up.
    pub poll_interval: Duration,
    /// The database URL, for the PostgreSQL `LISTEN` connection.
    pub database_url: String,
    /// Events held in memory for streams that are behind; further behind reads the database.
    pub feed_capacity: usize,
}

/// Handle on the process's event feed.
#[derive(Debug, Clone)]
pub struct EventHub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    store: Store,
    feed: broadcast::Sender<Arc<StoredEvent>>,
    published: watch::Sender<i64>,
    shutdown: watch::Sender<bool>,
    subscribers: AtomicUsize,
    /// Each open stream's cursor (the last sequence it sent), for the lag metric.
    cursors: std::sync::Mutex<std::collections::HashMap<u64, Arc<std::sync::atomic::AtomicI64>>>,
    next_stream: std::sync::atomic::AtomicU64,
}

/// The feed's background work, for the caller to spawn: the tailer, and on PostgreSQL the
/// `LISTEN` connection. Both end when [`EventHub::close`] is called or when dropped.
pub struct FeedTasks {
    /// Each task.
    pub tasks: Vec<futures::future::BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for FeedTasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedTasks")
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

impl EventHub {
    /// Starts the tailer (and on PostgreSQL the listener). Reads the head first: everything up
    /// to it is already reflected in the revocation set loaded at start.
    pub async fn start(
        store: Store,
        sinks: FeedSinks,
        settings: FeedSettings,
    ) -> Result<(Self, FeedTasks), StorageError> {
        // Events staged by a replica that stopped before numbering them are numbered first.
        storage::sequencer::drain(&store).await?;
        let head = find_head_sequence(store.conn()).await?;
        let (feed, _) = broadcast::channel(settings.feed_capacity.max(1));
        let (published, _) = watch::channel(head);
        let (shutdown, _) = watch::channel(false);
        let hub = Self {
            inner: Arc::new(HubInner {
                store: store.clone(),
                feed,
                published,
                shutdown,
                subscribers: AtomicUsize::new(0),
                cursors: Default::default(),
                next_stream: Default::default(),
            }),
        };
        let wake = store.events_committed();
        let mut tasks: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
        if settings.database_url.starts_with("postgres") {
            let shutdown = hub.inner.shutdown.subscribe();
            let listen = listen_postgres(settings.database_url.clone(), wake.clone());
            tasks.push(Box::pin(async move {
                let mut shutdown = shutdown;
                tokio::select! {
                    () = listen => {}
                    _ = shutdown.wait_for(|stop| *stop) => {}
                }
            }));
        }
        tasks.push(Box::pin(storage::sequencer::run(
            store.clone(),
            settings.poll_interval,
            hub.inner.shutdown.subscribe(),
        )));
        tasks.push(Box::pin(tail(
            hub.clone(),
            sinks,
            wake.waiter(),
            settings.poll_interval,
            head,
        )));
        Ok((hub, FeedTasks { tasks }))
    }

    /// The newest committed event sequence (read from the database).
    pub async fn head_sequence(&self) -> Result<i64, StorageError> {
        find_head_sequence(self.inner.store.conn()).await
    }

    /// Every user, organization and membership at one sequence: see [`crate::snapshot`].
    pub fn snapshot(&self) -> mpsc::Receiver<Result<SnapshotItem, StorageError>> {
        crate::snapshot::snapshot(self.inner.store.clone())
    }

    /// The newest sequence published to this process's streams.
    pub fn published(&self) -> i64 {
        *self.inner.published.borrow()
    }

    /// Streams currently open.
    pub fn subscriber_count(&self) -> usize {
        self.inner.subscribers.load(Ordering::Relaxed)
    }

    /// The cursor of the slowest open stream, if any (event pruning keeps what it has not
    /// received yet).
    pub fn oldest_live_cursor(&self) -> Option<i64> {
        let cursors = self.inner.cursors.lock().unwrap_or_else(|e| e.into_inner());
        cursors.values().map(|c| c.load(Ordering::Relaxed)).min()
    }

    /// The oldest sequence a stream can still start after: `Err(oldest)` for a cursor whose
    /// next events were pruned (`oldest` is the first one kept, or the head + 1 if none is).
    pub async fn check_cursor(&self, after: i64, head: i64) -> Result<(), StreamEnd> {
        if after >= head {
            return Ok(());
        }
        let oldest = storage::retention::find_oldest_event_sequence(self.inner.store.conn())
            .await
            .map_err(StreamEnd::Storage)?
            .unwrap_or(head + 1);
        if after + 1 < oldest {
            return Err(StreamEnd::Pruned { oldest });
        }
        Ok(())
    }

    /// How far the slowest open stream is behind the newest published event (0 without streams).
    pub fn max_subscriber_lag(&self) -> i64 {
        let published = self.published();
        let cursors = self.inner.cursors.lock().unwrap_or_else(|e| e.into_inner());
        cursors
            .values()
            .map(|c| published - c.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
            .max(0)
    }

    /// Ends every stream (with [`StreamEnd::ShuttingDown`]).
    pub fn close(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Opens a stream of every event after `after`, replayed then live.
    pub fn subscribe(&self, after: i64) -> mpsc::Receiver<Result<Arc<StoredEvent>, StreamEnd>> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        // Subscribe to the feed before replaying, so nothing published meanwhile is missed.
        let feed = self.inner.feed.subscribe();
        let hub = self.clone();
        tokio::spawn(async move {
            hub.inner.subscribers.fetch_add(1, Ordering::Relaxed);
            let id = hub.inner.next_stream.fetch_add(1, Ordering::Relaxed);
            let position = Arc::new(std::sync::atomic::AtomicI64::new(after));
            hub.inner
                .cursors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, Arc::clone(&position));
            let mut stream = Subscription {
                hub: hub.clone(),
                out: tx,
                cursor: after,
                position,
                shutdown: hub.inner.shutdown.subscribe(),
            };
            if let Err(end) = stream.run(feed).await {
                let _ = stream.out.try_send(Err(end));
            }
            hub.inner
                .cursors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            hub.inner.subscribers.fetch_sub(1, Ordering::Relaxed);
        });
        rx
    }
}

/// Outcome of a send: the client is gone, or we are shutting down.
enum Stop {
    ClientGone,
    End(StreamEnd),
}

struct Subscription {
    hub: EventHub,
    out: mpsc::Sender<Result<Arc<StoredEvent>, StreamEnd>>,
    cursor: i64,
    position: Arc<std::sync::atomic::AtomicI64>,
    shutdown: watch::Receiver<bool>,
}

impl Subscription {
    async fn run(
        &mut self,
        mut feed: broadcast::Receiver<Arc<StoredEvent>>,
    ) -> Result<(), StreamEnd> {
        match self.serve(&mut feed).await {
            Ok(()) | Err(Stop::ClientGone) => Ok(()),
            Err(Stop::End(end)) => Err(end),
        }
    }

    async fn serve(
        &mut self,
        feed: &mut broadcast::Receiver<Arc<StoredEvent>>,
    ) -> Result<(), Stop> {
        self.catch_up().await?;
        loop {
            let next = tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|stop| *stop) => return Err(Stop::End(StreamEnd::ShuttingDown)),
                () = self.out.closed() => return Err(Stop::ClientGone),
                next = feed.recv() => next,
            };
            match next {
                Ok(event) if event.sequence <= self.cursor => {}
                Ok(event) if event.sequence == self.cursor + 1 => self.send(event).await?,
                // A gap (this stream's feed started after an event it had not replayed yet), or
                // this stream fell behind the feed's capacity: read from the database.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await?,
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Stop::End(StreamEnd::ShuttingDown));
                }
            }
        }
    }

    /// Sends everything after the cursor that is in the database now.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        loop {
            let page = find_events_after(self.hub.inner.store.conn(), self.cursor, PAGE)
                .await
                .map_err(|e| Stop::End(StreamEnd::Storage(e)))?;
            let done = (page.len() as u64) < PAGE;
            // Nothing where the next event should be: pruned under a stream that fell behind
            // the retention (and its grace), or a real hole (refused below).
            let next = page.first().map(|e| e.sequence);
            let published = self.hub.published();
            if next.map_or(self.cursor < published, |n| n != self.cursor + 1) {
                self.hub
                    .check_cursor(self.cursor, published.max(next.unwrap_or(0)))
                    .await
                    .map_err(Stop::End)?;
            }
            for event in page {
                if event.sequence != self.cursor + 1 {
                    tracing::error!(
                        expected = self.cursor + 1,
                        found = event.sequence,
                        "gap in the event outbox"
                    );
                    return Err(Stop::End(StreamEnd::Storage(StorageError::Corrupt(
                        "gap in event sequence".into(),
                    ))));
                }
                self.send(Arc::new(event)).await?;
            }
            if done {
                return Ok(());
            }
        }
    }

    async fn send(&mut self, event: Arc<StoredEvent>) -> Result<(), Stop> {
        let sequence = event.sequence;
        tokio::select! {
            biased;
            _ = self.shutdown.wait_for(|stop| *stop) => return Err(Stop::End(StreamEnd::ShuttingDown)),
            sent = self.out.send(Ok(event)) => sent.map_err(|_| Stop::ClientGone)?,
        }
        self.cursor = sequence;
        self.position.store(sequence, Ordering::Relaxed);
        Ok(())
    }
}
