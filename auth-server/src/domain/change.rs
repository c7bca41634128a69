//! [`Change`]: the one write transaction of the domain.
//!
//! A flow opens a `Change`, makes its writes through [`Change::db`], writes its audit records
//! with [`Change::audit`], and names its user events with [`Change::event`] and
//! [`Change::session_revoked`]. The events are held back and appended to the outbox by
//! [`Change::commit`] just before the commit: the event counter row is locked only for the
//! end of the transaction (the outbox doc in `storage/events.rs` relies on that), whatever
//! order the flow wrote in. After the commit, the sessions the change revoked are added to
//! this server's revocation set, so no flow can forget to, and returned in [`Committed`].
//! Dropping a `Change` without committing rolls everything back, events included.

use sea_orm::DatabaseTransaction;

use crate::{
    error::AuthError,
    revocation::Revocations,
    storage::{
        self, EventKind, EventSubject, Store, UserRecord, WriteTx,
        audit::AuditRecord,
        events::NewEvent,
        organizations::{MembershipRecord, OrganizationRecord},
    },
};

/// An event to append at commit.
#[derive(Debug)]
struct PendingEvent {
    kind: EventKind,
    subject: EventSubject,
    session_id: Option<String>,
}

/// An open write transaction with its pending events and revocations.
pub struct Change {
    tx: WriteTx,
    events: Vec<PendingEvent>,
    revoked: Vec<String>,
    revocations: Revocations,
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Change")
            .field("events", &self.events.len())
            .field("revoked", &self.revoked.len())
            .finish_non_exhaustive()
    }
}

/// What a committed change leaves to its caller.
#[derive(Debug, Default)]
pub struct Committed {
    /// Sessions the change revoked (already in the revocation set).
    pub revoked: Vec<String>,
}

impl Change {
    /// Starts a write transaction; its revocations go to `revocations` on commit.
    pub async fn begin(store: &Store, revocations: &Revocations) -> Result<Self, AuthError> {
        Ok(Self {
            tx: store.begin_write().await?,
            events: Vec::new(),
            revoked: Vec::new(),
            revocations: revocations.clone(),
        })
    }

    /// The transaction, for storage calls.
    pub fn db(&self) -> &DatabaseTransaction {
        &self.tx
    }

    /// Records `kind` with `user`'s state (as it is now) for the outbox.
    pub fn event(&mut self, kind: EventKind, user: &UserRecord) {
        self.events.push(PendingEvent {
            kind,
            subject: EventSubject::User(user.clone()),
            session_id: None,
        });
    }

    /// Records that `session_id` of `user` was revoked: a `SessionRevoked` event now, the
    /// revocation set after commit.
    pub fn session_revoked(&mut self, user: &UserRecord, session_id: &str) {
        self.events.push(PendingEvent {
            kind: EventKind::SessionRevoked,
            subject: EventSubject::User(user.clone()),
            session_id: Some(session_id.to_owned()),
        });
        self.revoked.push(session_id.to_owned());
    }

    /// Records an API key event (`ApiKeyIssued`/`ApiKeyRevoked`) for `key_id` of `user`.
    pub fn api_key_event(&mut self, kind: EventKind, user: &UserRecord, key_id: &str) {
        self.events.push(PendingEvent {
            kind,
            subject: EventSubject::User(user.clone()),
            session_id: Some(key_id.to_owned()),
        });
    }

    /// Records an organization event with the organization's state after the change.
    pub fn organization_event(&mut self, kind: EventKind, organization: &OrganizationRecord) {
        self.events.push(PendingEvent {
            kind,
            subject: EventSubject::Organization(organization.clone()),
            session_id: None,
        });
    }

    /// Records a membership event with the membership's state after the change.
    pub fn membership_event(&mut self, kind: EventKind, membership: &MembershipRecord) {
        self.events.push(PendingEvent {
            kind,
            subject: EventSubject::Membership(membership.clone()),
            session_id: None,
        });
    }

    /// Makes `session_id` refused by this server after commit, without an event: for a
    /// session that was already ended, or whose user is gone, but is presented again.
    pub fn refuse_session(&mut self, session_id: &str) {
        self.revoked.push(session_id.to_owned());
    }

    /// Sessions revoked so far in this change.
    pub fn revoked(&self) -> &[String] {
        &self.revoked
    }

    /// Writes an audit record in the transaction.
    pub async fn audit(&self, record: AuditRecord<'_>) -> Result<(), AuthError> {
        storage::audit::append_audit(self.db(), record).await?;
        Ok(())
    }

    /// Appends the pending events (taking the event counter last) and commits, both in one call
    /// on SQLite ([`storage::WriteTx::commit_with_events`]), then applies the revocations to the
    /// in-memory set.
    pub async fn commit(self) -> Result<Committed, AuthError> {
        let Self {
            tx,
            events,
            revoked,
            revocations,
        } = self;
        let batch: Vec<_> = events
            .iter()
            .map(|e| NewEvent {
                kind: e.kind,
                subject: &e.subject,
                session_id: e.session_id.as_deref(),
            })
            .collect();
        tx.commit_with_events(&batch).await?;
        revocations.revoke_all(revoked.iter().cloned());
        Ok(Committed { revoked })
    }
}
