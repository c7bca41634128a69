//! The admin domain behind `AdminService`: account management with the last-admin rule,
//! optimistic concurrency on updates, session control, unlocks, resets and the audit trail.
//!
//! Every change writes its user events and an `admin_*` audit record in one transaction.

use base64::Engine as _;
use serde_json::json;

use crate::{
    accounts::{
        self, AccountSpec, Accounts, Creator, IssuedReset, ROLE_ADMIN, check_display_name,
        check_roles, revoke_all_in,
    },
    error::AuthError,
    passwords::{self, Password},
    storage::{
        self, EventKind, UserRecord, WriteTx,
        audit::{AuditEntry, AuditFilter, AuditKind, AuditRecord},
        resets::ResetPurpose,
        sessions::{ClientInfo, RevokeReason, SessionDetails},
        users::{UserChanges, UserFilter},
    },
    tokens::AccessClaims,
};

/// Largest page of ListUsers and ListAuditEvents.
pub const MAX_PAGE_SIZE: u32 = 500;
const DEFAULT_PAGE_SIZE: u32 = 50;

/// An authenticated admin and where the call came from.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The admin's user id.
    pub user_id: String,
    /// Client address and user agent.
    pub client: ClientInfo,
}

/// An account with what only admins see.
#[derive(Debug, Clone)]
pub struct UserDetails {
    /// Public state.
    pub user: UserRecord,
    /// Whether a password is set.
    pub has_password: bool,
    /// Whether TOTP is enabled.
    pub mfa_enabled: bool,
    /// Lock end, while locked.
    pub locked_until: Option<i64>,
    /// Failures in the current window.
    pub failed_logins: u32,
    /// Live sessions.
    pub live_sessions: u64,
}

/// The fields an update may change (`None`: not in the mask).
#[derive(Debug, Default)]
pub struct UserUpdate {
    /// New email.
    pub email: Option<String>,
    /// New display name.
    pub display_name: Option<String>,
    /// New verification state.
    pub email_verified: Option<bool>,
    /// New roles.
    pub roles: Option<Vec<String>>,
}

/// What a new account gets.
#[derive(Debug)]
pub struct CreateUser {
    /// Email.
    pub email: String,
    /// Password; `None` creates an invite.
    pub password: Option<Password>,
    /// Display name.
    pub display_name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Whether the email is verified.
    pub email_verified: bool,
}

/// Admin operations.
#[derive(Debug, Clone)]
pub struct Admin {
    accounts: Accounts,
}

fn page_size(requested: u32) -> u64 {
    u64::from(match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    })
}

/// Pages are read with one row more than asked: if it came, the page is cut to `size` and its
/// last row is where the next page starts.
fn cut_page<T>(rows: &mut Vec<T>, size: u64) -> Option<&T> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if rows.len() > size {
        rows.truncate(size);
        rows.last()
    } else {
        None
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn encode_page_token(kind: &str, cursor: &str) -> String {
    B64.encode(format!("{kind}:{cursor}"))
}

fn decode_page_token(kind: &str, token: &str) -> Result<Option<String>, AuthError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || AuthError::InvalidArgument("page_token is not one this call returned".into());
    let bytes = B64.decode(token.trim()).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let cursor = text
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(invalid)?;
    Ok(Some(cursor.to_owned()))
}

/// A `user_id` field: must look like a UUID, so garbage is INVALID_ARGUMENT, not NOT_FOUND.
pub fn check_user_id(id: &str) -> Result<&str, AuthError> {
    let id = id.trim();
    if id.is_empty() {
        return Err(AuthError::InvalidArgument("user_id is required".into()));
    }
    uuid::Uuid::try_parse(id)
        .map_err(|_| AuthError::InvalidArgument("user_id must be a UUID".into()))?;
    Ok(id)
}

impl Admin {
    /// Admin operations over the account domain.
    pub fn new(accounts: Accounts) -> Self {
        Self { accounts }
    }

    /// The caller must hold `admin` in the token and still be an enabled admin in the database
    /// (a demoted or disabled admin's unexpired token is refused).
    pub async fn authorize(
        &self,
        claims: AccessClaims,
        client: ClientInfo,
    ) -> Result<Actor, AuthError> {
        const DENIED: &str = "role admin required";
        if !claims.roles.iter().any(|r| r == ROLE_ADMIN) {
            return Err(AuthError::PermissionDenied(DENIED));
        }
        let current = storage::users::find_user(self.accounts.store().conn(), &claims.user_id)
            .await?
            .filter(|u| !u.disabled && u.roles.iter().any(|r| r == ROLE_ADMIN));
        if current.is_none() {
            return Err(AuthError::PermissionDenied(DENIED));
        }
        Ok(Actor {
            user_id: claims.user_id,
            client,
        })
    }

    async fn find_user(&self, user_id: &str) -> Result<UserRecord, AuthError> {
        let id = check_user_id(user_id)?;
        storage::users::find_user(self.accounts.store().conn(), id)
            .await?
            .ok_or(AuthError::NotFound("user"))
    }

    /// Re-reads the user inside `tx` (on PostgreSQL, after locking the admins).
    async fn find_user_in(&self, tx: &WriteTx, user_id: &str) -> Result<UserRecord, AuthError> {
        storage::users::find_user(&**tx, user_id)
            .await?
            .ok_or(AuthError::NotFound("user"))
    }

    /// Refuses a change that leaves no enabled admin. Locks the admin rows on PostgreSQL, so
    /// concurrent demotions are decided one after the other.
    async fn ensure_other_admin(&self, tx: &WriteTx, user: &UserRecord) -> Result<(), AuthError> {
        let admins = storage::users::find_enabled_admin_ids_for_update(&**tx).await?;
        if admins.iter().all(|id| id == &user.id) {
            return Err(AuthError::LastAdmin);
        }
        Ok(())
    }

    fn audit<'a>(actor: &'a Actor, kind: AuditKind, subject: &'a str) -> AuditRecord<'a> {
        AuditRecord::new(kind, &actor.client)
            .actor(&actor.user_id)
            .subject(subject)
    }

    /// Creates an account; without a password, returns an invite token.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn create_user(
        &self,
        actor: &Actor,
        new: CreateUser,
    ) -> Result<(UserRecord, Option<IssuedReset>), AuthError> {
        let invite = new.password.is_none();
        let spec = AccountSpec {
            email: &new.email,
            password: new.password,
            display_name: &new.display_name,
            roles: new.roles,
            email_verified: new.email_verified,
        };
        let creator = Creator {
            kind: AuditKind::AdminUserCreated,
            actor_id: Some(&actor.user_id),
            client: &actor.client,
        };
        self.accounts.create_account(spec, creator, invite).await
    }

    /// One account with its protection state.
    pub async fn get_user(&self, user_id: &str) -> Result<UserDetails, AuthError> {
        let user = self.find_user(user_id).await?;
        let conn = self.accounts.store().conn();
        let now = storage::now_millis();
        let throttle = storage::throttle::find_throttle(conn, &user.email).await?;
        Ok(UserDetails {
            has_password: storage::users::has_password(conn, &user.id).await?,
            mfa_enabled: storage::mfa::find_totp(conn, &user.id)
                .await?
                .is_some_and(|t| t.confirmed),
            locked_until: throttle
                .filter(|t| t.is_locked(now))
                .and_then(|t| t.locked_until),
            failed_logins: throttle.map_or(0, |t| t.failures),
            live_sessions: storage::sessions::count_live_sessions(conn, &user.id, now).await?,
            user,
        })
    }

    /// One page of users by id; the next page's token if there may be more.
    pub async fn list_users(
        &self,
        requested_size: u32,
        page_token: &str,
        mut filter: UserFilter,
    ) -> Result<(Vec<UserRecord>, Option<String>), AuthError> {
        let after = decode_page_token("u", page_token)?.unwrap_or_default();
        if let Some(role) = &filter.role {
            accounts::check_role(role)?;
        }
        filter.email_prefix = filter
            .email_prefix
            .map(|p| p.trim().to_lowercase())
            .filter(|p| !p.is_empty());
        if filter.email_prefix.as_ref().is_some_and(|p| p.len() > 254) {
            return Err(AuthError::InvalidArgument(
                "email_prefix is too long".into(),
            ));
        }
        let size = page_size(requested_size);
        let mut users = storage::users::find_users_page(
            self.accounts.store().conn(),
            &after,
            size + 1,
            &filter,
        )
        .await?;
        let next = cut_page(&mut users, size).map(|u| encode_page_token("u", &u.id));
        Ok((users, next))
    }

    /// Changes the fields given; with `expected_version` a concurrent change is `ABORTED`.
    /// A profile change writes `UserUpdated`, a role change `RolesChanged` (both if both, each
    /// with its own version).
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn update_user(
        &self,
        actor: &Actor,
        user_id: &str,
        update: UserUpdate,
        expected_version: Option<i64>,
    ) -> Result<UserRecord, AuthError> {
        let id = check_user_id(user_id)?;
        let mut changes = UserChanges::default();
        if let Some(email) = &update.email {
            changes.email = Some(passwords::normalize_email(email)?);
        }
        if let Some(name) = &update.display_name {
            changes.display_name = Some(check_display_name(name)?);
        }
        changes.email_verified = update.email_verified;
        if let Some(roles) = update.roles {
            changes.roles = Some(check_roles(roles)?);
        }
        let tx = self.accounts.store().begin_write().await?;
        let user = self.find_user_in(&tx, id).await?;
        if let Some(expected) = expected_version
            && expected != user.version
        {
            return Err(AuthError::VersionConflict {
                current: user.version,
            });
        }
        // Only what really changes counts.
        if changes.email.as_ref() == Some(&user.email) {
            changes.email = None;
        }
        if changes.email.is_some() && changes.email_verified.is_none() {
            changes.email_verified = Some(false);
        }
        if changes.email_verified == Some(user.email_verified) {
            changes.email_verified = None;
        }
        if changes.display_name.as_ref() == Some(&user.display_name) {
            changes.display_name = None;
        }
        if changes.roles.as_ref() == Some(&user.roles) {
            changes.roles = None;
        }
        let profile_changed = changes.email.is_some()
            || changes.display_name.is_some()
            || changes.email_verified.is_some();
        let roles_changed = changes.roles.is_some();
        if !profile_changed && !roles_changed {
            return Ok(user);
        }
        let loses_admin = changes
            .roles
            .as_ref()
            .is_some_and(|r| !r.iter().any(|r| r == ROLE_ADMIN))
            && user.roles.iter().any(|r| r == ROLE_ADMIN);
        if loses_admin && !user.disabled {
            self.ensure_other_admin(&tx, &user).await?;
        }
        let bumps = i64::from(profile_changed) + i64::from(roles_changed);
        let updated = storage::users::update_user(&*tx, id, user.version, bumps, &changes)
            .await
            .map_err(|e| match e {
                storage::StorageError::Duplicate(_) => AuthError::EmailTaken,
                other => other.into(),
            })?;
        let Some(updated) = updated else {
            // Another writer got in between our read and write (PostgreSQL, READ COMMITTED).
            let current = self.find_user(id).await?;
            return Err(AuthError::VersionConflict {
                current: current.version,
            });
        };
        if profile_changed {
            let mut state = updated.clone();
            if roles_changed {
                state.version -= 1;
            }
            storage::events::append_event(&tx, EventKind::UserUpdated, &state, None).await?;
        }
        if roles_changed {
            storage::events::append_event(&tx, EventKind::RolesChanged, &updated, None).await?;
        }
        let mut fields = Vec::new();
        if changes.email.is_some() {
            fields.push("email");
        }
        if changes.display_name.is_some() {
            fields.push("display_name");
        }
        if changes.email_verified.is_some() {
            fields.push("email_verified");
        }
        if roles_changed {
            fields.push("roles");
        }
        let record = Self::audit(actor, AuditKind::AdminUserUpdated, id).detail(json!({
            "fields": fields,
            "roles": changes.roles,
            "version": updated.version,
        }));
        storage::audit::append_audit(&*tx, record).await?;
        tx.commit().await?;
        tracing::info!(user_id = %id, ?fields, "user updated");
        Ok(updated)
    }

    /// Disables a user and revokes every session; already disabled is a no-op.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn disable_user(
        &self,
        actor: &Actor,
        user_id: &str,
    ) -> Result<(UserRecord, usize), AuthError> {
        let id = check_user_id(user_id)?;
        let tx = self.accounts.store().begin_write().await?;
        let user = self.find_user_in(&tx, id).await?;
        if user.disabled {
            return Ok((user, 0));
        }
        if user.roles.iter().any(|r| r == ROLE_ADMIN) {
            self.ensure_other_admin(&tx, &user).await?;
        }
        let changes = UserChanges {
            disabled: Some(true),
            ..Default::default()
        };
        let updated = storage::users::update_user(&*tx, id, user.version, 1, &changes)
            .await?
            .ok_or(AuthError::VersionConflict {
                current: user.version,
            })?;
        storage::events::append_event(&tx, EventKind::UserDisabled, &updated, None).await?;
        let revoked = revoke_all_in(&tx, &updated, None, RevokeReason::UserDisabled).await?;
        let record = Self::audit(actor, AuditKind::AdminUserDisabled, id)
            .detail(json!({ "revoked_sessions": revoked.len() }));
        storage::audit::append_audit(&*tx, record).await?;
        tx.commit().await?;
        let count = revoked.len();
        self.accounts.revocations().revoke_all(revoked);
        tracing::info!(user_id = %id, revoked_sessions = count, "user disabled");
        Ok((updated, count))
    }

    /// Enables a disabled user; already enabled is a no-op.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn enable_user(&self, actor: &Actor, user_id: &str) -> Result<UserRecord, AuthError> {
        let id = check_user_id(user_id)?;
        let tx = self.accounts.store().begin_write().await?;
        let user = self.find_user_in(&tx, id).await?;
        if !user.disabled {
            return Ok(user);
        }
        let changes = UserChanges {
            disabled: Some(false),
            ..Default::default()
        };
        let updated = storage::users::update_user(&*tx, id, user.version, 1, &changes)
            .await?
            .ok_or(AuthError::VersionConflict {
                current: user.version,
            })?;
        storage::events::append_event(&tx, EventKind::UserEnabled, &updated, None).await?;
        storage::audit::append_audit(&*tx, Self::audit(actor, AuditKind::AdminUserEnabled, id))
            .await?;
        tx.commit().await?;
        tracing::info!(user_id = %id, "user enabled");
        Ok(updated)
    }

    /// Deletes a user: sessions revoked, then the row becomes a tombstone with its email
    /// released and credentials, MFA and reset tokens erased.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn delete_user(&self, actor: &Actor, user_id: &str) -> Result<usize, AuthError> {
        let id = check_user_id(user_id)?;
        let tx = self.accounts.store().begin_write().await?;
        let user = self.find_user_in(&tx, id).await?;
        if user.roles.iter().any(|r| r == ROLE_ADMIN) && !user.disabled {
            self.ensure_other_admin(&tx, &user).await?;
        }
        let revoked = revoke_all_in(&tx, &user, None, RevokeReason::UserDeleted).await?;
        let deleted = storage::users::delete_user(&*tx, &user)
            .await?
            .ok_or(AuthError::NotFound("user"))?;
        storage::mfa::delete_totp(&*tx, id).await?;
        storage::resets::spend_user_resets(&*tx, id, storage::now_millis()).await?;
        storage::throttle::delete_throttle(&*tx, &user.email).await?;
        storage::events::append_event(&tx, EventKind::UserDeleted, &deleted, None).await?;
        let record = Self::audit(actor, AuditKind::AdminUserDeleted, id).detail(json!({
            "email": user.email,
            "revoked_sessions": revoked.len(),
        }));
        storage::audit::append_audit(&*tx, record).await?;
        tx.commit().await?;
        let count = revoked.len();
        self.accounts.revocations().revoke_all(revoked);
        tracing::info!(user_id = %id, revoked_sessions = count, "user deleted");
        Ok(count)
    }

    /// Revokes one session of the user (`session_id`) or all live ones.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn revoke_sessions(
        &self,
        actor: &Actor,
        user_id: &str,
        session_id: Option<&str>,
    ) -> Result<Vec<String>, AuthError> {
        let id = check_user_id(user_id)?;
        let tx = self.accounts.store().begin_write().await?;
        let user = self.find_user_in(&tx, id).await?;
        let revoked = match session_id {
            None => revoke_all_in(&tx, &user, None, RevokeReason::Admin).await?,
            Some(sid) => {
                let session = storage::sessions::find_session(&*tx, sid)
                    .await?
                    .filter(|s| s.user_id == user.id)
                    .ok_or(AuthError::NotFound("session"))?;
                let now = storage::now_millis();
                if storage::sessions::revoke_session(&*tx, &session.id, RevokeReason::Admin, now)
                    .await?
                {
                    storage::events::append_event(
                        &tx,
                        EventKind::SessionRevoked,
                        &user,
                        Some(&session.id),
                    )
                    .await?;
                    vec![session.id]
                } else {
                    Vec::new()
                }
            }
        };
        let record = Self::audit(actor, AuditKind::AdminSessionsRevoked, id)
            .detail(json!({ "session_ids": revoked }));
        storage::audit::append_audit(&*tx, record).await?;
        tx.commit().await?;
        self.accounts.revocations().revoke_all(revoked.clone());
        tracing::info!(user_id = %id, revoked_sessions = revoked.len(), "sessions revoked");
        Ok(revoked)
    }

    /// The user's sessions, newest first.
    pub async fn list_sessions(
        &self,
        user_id: &str,
        include_inactive: bool,
    ) -> Result<Vec<SessionDetails>, AuthError> {
        let user = self.find_user(user_id).await?;
        Ok(storage::sessions::find_user_sessions(
            self.accounts.store().conn(),
            &user.id,
            include_inactive,
            storage::now_millis(),
        )
        .await?)
    }

    /// Clears the lockout of the user's email; whether there was one.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn unlock_user(&self, actor: &Actor, user_id: &str) -> Result<bool, AuthError> {
        let user = self.find_user(user_id).await?;
        let tx = self.accounts.store().begin_write().await?;
        let was_locked = storage::throttle::delete_throttle(&*tx, &user.email).await?;
        let record = Self::audit(actor, AuditKind::AdminUserUnlocked, &user.id)
            .detail(json!({ "was_locked": was_locked }));
        storage::audit::append_audit(&*tx, record).await?;
        tx.commit().await?;
        tracing::info!(user_id = %user.id, was_locked, "user unlocked");
        Ok(was_locked)
    }

    /// A single-use reset token for the user.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn issue_password_reset(
        &self,
        actor: &Actor,
        user_id: &str,
    ) -> Result<IssuedReset, AuthError> {
        let user = self.find_user(user_id).await?;
        let tx = self.accounts.store().begin_write().await?;
        let issued = self
            .accounts
            .issue_reset_in(
                &tx,
                &user,
                ResetPurpose::Reset,
                Some(&actor.user_id),
                &actor.client,
            )
            .await?;
        tx.commit().await?;
        Ok(issued)
    }

    /// Removes the user's TOTP enrollment and recovery codes; whether there was one.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn reset_mfa(&self, actor: &Actor, user_id: &str) -> Result<bool, AuthError> {
        let user = self.find_user(user_id).await?;
        let tx = self.accounts.store().begin_write().await?;
        let was_enrolled = storage::mfa::delete_totp(&*tx, &user.id).await?;
        let record = Self::audit(actor, AuditKind::AdminMfaReset, &user.id)
            .detail(json!({ "was_enrolled": was_enrolled }));
        storage::audit::append_audit(&*tx, record).await?;
        tx.commit().await?;
        tracing::info!(user_id = %user.id, was_enrolled, "mfa reset");
        Ok(was_enrolled)
    }

    /// One page of the audit trail, newest first.
    pub async fn list_audit_events(
        &self,
        requested_size: u32,
        page_token: &str,
        filter: AuditFilter,
    ) -> Result<(Vec<AuditEntry>, Option<String>), AuthError> {
        let before = match decode_page_token("a", page_token)? {
            Some(cursor) => Some(cursor.parse::<i64>().map_err(|_| {
                AuthError::InvalidArgument("page_token is not one this call returned".into())
            })?),
            None => None,
        };
        if let Some(kind) = &filter.kind
            && AuditKind::parse(kind).is_none()
        {
            return Err(AuthError::InvalidArgument(format!(
                "unknown audit kind {kind:?}"
            )));
        }
        if let Some(subject) = &filter.subject_id {
            check_user_id(subject)?;
        }
        if let (Some(since), Some(until)) = (filter.since, filter.until)
            && since >= until
        {
            return Err(AuthError::InvalidArgument(
                "since must be before until".into(),
            ));
        }
        let size = page_size(requested_size);
        let mut entries = storage::audit::find_audit_page(
            self.accounts.store().conn(),
            before,
            size + 1,
            &filter,
        )
        .await?;
        let next = cut_page(&mut entries, size).map(|e| encode_page_token("a", &e.id.to_string()));
        Ok((entries, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_refuse_foreign_ones() {
        let token = encode_page_token("u", "0190-abc");
        assert_eq!(
            decode_page_token("u", &token).ok().flatten().as_deref(),
            Some("0190-abc")
        );
        assert!(decode_page_token("a", &token).is_err());
        assert!(decode_page_token("u", "%%%").is_err());
        assert_eq!(decode_page_token("u", "").ok().flatten(), None);
        assert_eq!(page_size(0), 50);
        assert_eq!(page_size(10_000), 500);
    }
}
