//! The transactional outbox: every change to a user writes its event here, in the same
//! transaction as the change.
//!
//! # Gap-free sequences
//!
//! `user_events` only ever holds committed events, numbered 1, 2, 3, … without holes, from the
//! single counter row `event_sequence`; a reader that sees N+1 has already been able to see N.
//! How a number is taken depends on the backend, behind [`append_events`]:
//!
//! - **PostgreSQL, MySQL/MariaDB**: the writer stages its events (`staged_events`, an
//!   auto-increment id, no lock shared with other writers), and the sequencer numbers them
//!   after commit, in batches, under the counter's row lock ([`super::sequencer`]). Writers'
//!   commits no longer queue behind one counter lock, so the database flushes them together.
//!   The sequencer's transaction sends `NOTIFY auth_user_events` on PostgreSQL, which the
//!   database delivers to every listening replica on commit; MySQL has no `NOTIFY`, and other
//!   replicas find new events by their poll (`--event-poll-ms`, 100 ms there).
//! - **SQLite**: one writer at a time anyway (SQLite's write lock, and `Store::begin_write`
//!   in process), so the writer numbers its events itself, from the head: the newest event's
//!   sequence (the table's rowid, so this is a walk down the right edge of one B-tree), or the
//!   counter row if that is higher. The counter is no longer moved by commits (migration 11):
//!   it only keeps the highest sequence that retention deleted, so an outbox pruned to empty
//!   never numbers from 1 again. A single event is one statement; a batch reads the head once.
//!   A rolled-back transaction takes its numbers back with it. A change's few events travel to
//!   the driver in the same call as its `COMMIT` ([`WriteTx::commit_with_events`]).

use std::sync::Arc;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};

use super::{
    StorageError, StorageResult, UserRecord, WriteTx,
    entities::user_events,
    organizations::{MembershipRecord, OrganizationRecord},
    staged::{EventRow, stage},
};
use crate::clock::now_millis;

/// The PostgreSQL `LISTEN`/`NOTIFY` channel that announces committed events.
pub const NOTIFY_CHANNEL: &str = "auth_user_events";

/// What happened to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Account created.
    UserCreated,
    /// Email, display name or verification changed.
    UserUpdated,
    /// Account disabled.
    UserDisabled,
    /// Account enabled.
    UserEnabled,
    /// Account deleted.
    UserDeleted,
    /// Password changed.
    PasswordChanged,
    /// Roles changed.
    RolesChanged,
    /// One session revoked.
    SessionRevoked,
    /// An API key issued to a service account (its id in the event's `session_id` column).
    ApiKeyIssued,
    /// An API key revoked (its id in the event's `session_id` column).
    ApiKeyRevoked,
    /// Organization created (payload: the organization).
    OrganizationCreated,
    /// Organization name, slug or metadata changed.
    OrganizationUpdated,
    /// Organization deleted (its memberships' removals come first).
    OrganizationDeleted,
    /// A user joined an organization (payload: the membership).
    MembershipAdded,
    /// A member's roles changed.
    MembershipChanged,
    /// A user left an organization.
    MembershipRemoved,
}

impl EventKind {
    /// The kinds whose payload is the user's public state.
    pub const USER_KINDS: [EventKind; 10] = [
        EventKind::UserCreated,
        EventKind::UserUpdated,
        EventKind::UserDisabled,
        EventKind::UserEnabled,
        EventKind::UserDeleted,
        EventKind::PasswordChanged,
        EventKind::RolesChanged,
        EventKind::SessionRevoked,
        EventKind::ApiKeyIssued,
        EventKind::ApiKeyRevoked,
    ];

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::UserCreated => "user_created",
            EventKind::UserUpdated => "user_updated",
            EventKind::UserDisabled => "user_disabled",
            EventKind::UserEnabled => "user_enabled",
            EventKind::UserDeleted => "user_deleted",
            EventKind::PasswordChanged => "password_changed",
            EventKind::RolesChanged => "roles_changed",
            EventKind::SessionRevoked => "session_revoked",
            EventKind::ApiKeyIssued => "api_key_issued",
            EventKind::ApiKeyRevoked => "api_key_revoked",
            EventKind::OrganizationCreated => "organization_created",
            EventKind::OrganizationUpdated => "organization_updated",
            EventKind::OrganizationDeleted => "organization_deleted",
            EventKind::MembershipAdded => "membership_added",
            EventKind::MembershipChanged => "membership_changed",
            EventKind::MembershipRemoved => "membership_removed",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "user_created" => EventKind::UserCreated,
            "user_updated" => EventKind::UserUpdated,
            "user_disabled" => EventKind::UserDisabled,
            "user_enabled" => EventKind::UserEnabled,
            "user_deleted" => EventKind::UserDeleted,
            "password_changed" => EventKind::PasswordChanged,
            "roles_changed" => EventKind::RolesChanged,
            "session_revoked" => EventKind::SessionRevoked,
            "api_key_issued" => EventKind::ApiKeyIssued,
            "api_key_revoked" => EventKind::ApiKeyRevoked,
            "organization_created" => EventKind::OrganizationCreated,
            "organization_updated" => EventKind::OrganizationUpdated,
            "organization_deleted" => EventKind::OrganizationDeleted,
            "membership_added" => EventKind::MembershipAdded,
            "membership_changed" => EventKind::MembershipChanged,
            "membership_removed" => EventKind::MembershipRemoved,
            _ => return None,
        })
    }
}

/// What an event is about, in its state after the change. The outbox row's `user_id` column
/// holds the user's id for user and membership events, the organization's for organization
/// events; the payload holds this, as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSubject {
    /// A user's public state.
    User(UserRecord),
    /// An organization's state.
    Organization(OrganizationRecord),
    /// A membership's state.
    Membership(MembershipRecord),
}

impl EventSubject {
    fn id(&self) -> &str {
        match self {
            EventSubject::User(u) => &u.id,
            EventSubject::Organization(o) => &o.id,
            EventSubject::Membership(m) => &m.user_id,
        }
    }

    fn to_json(&self) -> serde_json::Result<String> {
        match self {
            EventSubject::User(u) => serde_json::to_string(u),
            EventSubject::Organization(o) => serde_json::to_string(o),
            EventSubject::Membership(m) => serde_json::to_string(m),
        }
    }

    fn parse(kind: EventKind, payload: &str) -> serde_json::Result<Self> {
        Ok(match kind {
            EventKind::OrganizationCreated
            | EventKind::OrganizationUpdated
            | EventKind::OrganizationDeleted => {
                EventSubject::Organization(serde_json::from_str(payload)?)
            }
            EventKind::MembershipAdded
            | EventKind::MembershipChanged
            | EventKind::MembershipRemoved => {
                EventSubject::Membership(serde_json::from_str(payload)?)
            }
            _ => EventSubject::User(serde_json::from_str(payload)?),
        })
    }
}

/// An event read back from the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Gap-free sequence.
    pub sequence: i64,
    /// Kind.
    pub kind: EventKind,
    /// What it is about, after the change.
    pub subject: EventSubject,
    /// The revoked session, for `SessionRevoked`; the key, for `ApiKeyIssued`/`ApiKeyRevoked`.
    pub session_id: Option<String>,
    /// Commit time, unix ms.
    pub occurred_at: i64,
}

impl StoredEvent {
    /// The user, for user events.
    pub fn user(&self) -> Option<&UserRecord> {
        match &self.subject {
            EventSubject::User(user) => Some(user),
            _ => None,
        }
    }
}

/// An event to append: what happened, to whom, and for `SessionRevoked` which session.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// Kind.
    pub kind: EventKind,
    /// The subject's state after the change.
    pub subject: &'a EventSubject,
    /// The revoked session, for `SessionRevoked`.
    pub session_id: Option<&'a str>,
}

/// Appends one user event in the caller's transaction.
pub async fn append_event(
    tx: &WriteTx,
    kind: EventKind,
    user: &UserRecord,
    session_id: Option<&str>,
) -> StorageResult<()> {
    let subject = EventSubject::User(user.clone());
    let event = NewEvent {
        kind,
        subject: &subject,
        session_id,
    };
    append_events(tx, &[event]).await
}

/// Appends events in order in the caller's transaction.
///
/// On PostgreSQL and MySQL/MariaDB they are staged (one insert, no lock shared with other
/// writers) and numbered after commit by the sequencer ([`super::sequencer`]). On SQLite,
/// which has one writer at a time anyway, they are numbered here from the counter, taken once
/// for the batch.
pub async fn append_events(tx: &WriteTx, events: &[NewEvent<'_>]) -> StorageResult<()> {
    let conn = &**tx;
    if events.is_empty() {
        return Ok(());
    }
    let rows = event_rows(events)?;
    if conn.get_database_backend() == sea_orm::DbBackend::Sqlite {
        match <[EventRow; 1]>::try_from(rows) {
            Ok([row]) => {
                let stmt = Statement::from_sql_and_values(
                    sea_orm::DbBackend::Sqlite,
                    INSERT_NEXT_SQLITE,
                    row.into_values(),
                );
                conn.execute_raw(stmt).await?;
            }
            Err(rows) => {
                // A batch (an import, an organization's deletion): numbered from the head,
                // read once. The insert takes SQLite's write lock if the transaction did not
                // hold it yet, and SQLite refuses it (busy snapshot) were the head read stale.
                let head = find_head_sequence(conn).await?;
                insert_sequenced(conn, rows, head + 1).await?;
            }
        }
        tx.mark_sequenced();
    } else {
        stage(conn, rows).await?;
        tx.mark_staged();
    }
    Ok(())
}

/// SQLite's head, as one SQL expression for both statements below: the newest event, or the
/// counter if retention deleted past it.
macro_rules! head_sqlite {
    () => {
        "SELECT max(last_sequence, ifnull((SELECT max(sequence) FROM user_events), 0)) \
         FROM event_sequence WHERE id = 1"
    };
}

/// SQLite's head (0 without events).
const HEAD_SQLITE: &str = head_sqlite!();

/// SQLite: one statement numbers one event head + 1 and inserts it. The writer holds SQLite's
/// only write lock, so nobody can take the same number. (Were the counter row missing, the
/// NULL sequence would make SQLite pick the rowid max + 1: never zero rows.)
const INSERT_NEXT_SQLITE: &str = concat!(
    "INSERT INTO user_events (sequence, kind, user_id, session_id, payload, occurred_at) \
     VALUES ((",
    head_sqlite!(),
    ") + 1, ?, ?, ?, ?, ?)"
);

/// The most events a SQLite commit carries in its own call to the driver; a larger batch is
/// numbered from the head, read once first ([`append_events`]).
const SQLITE_EVENTS_WITH_COMMIT: usize = 16;

/// The outbox rows of `events`, stamped now.
fn event_rows(events: &[NewEvent<'_>]) -> StorageResult<Vec<EventRow>> {
    let now = now_millis();
    events
        .iter()
        .map(|event| {
            Ok(EventRow {
                kind: event.kind.as_str().to_owned(),
                user_id: event.subject.id().to_owned(),
                session_id: event.session_id.map(str::to_owned),
                payload: event
                    .subject
                    .to_json()
                    .map_err(|e| StorageError::Corrupt(e.to_string()))?,
                occurred_at: now,
            })
        })
        .collect()
}

impl WriteTx {
    /// Appends `events` (in order) and commits: what [`append_events`] then
    /// [`WriteTx::commit`] do, in one round trip fewer on SQLite.
    ///
    /// SQLite runs each statement on the driver's own thread, and every call is a hand-off to
    /// that thread and back. So up to [`SQLITE_EVENTS_WITH_COMMIT`] events go in the same call
    /// as the commit: `INSERT …; INSERT …; COMMIT; BEGIN`. SQLite runs the statements in order
    /// and stops at the first that fails, so a failed insert leaves the transaction open and
    /// dropping it rolls everything back, as before. The trailing `BEGIN` opens an empty
    /// deferred transaction (it takes no lock) for the driver, which still counts one open
    /// transaction: dropping it queues a `ROLLBACK` of nothing that nobody waits for.
    pub async fn commit_with_events(self, events: &[NewEvent<'_>]) -> StorageResult<()> {
        if self.tx.get_database_backend() != sea_orm::DbBackend::Sqlite
            || events.is_empty()
            || events.len() > SQLITE_EVENTS_WITH_COMMIT
        {
            append_events(&self, events).await?;
            return self.commit().await;
        }
        let rows = event_rows(events)?;
        // The events as the tailers would read them back, but for their sequences.
        let unnumbered: Vec<StoredEvent> = events
            .iter()
            .zip(&rows)
            .map(|(event, row)| StoredEvent {
                sequence: 0,
                kind: event.kind,
                subject: event.subject.clone(),
                session_id: row.session_id.clone(),
                occurred_at: row.occurred_at,
            })
            .collect();
        let mut sql = String::new();
        let mut values = Vec::with_capacity(events.len() * 5);
        for row in rows {
            sql.push_str(INSERT_NEXT_SQLITE);
            sql.push_str(" RETURNING sequence; ");
            values.extend(row.into_values());
        }
        sql.push_str("COMMIT; BEGIN");
        let stmt = Statement::from_sql_and_values(sea_orm::DbBackend::Sqlite, sql, values);
        // The call runs to its end even if our caller goes away (a deadline, a client that
        // hung up): the driver stops a multi-statement call when nobody reads its results, and
        // stopping between `COMMIT` and `BEGIN` would leave it counting a transaction SQLite no
        // longer has.
        tokio::spawn(async move {
            let numbered = self.tx.query_all_raw(stmt).await?;
            let sequences = numbered
                .iter()
                .map(|row| row.try_get_by_index::<i64>(0))
                .collect::<Result<Vec<_>, _>>();
            match sequences {
                Ok(sequences) if sequences.len() == unnumbered.len() => {
                    let handed = unnumbered
                        .into_iter()
                        .zip(sequences)
                        .map(|(event, sequence)| Arc::new(StoredEvent { sequence, ..event }))
                        .collect();
                    self.hand_over(handed);
                }
                // Committed all the same: the tailers read them back.
                _ => self.mark_sequenced(),
            }
            self.committed();
            Ok(())
        })
        .await
        .map_err(|e| StorageError::Corrupt(format!("commit task failed: {e}")))?
    }
}

impl EventRow {
    /// The values of [`INSERT_NEXT_SQLITE`]'s placeholders.
    fn into_values(self) -> [sea_orm::Value; 5] {
        [
            self.kind.into(),
            self.user_id.into(),
            self.session_id.into(),
            self.payload.into(),
            self.occurred_at.into(),
        ]
    }
}

/// Writes `rows` to `user_events` numbered from `first` on.
pub(crate) async fn insert_sequenced(
    conn: &impl ConnectionTrait,
    rows: Vec<EventRow>,
    first: i64,
) -> StorageResult<()> {
    let models = rows
        .into_iter()
        .zip(first..)
        .map(|(row, sequence)| user_events::ActiveModel {
            sequence: Set(sequence),
            kind: Set(row.kind),
            user_id: Set(row.user_id),
            session_id: Set(row.session_id),
            payload: Set(row.payload),
            occurred_at: Set(row.occurred_at),
        });
    user_events::Entity::insert_many(models).exec(conn).await?;
    Ok(())
}

/// The sequence of the newest committed event (0 if none): the counter, which the sequencer
/// moves on PostgreSQL and MySQL; on SQLite the newest event, or the counter if retention
/// deleted past it.
pub async fn find_head_sequence(conn: &impl ConnectionTrait) -> StorageResult<i64> {
    let backend = conn.get_database_backend();
    let stmt = Statement::from_string(
        backend,
        if backend == sea_orm::DbBackend::Sqlite {
            HEAD_SQLITE
        } else {
            "SELECT last_sequence FROM event_sequence WHERE id = 1"
        },
    );
    let row = conn
        .query_one_raw(stmt)
        .await?
        .ok_or_else(|| StorageError::Corrupt("event_sequence has no row".into()))?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// Up to `limit` events with a sequence greater than `after`, in order.
pub async fn find_events_after(
    conn: &impl ConnectionTrait,
    after: i64,
    limit: u64,
) -> StorageResult<Vec<StoredEvent>> {
    user_events::Entity::find()
        .filter(user_events::Column::Sequence.gt(after))
        .order_by_asc(user_events::Column::Sequence)
        .limit(limit)
        .all(conn)
        .await?
        .into_iter()
        .map(|m| {
            let kind = EventKind::parse(&m.kind).ok_or_else(|| {
                StorageError::Corrupt(format!("event {} kind {}", m.sequence, m.kind))
            })?;
            let subject = EventSubject::parse(kind, &m.payload)
                .map_err(|_| StorageError::Corrupt(format!("event {} payload", m.sequence)))?;
            Ok(StoredEvent {
                sequence: m.sequence,
                kind,
                subject,
                session_id: m.session_id,
                occurred_at: m.occurred_at,
            })
        })
        .collect()
}
