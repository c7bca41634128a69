//! What one process shares per database between its writers and its outbox readers: the SQLite
//! writer lock, the wake-ups "events were committed" (the event tailers read them) and "events
//! were staged" (the sequencer moves them), and the events this process just numbered itself.
//!
//! # Events handed over in memory
//!
//! On SQLite a writer numbers its events in its own transaction, so once it committed it knows
//! them exactly as a read would return them. It hands them to [`RecentEvents`] (before it lets
//! the next writer in, so they arrive in sequence order) and wakes the tailers without asking
//! them to read: a tailer takes the events after the last one it published from memory, and
//! reads the database only when memory cannot prove it has all of them. That is when a commit
//! did not hand its events over (a large batch, the sequencer, a `NOTIFY` from another
//! replica: [`CommitSignal::notify`]), when the next event is missing or evicted, and on every
//! poll (another process writing the same file).

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::{Mutex, watch};

use super::events::StoredEvent;

/// Events kept in memory for the tailers; a tailer further behind reads the database.
const RECENT_CAPACITY: usize = 1024;

/// The process-wide wake-ups of one database, and its recently committed events.
#[derive(Debug, Clone)]
pub(crate) struct EventSignals {
    /// Sequenced events were committed.
    pub(crate) committed: CommitSignal,
    /// Events were staged.
    pub(crate) staged: CommitSignal,
    /// Events this process numbered and committed, newest last.
    pub(crate) recent: Arc<RecentEvents>,
}

/// Per database URL, the SQLite writer lock and the [`EventSignals`] are shared by every
/// `Store` of this process (a server, a CLI command or a test opening its own pool), so writers
/// still queue in process and every commit wakes the event tailer at once.
pub(crate) fn process_wide(url: &str, is_sqlite: bool) -> (Option<Arc<Mutex<()>>>, EventSignals) {
    type Shared = (Arc<Mutex<()>>, EventSignals);
    static SHARED: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, Shared>>,
    > = std::sync::LazyLock::new(Default::default);
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    let (lock, signals) = shared.entry(url.to_owned()).or_insert_with(|| {
        let signals = EventSignals {
            committed: CommitSignal::new(),
            staged: CommitSignal::new(),
            recent: Arc::default(),
        };
        (Arc::new(Mutex::new(())), signals)
    });
    (is_sqlite.then(|| Arc::clone(lock)), signals.clone())
}

/// "Events were committed": a counter every waiter sees move. Unlike a `Notify` permit, which
/// wakes one waiter, every tailer of the process (two servers on one database in a test, a
/// server and a replica) wakes for every commit, and a commit while a tailer is busy reading is
/// not lost: its next wait returns at once. A second counter moves for the wake-ups whose
/// events are only in the database.
#[derive(Debug, Clone)]
pub struct CommitSignal {
    wakes: Arc<watch::Sender<u64>>,
    reads: Arc<AtomicU64>,
}

impl CommitSignal {
    fn new() -> Self {
        Self {
            wakes: Arc::new(watch::Sender::new(0)),
            reads: Arc::default(),
        }
    }

    /// Wakes every waiter, to read the database.
    pub fn notify(&self) {
        // Before the wake-up, so that a waiter woken by it sees it.
        self.reads.fetch_add(1, Ordering::AcqRel);
        self.notify_handed_over();
    }

    /// Wakes every waiter; the new events are in [`RecentEvents`].
    pub(crate) fn notify_handed_over(&self) {
        self.wakes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A waiter that sees every commit from now on (and wakes once at once, to read).
    pub fn waiter(&self) -> CommitWaiter {
        let mut rx = self.wakes.subscribe();
        rx.mark_changed();
        let seen = self.reads.load(Ordering::Acquire).wrapping_sub(1);
        CommitWaiter {
            rx,
            reads: Arc::clone(&self.reads),
            seen,
        }
    }
}

/// One waiter of a [`CommitSignal`].
#[derive(Debug)]
pub struct CommitWaiter {
    rx: watch::Receiver<u64>,
    reads: Arc<AtomicU64>,
    seen: u64,
}

impl CommitWaiter {
    /// Returns once a commit happened since the last return.
    pub async fn notified(&mut self) {
        if self.rx.changed().await.is_err() {
            // The signal lives as long as the process; never spin if it did not.
            std::future::pending::<()>().await;
        }
    }

    /// Whether a wake-up since the last call asked for a database read.
    pub fn must_read(&mut self) -> bool {
        let reads = self.reads.load(Ordering::Acquire);
        std::mem::replace(&mut self.seen, reads) != reads
    }
}

/// The events this process numbered and committed itself, in sequence order.
#[derive(Debug, Default)]
pub struct RecentEvents {
    ring: std::sync::Mutex<VecDeque<Arc<StoredEvent>>>,
}

impl RecentEvents {
    /// Adds committed events (called under the SQLite writer lock, so in commit order).
    pub(crate) fn push(&self, events: Vec<Arc<StoredEvent>>) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let follows = match (ring.back(), events.first()) {
            (Some(last), Some(first)) => first.sequence > last.sequence,
            _ => true,
        };
        if !follows {
            // Never happens with one writer at a time; keep the ring sorted regardless.
            ring.clear();
        }
        ring.extend(events);
        let excess = ring.len().saturating_sub(RECENT_CAPACITY);
        ring.drain(..excess);
    }

    /// Every event after `published`, if memory holds exactly `published + 1 ..= newest`
    /// (empty if it holds nothing newer); `None` if one is missing: read the database.
    pub fn after(&self, published: i64) -> Option<Vec<Arc<StoredEvent>>> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let start = ring.partition_point(|event| event.sequence <= published);
        let newer: Vec<Arc<StoredEvent>> = ring.range(start..).cloned().collect();
        let contiguous = (published + 1..)
            .zip(&newer)
            .all(|(want, e)| e.sequence == want);
        contiguous.then_some(newer)
    }
}
