//! The transactional outbox: every change to a user writes its event here, in the same
//! transaction as the change.
//!
//! # Gap-free sequences
//!
//! Sequences are not auto-increment ids. [`append_events`] takes the next number with
//! `UPDATE event_sequence SET last_sequence = last_sequence + 1 … RETURNING last_sequence`
//! inside the writing transaction. That statement locks the single counter row until the
//! transaction ends, so:
//!
//! - a second writer blocks on the counter until the first has committed (and then reads the
//!   incremented value) or rolled back (and then reuses the number, since the increment is undone);
//! - hence sequence N+1 can only commit after N has committed: a reader that sees N+1 has
//!   already been able to see N, and can never skip an event that "arrives late";
//! - and a rolled-back transaction leaves no hole.
//!
//! On PostgreSQL the writing transaction also sends `NOTIFY auth_user_events`, which the
//! database delivers to every listening replica on commit (and drops on rollback).
//!
//! On MySQL/MariaDB the same statement (with `LAST_INSERT_ID(…)` in place of `RETURNING`) takes
//! the InnoDB row lock on the counter until commit, with the same consequences. MySQL has no
//! `NOTIFY`: other replicas find new events by their poll (`--event-poll-ms`, 100 ms there).
//!
//! On SQLite the database has one writer at a time anyway (and `Store::begin_write` serializes
//! writers in process), which gives the same order. Writers take the counter last, just
//! before commit, so the lock is held for as short a time as possible.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};

use super::{
    StorageError, StorageResult, UserRecord, WriteTx,
    entities::user_events,
    organizations::{MembershipRecord, OrganizationRecord},
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

/// Takes `count` numbers from the counter; returns the last one (the first is
/// `last - count + 1`).
async fn next_sequences(conn: &impl ConnectionTrait, count: i64) -> StorageResult<i64> {
    if conn.get_database_backend() == sea_orm::DbBackend::MySql {
        // No UPDATE … RETURNING on MySQL: `LAST_INSERT_ID(expr)` hands the new value back in
        // the statement's own reply (and to this connection only), under the same row lock.
        let stmt = Statement::from_string(
            sea_orm::DbBackend::MySql,
            format!(
                "UPDATE event_sequence SET last_sequence = LAST_INSERT_ID(last_sequence + {count}) WHERE id = 1"
            ),
        );
        let result = conn.execute_raw(stmt).await?;
        if result.rows_affected() != 1 {
            return Err(StorageError::Corrupt("event_sequence has no row".into()));
        }
        return i64::try_from(result.last_insert_id())
            .map_err(|_| StorageError::Corrupt("event sequence out of range".into()));
    }
    let stmt = Statement::from_string(
        conn.get_database_backend(),
        format!(
            "UPDATE event_sequence SET last_sequence = last_sequence + {count} WHERE id = 1 RETURNING last_sequence"
        ),
    );
    let row = conn
        .query_one_raw(stmt)
        .await?
        .ok_or_else(|| StorageError::Corrupt("event_sequence has no row".into()))?;
    Ok(row.try_get_by_index::<i64>(0)?)
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

/// Appends one user event in the caller's transaction; returns its sequence.
pub async fn append_event(
    tx: &WriteTx,
    kind: EventKind,
    user: &UserRecord,
    session_id: Option<&str>,
) -> StorageResult<i64> {
    let subject = EventSubject::User(user.clone());
    let event = NewEvent {
        kind,
        subject: &subject,
        session_id,
    };
    append_events(tx, &[event]).await
}

/// Appends events in order in the caller's transaction, taking the counter once and writing
/// them with one statement; returns the last sequence (0 if `events` is empty).
pub async fn append_events(tx: &WriteTx, events: &[NewEvent<'_>]) -> StorageResult<i64> {
    let conn = &**tx;
    if events.is_empty() {
        return Ok(0);
    }
    let count =
        i64::try_from(events.len()).map_err(|_| StorageError::Corrupt("too many events".into()))?;
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        let payload = event
            .subject
            .to_json()
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        rows.push((event, payload));
    }
    let last = next_sequences(conn, count).await?;
    let now = now_millis();
    let models = rows
        .into_iter()
        .zip(last - count + 1..)
        .map(|((event, payload), sequence)| user_events::ActiveModel {
            sequence: Set(sequence),
            kind: Set(event.kind.as_str().to_owned()),
            user_id: Set(event.subject.id().to_owned()),
            session_id: Set(event.session_id.map(str::to_owned)),
            payload: Set(payload),
            occurred_at: Set(now),
        });
    user_events::Entity::insert_many(models).exec(conn).await?;
    if conn.get_database_backend() == sea_orm::DbBackend::Postgres {
        // Delivered to every LISTENing replica at commit; several in one transaction fold into one.
        conn.execute_unprepared(&format!("NOTIFY {NOTIFY_CHANNEL}"))
            .await?;
    }
    tx.mark_events();
    Ok(last)
}

/// The sequence of the newest committed event (0 if none).
pub async fn find_head_sequence(conn: &impl ConnectionTrait) -> StorageResult<i64> {
    let stmt = Statement::from_string(
        conn.get_database_backend(),
        "SELECT last_sequence FROM event_sequence WHERE id = 1",
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
