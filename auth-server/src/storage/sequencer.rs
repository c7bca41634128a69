//! The sequencer: numbers staged events after their writers committed (PostgreSQL and
//! MySQL/MariaDB).
//!
//! # Why
//!
//! Numbering an event inside its writer's transaction (SQLite's way, see [`super::events`])
//! holds the counter row's lock through the commit, so writers commit one after the other, one
//! WAL flush each: the outbox became the write path's ceiling. Here a writer only inserts its
//! events into `staged_events` (an auto-increment id, no lock shared with other writers), so
//! concurrent writers' commits are flushed together (group commit).
//!
//! # How the order stays gap-free
//!
//! A sequencer transaction locks the counter row first, then reads the oldest committed staged
//! events (by id), writes them to `user_events` numbered `last + 1 …`, deletes exactly those
//! staged rows by id, and moves the counter — all in one transaction, so:
//!
//! - `user_events` only ever holds committed events, numbered 1, 2, 3, … in the order they were
//!   sequenced; a reader of `sequence > N` gets a gap-free run, exactly as before;
//! - an aborted writer never staged anything visible: no hole, nothing to wait for;
//! - two sequencers (one per replica) queue on the counter lock; the second reads the staged
//!   table only after the first committed, so no event is numbered twice;
//! - events that depend on each other keep their order: a writer stages its events after it
//!   took its row locks (or saw the rows it depends on), so an event that depends on another
//!   one's commit gets a larger id, and any read that sees it sees the other one too;
//! - a staged row committed while a batch runs (with an id below the batch's largest) is not
//!   deleted with the batch (deletes go by id list) and is numbered by the next batch.
//!
//! Every server runs a sequencer, woken by its own writers' commits and polling (as often as
//! the event tailer polls: `--event-poll-ms`) for rows staged by a replica that stopped before
//! numbering them. Its transaction sends `NOTIFY auth_user_events` on PostgreSQL, which wakes
//! every replica's tailer.

use std::time::Duration;

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
};
use tokio::sync::watch;

use super::{
    CommitWaiter, StorageError, StorageResult, Store, WriteTx,
    events::{NOTIFY_CHANNEL, insert_sequenced},
    staged::{EventRow, staged_events},
};

/// Staged events numbered per sequencer transaction at most.
pub const BATCH: u64 = 1_000;
/// Under sustained writes, how long a sequencer lets further commits stage after a wake-up
/// before it numbers them all in one transaction (one WAL flush for the batch instead of one
/// per event). See [`Linger`].
/// (Measured with eventbench on PostgreSQL: one writer kept 59 % of its rate with no linger,
/// 72 % with 10 ms and 88 % with 25 ms; delivery p99 grew from 14 to 21 and 35 ms.)
pub const LINGER: Duration = Duration::from_millis(20);
/// Batches that follow each other within this long count as sustained writes.
const BUSY: Duration = Duration::from_millis(200);

/// Batches wake-ups under sustained load, as Nagle's algorithm does: the first wake-up after
/// a quiet period is served at once (an isolated change, such as a revocation, goes out
/// without delay); while wake-ups keep coming (one within `busy` of the last batch served),
/// each waits `linger` first, so that one batch serves everything that arrives meanwhile.
#[derive(Debug)]
pub struct Linger {
    linger: Duration,
    busy: Duration,
    last_batch: Option<std::time::Instant>,
}

impl Linger {
    /// Waits `linger` after a wake-up only while batches follow each other within `busy`.
    pub fn new(linger: Duration, busy: Duration) -> Self {
        Self {
            linger,
            busy,
            last_batch: None,
        }
    }

    /// Called on a wake-up, before serving it.
    pub async fn pause(&self) {
        if self.last_batch.is_some_and(|at| at.elapsed() < self.busy) {
            tokio::time::sleep(self.linger).await;
        }
    }

    /// Waits for a wake-up (then pauses as [`Self::pause`] says) or for `poll`: whether it was
    /// a wake-up; `None` once `stop` is set.
    pub async fn next_wake(
        &self,
        wake: &mut CommitWaiter,
        poll: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<bool> {
        let woken = tokio::select! {
            () = wake.notified() => true,
            () = tokio::time::sleep(poll) => false,
            _ = stop.wait_for(|stop| *stop) => return None,
        };
        if woken {
            self.pause().await;
        }
        Some(woken)
    }

    /// Records that a wake-up found work.
    pub fn served(&mut self) {
        self.last_batch = Some(std::time::Instant::now());
    }
}

/// Numbers up to `limit` committed staged events in one transaction; returns how many.
pub async fn sequence_staged(store: &Store, limit: u64) -> StorageResult<u64> {
    if !store.stages_events() {
        return Ok(0);
    }
    // Nothing staged is the common case of a poll: answer it without a write transaction.
    let any = staged_events::Entity::find()
        .select_only()
        .column(staged_events::Column::Id)
        .limit(1)
        .into_tuple::<i64>()
        .one(store.conn())
        .await?;
    if any.is_none() {
        return Ok(0);
    }
    let tx = store.begin_write().await?;
    // The counter's row lock first: a second sequencer waits here until this one committed,
    // and every statement after this one sees what that one committed.
    let last = lock_counter(&*tx).await?;
    let count = if tx.get_database_backend() == sea_orm::DbBackend::Postgres {
        move_batch_postgres(&tx, last, limit).await?
    } else {
        move_batch(&tx, last, limit).await?
    };
    if count == 0 {
        // Another sequencer took them. Roll back now: a dropped transaction would keep the
        // counter lock until its pooled connection is used again.
        tx.rollback().await?;
        return Ok(0);
    }
    if tx.get_database_backend() == sea_orm::DbBackend::Postgres {
        // Delivered to every LISTENing replica at commit.
        tx.execute_unprepared(&format!("NOTIFY {NOTIFY_CHANNEL}"))
            .await?;
    }
    tx.mark_sequenced();
    tx.commit().await?;
    Ok(count)
}

/// Reads the oldest staged events, writes them numbered `last + 1 …`, deletes exactly those
/// staged rows and moves the counter: four statements.
async fn move_batch(tx: &WriteTx, last: i64, limit: u64) -> StorageResult<u64> {
    let staged = staged_events::Entity::find()
        .order_by_asc(staged_events::Column::Id)
        .limit(limit)
        .all(&**tx)
        .await?;
    if staged.is_empty() {
        return Ok(0);
    }
    let count = staged.len() as u64;
    let ids: Vec<i64> = staged.iter().map(|row| row.id).collect();
    let rows = staged
        .into_iter()
        .map(|row| EventRow {
            kind: row.kind,
            user_id: row.user_id,
            session_id: row.session_id,
            payload: row.payload,
            occurred_at: row.occurred_at,
        })
        .collect();
    insert_sequenced(&**tx, rows, last + 1).await?;
    staged_events::Entity::delete_many()
        .filter(staged_events::Column::Id.is_in(ids))
        .exec(&**tx)
        .await?;
    let stmt = Statement::from_string(
        tx.get_database_backend(),
        format!(
            "UPDATE event_sequence SET last_sequence = {} WHERE id = 1",
            last + i64::try_from(count).unwrap_or(i64::MAX)
        ),
    );
    tx.execute_raw(stmt).await?;
    Ok(count)
}

/// The same in one PostgreSQL statement: the staged rows deleted (and returned) are the rows
/// inserted, numbered in id order, and the counter moves to the last of them. Its snapshot is
/// taken after the counter lock was granted, so it sees every earlier sequencer's commit.
async fn move_batch_postgres(tx: &WriteTx, last: i64, limit: u64) -> StorageResult<u64> {
    let sql = format!(
        "WITH batch AS ( \
           DELETE FROM staged_events \
           WHERE id IN (SELECT id FROM staged_events ORDER BY id LIMIT {limit}) \
           RETURNING id, kind, user_id, session_id, payload, occurred_at \
         ), numbered AS ( \
           INSERT INTO user_events (sequence, kind, user_id, session_id, payload, occurred_at) \
           SELECT {last} + row_number() OVER (ORDER BY id), kind, user_id, session_id, payload, occurred_at \
           FROM batch \
           RETURNING sequence \
         ) \
         UPDATE event_sequence SET last_sequence = (SELECT max(sequence) FROM numbered) \
         WHERE id = 1 AND EXISTS (SELECT 1 FROM numbered) \
         RETURNING last_sequence"
    );
    let stmt = Statement::from_string(sea_orm::DbBackend::Postgres, sql);
    match tx.query_one_raw(stmt).await? {
        Some(row) => {
            let head = row.try_get_by_index::<i64>(0)?;
            Ok(u64::try_from(head - last).unwrap_or(0))
        }
        None => Ok(0),
    }
}

/// Locks the counter row until the transaction ends; returns the last sequence.
async fn lock_counter(conn: &impl ConnectionTrait) -> StorageResult<i64> {
    let stmt = Statement::from_string(
        conn.get_database_backend(),
        "SELECT last_sequence FROM event_sequence WHERE id = 1 FOR UPDATE",
    );
    let row = conn
        .query_one_raw(stmt)
        .await?
        .ok_or_else(|| StorageError::Corrupt("event_sequence has no row".into()))?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// Numbers every staged event (for a command that wrote events and exits, and before work that
/// must see every committed event numbered, such as erasure); returns how many.
pub async fn drain(store: &Store) -> StorageResult<u64> {
    let mut total = 0;
    loop {
        let done = sequence_staged(store, BATCH).await?;
        total += done;
        if done < BATCH {
            return Ok(total);
        }
    }
}

/// The sequencer task of a server: drains on every staged commit of this process and every
/// `poll`, until `stop` turns true. Failures are retried with a growing pause.
pub async fn run(store: Store, poll: Duration, mut stop: watch::Receiver<bool>) {
    if !store.stages_events() {
        return;
    }
    let mut wake = store.events_staged().waiter();
    let mut linger = Linger::new(LINGER, BUSY);
    let mut failures = 0u32;
    while linger.next_wake(&mut wake, poll, &mut stop).await.is_some() {
        match drain(&store).await {
            Ok(moved) => {
                failures = 0;
                if moved > 0 {
                    linger.served();
                }
            }
            Err(error) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error.message = %error, failures, "event sequencer cannot number staged events");
                }
                let pause = Duration::from_millis(50u64.saturating_mul(1 << failures.min(6)));
                tokio::time::sleep(pause.min(Duration::from_secs(3))).await;
            }
        }
    }
}
