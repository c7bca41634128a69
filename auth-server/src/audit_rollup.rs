//! Aggregated audit records for what attackers can repeat at will: login attempts against a
//! locked email and calls refused by the rate limit. One record per key (the email, the client
//! address) per minute on each server, with a count and the distinct client addresses seen, so
//! a flood writes O(1) rows per key per minute instead of one per attempt.
//!
//! The first occurrence of a key in a minute is written at once (awaited by the caller, or by
//! the next flush for callers that cannot wait); later ones only count in memory, and
//! [`AuditRollup::flush`] (every second, and at shutdown) writes the counts into the record.
//! Memory is bounded: past [`MAX_WINDOWS`] keys in one minute, an attempt against a locked email
//! gets a record of its own (as before aggregation) and a rate-limited call is only logged at
//! debug level (an attacker spraying addresses must not grow memory or the table without end).

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use serde_json::{Map, Value, json};

use crate::{
    clock,
    storage::{
        self, ClientInfo, StorageResult, Store,
        audit::{AuditKind, AuditRecord, Outcome},
    },
};

/// Keys tracked at once.
pub const MAX_WINDOWS: usize = 10_000;
/// Distinct client addresses listed per record; more are only counted.
pub const MAX_ADDRS: usize = 32;
const MINUTE_MS: i64 = 60_000;

/// Where a window's record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    /// Nobody is writing it yet: the next flush inserts it.
    Unwritten,
    /// Someone is inserting it now.
    Inserting,
    /// Written, with this id.
    Written(i64),
}

/// One key's minute.
#[derive(Debug, Clone)]
struct Window {
    kind: AuditKind,
    key: String,
    minute: i64,
    row: Row,
    count: u64,
    written_count: u64,
    addrs: BTreeSet<String>,
    more_addrs: u64,
    subject: Option<String>,
    outcome: Outcome,
    client: ClientInfo,
    detail: Map<String, Value>,
}

impl Window {
    fn new(occurrence: &Occurrence<'_>, minute: i64, row: Row) -> Self {
        let mut window = Window {
            kind: occurrence.kind,
            key: occurrence.key.to_owned(),
            minute,
            row,
            count: 0,
            written_count: 0,
            addrs: BTreeSet::new(),
            more_addrs: 0,
            subject: occurrence.subject.map(str::to_owned),
            outcome: occurrence.outcome,
            client: occurrence.client.clone(),
            detail: occurrence.detail.clone(),
        };
        window.note(occurrence.client.addr.as_deref());
        window
    }

    fn note(&mut self, addr: Option<&str>) {
        self.count += 1;
        if let Some(addr) = addr
            && !self.addrs.contains(addr)
        {
            if self.addrs.len() < MAX_ADDRS {
                self.addrs.insert(addr.to_owned());
            } else {
                self.more_addrs += 1;
            }
        }
    }

    fn is(&self, kind: AuditKind, key: &str, minute: i64) -> bool {
        self.kind == kind && self.minute == minute && self.key == key
    }

    /// Whether its record is missing or behind its count.
    fn is_behind(&self) -> bool {
        !matches!(self.row, Row::Written(_)) || self.count != self.written_count
    }

    /// The record's details as of now.
    fn detail(&self) -> Value {
        let mut detail = self.detail.clone();
        detail.insert("count".into(), json!(self.count));
        detail.insert("client_addrs".into(), json!(self.addrs));
        if self.more_addrs > 0 {
            detail.insert("more_client_addrs".into(), json!(self.more_addrs));
        }
        detail.insert("window_start".into(), json!(self.minute * MINUTE_MS));
        Value::Object(detail)
    }

    fn record(&self) -> AuditRecord<'_> {
        let mut record = AuditRecord::new(self.kind, &self.client)
            .outcome(self.outcome)
            .detail(self.detail());
        if let Some(subject) = &self.subject {
            record = record.subject(subject);
        }
        record
    }
}

/// One occurrence to count.
#[derive(Debug)]
pub struct Occurrence<'a> {
    /// What.
    pub kind: AuditKind,
    /// The key it is counted under (an email, a client address).
    pub key: &'a str,
    /// How it ended.
    pub outcome: Outcome,
    /// Whom it concerns, if known.
    pub subject: Option<&'a str>,
    /// Client of this occurrence (the record keeps the first one's).
    pub client: &'a ClientInfo,
    /// Details of the first occurrence (count, addresses and window start are added).
    pub detail: Map<String, Value>,
}

#[derive(Debug, Default)]
struct State {
    /// The current window of each key.
    open: HashMap<(AuditKind, String), Window>,
    /// Windows of past minutes whose record is not fully written yet.
    retired: Vec<Window>,
}

impl State {
    fn find(&mut self, kind: AuditKind, key: &str, minute: i64) -> Option<&mut Window> {
        match self.open.get_mut(&(kind, key.to_owned())) {
            Some(window) if window.minute == minute => Some(window),
            _ => self.retired.iter_mut().find(|w| w.is(kind, key, minute)),
        }
    }
}

/// What [`AuditRollup::count`] decided.
enum Decision {
    /// Added to an open window.
    Added,
    /// A new window (a copy): the caller writes its record.
    New(Box<Window>),
    /// No room: the caller writes a record of its own.
    Full,
}

/// The aggregator shared by every flow and guard of a server.
#[derive(Debug, Clone)]
pub struct AuditRollup {
    store: Store,
    state: Arc<Mutex<State>>,
}

impl AuditRollup {
    /// An empty aggregator writing to `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves only counters behind: keep using them.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn count(&self, occurrence: &Occurrence<'_>, row: Row) -> Decision {
        let minute = clock::now_millis().div_euclid(MINUTE_MS);
        let mut state = self.lock();
        let key = (occurrence.kind, occurrence.key.to_owned());
        if let Some(window) = state.open.get_mut(&key)
            && window.minute == minute
        {
            window.note(occurrence.client.addr.as_deref());
            return Decision::Added;
        }
        if state.open.len() + state.retired.len() >= MAX_WINDOWS {
            return Decision::Full;
        }
        let window = Window::new(occurrence, minute, row);
        let copy = Box::new(window.clone());
        if let Some(old) = state.open.insert(key, window)
            && old.is_behind()
        {
            state.retired.push(old);
        }
        Decision::New(copy)
    }

    /// Counts one occurrence; the first of its key's minute is written before this returns.
    pub async fn record(&self, occurrence: Occurrence<'_>) -> StorageResult<()> {
        let window = match self.count(&occurrence, Row::Inserting) {
            Decision::Added => return Ok(()),
            Decision::Full => {
                let window = Window::new(&occurrence, 0, Row::Inserting);
                let tx = self.store.begin_write().await?;
                storage::audit::append_audit(&*tx, window.record()).await?;
                return tx.commit().await;
            }
            Decision::New(window) => window,
        };
        let written = self.insert(&window).await;
        let mut state = self.lock();
        if let Some(open) = state.find(window.kind, &window.key, window.minute) {
            match written {
                Ok(id) => {
                    open.row = Row::Written(id);
                    open.written_count = window.count;
                }
                // Left to the next flush rather than lost.
                Err(_) => open.row = Row::Unwritten,
            }
        }
        written.map(|_| ())
    }

    /// Counts one occurrence without waiting; the next flush writes its record.
    pub fn record_later(&self, occurrence: Occurrence<'_>) {
        if let Decision::Full = self.count(&occurrence, Row::Unwritten) {
            // Past the bound a refusal is only counted in the logs and metrics: an attacker
            // spraying keys must not grow memory without end.
            tracing::debug!(kind = occurrence.kind.as_str(), "audit rollup full");
        }
    }

    /// Writes the records not written yet and the counts that grew since, and forgets past
    /// minutes that are fully written. Returns how many statements ran.
    pub async fn flush(&self) -> StorageResult<usize> {
        let minute = clock::now_millis().div_euclid(MINUTE_MS);
        let work: Vec<Window> = {
            let mut state = self.lock();
            let State { open, retired } = &mut *state;
            let mut work = Vec::new();
            for window in open.values_mut().chain(retired.iter_mut()) {
                match window.row {
                    Row::Unwritten => {
                        window.row = Row::Inserting;
                        work.push(window.clone());
                    }
                    Row::Written(_) if window.count != window.written_count => {
                        work.push(window.clone());
                    }
                    _ => {}
                }
            }
            open.retain(|_, w| w.minute >= minute || w.is_behind());
            work
        };
        let mut statements = 0;
        let mut failure = None;
        for window in work {
            let result = match window.row {
                Row::Written(id) => self.update(id, &window).await.map(|()| id),
                _ => self.insert(&window).await,
            };
            statements += 1;
            let mut state = self.lock();
            if let Some(stored) = state.find(window.kind, &window.key, window.minute) {
                match &result {
                    Ok(id) => {
                        stored.row = Row::Written(*id);
                        stored.written_count = stored.written_count.max(window.count);
                    }
                    Err(_) if !matches!(window.row, Row::Written(_)) => {
                        stored.row = Row::Unwritten;
                    }
                    Err(_) => {}
                }
            }
            state.retired.retain(Window::is_behind);
            if let Err(error) = result {
                failure = Some(error);
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(statements),
        }
    }

    /// Writes a window's record (through a write transaction: on SQLite it then queues behind
    /// this process's other writers).
    async fn insert(&self, window: &Window) -> StorageResult<i64> {
        let tx = self.store.begin_write().await?;
        let id = storage::audit::append_audit_returning_id(&*tx, window.record()).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Brings a written record's count up to date.
    async fn update(&self, id: i64, window: &Window) -> StorageResult<()> {
        let tx = self.store.begin_write().await?;
        storage::audit::update_audit_detail(&*tx, id, &window.detail().to_string()).await?;
        tx.commit().await
    }

    /// Forgets every window counted under `key` (an erased user's address), so no later count
    /// writes the key back into a record that was erased. Only this server's windows: another
    /// replica's are written as they are.
    pub fn forget(&self, key: &str) {
        let mut state = self.lock();
        state.open.retain(|(_, k), _| k != key);
        state.retired.retain(|w| w.key != key);
    }

    /// Keys with an open window (for tests and metrics).
    pub fn open_windows(&self) -> usize {
        let state = self.lock();
        state.open.len() + state.retired.len()
    }
}
