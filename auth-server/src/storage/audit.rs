//! The append-only audit trail. Records are written in the transaction of the change they
//! describe; they never hold a password, token, code or hash.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::{ClientInfo, StorageResult, entities::audit_events, truncate};

/// What an audit record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditKind {
    /// A login (or its MFA step) issued a session.
    LoginSucceeded,
    /// Wrong email or password.
    LoginFailed,
    /// A login attempt while the email was locked (no password was checked).
    LoginLocked,
    /// Self-registration.
    UserRegistered,
    /// A session was ended by its user.
    Logout,
    /// A spent refresh token was presented; the session was revoked.
    RefreshReuseDetected,
    /// The user changed the password.
    PasswordChanged,
    /// A reset token was issued (self-service or admin).
    PasswordResetIssued,
    /// A reset token set a new password.
    PasswordResetUsed,
    /// TOTP was enabled.
    MfaEnrolled,
    /// A wrong TOTP or recovery code.
    MfaFailed,
    /// A recovery code was used.
    MfaRecoveryCodeUsed,
    /// The user turned TOTP off.
    MfaDisabled,
    /// Admin: user created.
    AdminUserCreated,
    /// Admin: user updated.
    AdminUserUpdated,
    /// Admin: user disabled.
    AdminUserDisabled,
    /// Admin: user enabled.
    AdminUserEnabled,
    /// Admin: user deleted.
    AdminUserDeleted,
    /// Admin: sessions revoked.
    AdminSessionsRevoked,
    /// Admin: lockout cleared.
    AdminUserUnlocked,
    /// Admin: password reset issued.
    AdminPasswordResetIssued,
    /// Admin: MFA removed.
    AdminMfaReset,
    /// A user moved in by `import-users` or `ImportUsers`.
    UserImported,
    /// Admin: service account created.
    AdminServiceAccountCreated,
    /// Admin: API key issued.
    AdminApiKeyIssued,
    /// Admin: API key revoked.
    AdminApiKeyRevoked,
    /// Admin: organization created.
    AdminOrganizationCreated,
    /// Admin: organization updated.
    AdminOrganizationUpdated,
    /// Admin: organization deleted.
    AdminOrganizationDeleted,
    /// Admin: member added to an organization.
    AdminMemberAdded,
    /// Admin: member's roles changed.
    AdminMemberUpdated,
    /// Admin: member removed from an organization.
    AdminMemberRemoved,
    /// A user ended their own sessions (`RevokeMySessions`).
    SessionsRevoked,
    /// A user deleted their own account (`DeleteMyAccount`).
    AccountDeleted,
    /// A verification mail went out (`RequestEmailVerification`, `ChangeEmail`).
    EmailVerificationIssued,
    /// An address was verified with a mailed token (`VerifyEmail`).
    EmailVerified,
    /// A user changed their own address (`ChangeEmail`).
    EmailChanged,
    /// Calls refused by the per-address rate limit (one record per address per minute, with
    /// a count).
    RateLimited,
}

impl AuditKind {
    /// Every kind, for validating filters.
    pub const ALL: [AuditKind; 38] = [
        AuditKind::LoginSucceeded,
        AuditKind::LoginFailed,
        AuditKind::LoginLocked,
        AuditKind::UserRegistered,
        AuditKind::Logout,
        AuditKind::RefreshReuseDetected,
        AuditKind::PasswordChanged,
        AuditKind::PasswordResetIssued,
        AuditKind::PasswordResetUsed,
        AuditKind::MfaEnrolled,
        AuditKind::MfaFailed,
        AuditKind::MfaRecoveryCodeUsed,
        AuditKind::MfaDisabled,
        AuditKind::AdminUserCreated,
        AuditKind::AdminUserUpdated,
        AuditKind::AdminUserDisabled,
        AuditKind::AdminUserEnabled,
        AuditKind::AdminUserDeleted,
        AuditKind::AdminSessionsRevoked,
        AuditKind::AdminUserUnlocked,
        AuditKind::AdminPasswordResetIssued,
        AuditKind::AdminMfaReset,
        AuditKind::UserImported,
        AuditKind::AdminServiceAccountCreated,
        AuditKind::AdminApiKeyIssued,
        AuditKind::AdminApiKeyRevoked,
        AuditKind::AdminOrganizationCreated,
        AuditKind::AdminOrganizationUpdated,
        AuditKind::AdminOrganizationDeleted,
        AuditKind::AdminMemberAdded,
        AuditKind::AdminMemberUpdated,
        AuditKind::AdminMemberRemoved,
        AuditKind::SessionsRevoked,
        AuditKind::AccountDeleted,
        AuditKind::EmailVerificationIssued,
        AuditKind::EmailVerified,
        AuditKind::EmailChanged,
        AuditKind::RateLimited,
    ];

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::LoginSucceeded => "login_succeeded",
            AuditKind::LoginFailed => "login_failed",
            AuditKind::LoginLocked => "login_locked",
            AuditKind::UserRegistered => "user_registered",
            AuditKind::Logout => "logout",
            AuditKind::RefreshReuseDetected => "refresh_reuse_detected",
            AuditKind::PasswordChanged => "password_changed",
            AuditKind::PasswordResetIssued => "password_reset_issued",
            AuditKind::PasswordResetUsed => "password_reset_used",
            AuditKind::MfaEnrolled => "mfa_enrolled",
            AuditKind::MfaFailed => "mfa_failed",
            AuditKind::MfaRecoveryCodeUsed => "mfa_recovery_code_used",
            AuditKind::MfaDisabled => "mfa_disabled",
            AuditKind::AdminUserCreated => "admin_user_created",
            AuditKind::AdminUserUpdated => "admin_user_updated",
            AuditKind::AdminUserDisabled => "admin_user_disabled",
            AuditKind::AdminUserEnabled => "admin_user_enabled",
            AuditKind::AdminUserDeleted => "admin_user_deleted",
            AuditKind::AdminSessionsRevoked => "admin_sessions_revoked",
            AuditKind::AdminUserUnlocked => "admin_user_unlocked",
            AuditKind::AdminPasswordResetIssued => "admin_password_reset_issued",
            AuditKind::AdminMfaReset => "admin_mfa_reset",
            AuditKind::UserImported => "user_imported",
            AuditKind::AdminServiceAccountCreated => "admin_service_account_created",
            AuditKind::AdminApiKeyIssued => "admin_api_key_issued",
            AuditKind::AdminApiKeyRevoked => "admin_api_key_revoked",
            AuditKind::AdminOrganizationCreated => "admin_organization_created",
            AuditKind::AdminOrganizationUpdated => "admin_organization_updated",
            AuditKind::AdminOrganizationDeleted => "admin_organization_deleted",
            AuditKind::AdminMemberAdded => "admin_member_added",
            AuditKind::AdminMemberUpdated => "admin_member_updated",
            AuditKind::AdminMemberRemoved => "admin_member_removed",
            AuditKind::SessionsRevoked => "sessions_revoked",
            AuditKind::AccountDeleted => "account_deleted",
            AuditKind::EmailVerificationIssued => "email_verification_issued",
            AuditKind::EmailVerified => "email_verified",
            AuditKind::EmailChanged => "email_changed",
            AuditKind::RateLimited => "rate_limited",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// How the audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It happened.
    Success,
    /// It was tried and failed (wrong password, wrong code).
    Failure,
    /// It was refused without trying (locked).
    Denied,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

/// One record to append.
#[derive(Debug)]
pub struct AuditRecord<'a> {
    /// What.
    pub kind: AuditKind,
    /// How it ended.
    pub outcome: Outcome,
    /// Who acted.
    pub actor_id: Option<&'a str>,
    /// Whom it concerns.
    pub subject_id: Option<&'a str>,
    /// Session involved.
    pub session_id: Option<&'a str>,
    /// Client address and user agent.
    pub client: &'a ClientInfo,
    /// Non-secret details.
    pub detail: Option<serde_json::Value>,
}

impl<'a> AuditRecord<'a> {
    /// A successful action by `actor` on `subject`.
    pub fn new(kind: AuditKind, client: &'a ClientInfo) -> Self {
        Self {
            kind,
            outcome: Outcome::Success,
            actor_id: None,
            subject_id: None,
            session_id: None,
            client,
            detail: None,
        }
    }

    /// Sets the outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Sets the actor.
    pub fn actor(mut self, actor_id: &'a str) -> Self {
        self.actor_id = Some(actor_id);
        self
    }

    /// Sets the subject.
    pub fn subject(mut self, subject_id: &'a str) -> Self {
        self.subject_id = Some(subject_id);
        self
    }

    /// Sets the session.
    pub fn session(mut self, session_id: &'a str) -> Self {
        self.session_id = Some(session_id);
        self
    }

    /// Sets the details.
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// A stored record.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Id.
    pub id: i64,
    /// When, unix ms.
    pub occurred_at: i64,
    /// Kind name.
    pub kind: String,
    /// Outcome name.
    pub outcome: String,
    /// Who acted.
    pub actor_id: Option<String>,
    /// Whom it concerns.
    pub subject_id: Option<String>,
    /// Session.
    pub session_id: Option<String>,
    /// Client address.
    pub client_addr: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// JSON details.
    pub detail: Option<String>,
}

fn audit_row(record: AuditRecord<'_>, now: i64) -> audit_events::ActiveModel {
    audit_events::ActiveModel {
        occurred_at: Set(now),
        kind: Set(record.kind.as_str().to_owned()),
        outcome: Set(record.outcome.as_str().to_owned()),
        actor_id: Set(record.actor_id.map(str::to_owned)),
        subject_id: Set(record.subject_id.map(str::to_owned)),
        session_id: Set(record.session_id.map(str::to_owned)),
        client_addr: Set(record.client.addr.as_deref().map(|a| truncate(a, 64))),
        user_agent: Set(record
            .client
            .user_agent
            .as_deref()
            .map(|a| truncate(a, 512))),
        detail: Set(record.detail.map(|d| d.to_string())),
        ..Default::default()
    }
}

/// Appends a record in the caller's transaction (or on its own).
pub async fn append_audit(
    conn: &impl ConnectionTrait,
    record: AuditRecord<'_>,
) -> StorageResult<()> {
    audit_row(record, crate::clock::now_millis())
        .insert(conn)
        .await?;
    Ok(())
}

/// Appends a record on its own; returns its id (for a record updated later, see
/// `audit_rollup.rs`).
pub async fn append_audit_returning_id(
    conn: &impl ConnectionTrait,
    record: AuditRecord<'_>,
) -> StorageResult<i64> {
    let row = audit_row(record, crate::clock::now_millis())
        .insert(conn)
        .await?;
    Ok(row.id)
}

/// Replaces one record's details (an aggregated record's count, an erasure).
pub async fn update_audit_detail(
    conn: &impl ConnectionTrait,
    id: i64,
    detail: &str,
) -> StorageResult<()> {
    audit_events::Entity::update_many()
        .col_expr(
            audit_events::Column::Detail,
            sea_orm::sea_query::Expr::value(detail),
        )
        .filter(audit_events::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Appends several records with one statement.
pub async fn append_audits(
    conn: &impl ConnectionTrait,
    records: Vec<AuditRecord<'_>>,
) -> StorageResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    let now = crate::clock::now_millis();
    audit_events::Entity::insert_many(records.into_iter().map(|r| audit_row(r, now)))
        .exec(conn)
        .await?;
    Ok(())
}

/// What `find_audit_page` filters on.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    /// Subject user.
    pub subject_id: Option<String>,
    /// Kind name.
    pub kind: Option<String>,
    /// At or after (unix ms).
    pub since: Option<i64>,
    /// Before (unix ms).
    pub until: Option<i64>,
}

/// Up to `limit` records with an id below `before_id` (all if `None`), newest first.
pub async fn find_audit_page(
    conn: &impl ConnectionTrait,
    before_id: Option<i64>,
    limit: u64,
    filter: &AuditFilter,
) -> StorageResult<Vec<AuditEntry>> {
    let mut query = audit_events::Entity::find();
    if let Some(before) = before_id {
        query = query.filter(audit_events::Column::Id.lt(before));
    }
    if let Some(subject) = &filter.subject_id {
        query = query.filter(audit_events::Column::SubjectId.eq(subject.as_str()));
    }
    if let Some(kind) = &filter.kind {
        query = query.filter(audit_events::Column::Kind.eq(kind.as_str()));
    }
    if let Some(since) = filter.since {
        query = query.filter(audit_events::Column::OccurredAt.gte(since));
    }
    if let Some(until) = filter.until {
        query = query.filter(audit_events::Column::OccurredAt.lt(until));
    }
    Ok(query
        .order_by_desc(audit_events::Column::Id)
        .limit(limit)
        .all(conn)
        .await?
        .into_iter()
        .map(|m| AuditEntry {
            id: m.id,
            occurred_at: m.occurred_at,
            kind: m.kind,
            outcome: m.outcome,
            actor_id: m.actor_id,
            subject_id: m.subject_id,
            session_id: m.session_id,
            client_addr: m.client_addr,
            user_agent: m.user_agent,
            detail: m.detail,
        })
        .collect())
}

/// Deletes records older than `cutoff` (retention); how many.
pub async fn delete_audit_before(conn: &impl ConnectionTrait, cutoff: i64) -> StorageResult<u64> {
    let result = audit_events::Entity::delete_many()
        .filter(audit_events::Column::OccurredAt.lt(cutoff))
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}
