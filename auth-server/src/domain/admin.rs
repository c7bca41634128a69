//! The admin flows behind `AdminService`: who is an admin, account creation and changes with
//! the last-admin rule and optimistic concurrency, disabling and deleting, sessions, unlocks,
//! resets. Reads (one user, pages, sessions, audit trail) are in `admin_views.rs`.
//!
//! Every change writes its user events and an `admin_*` audit record in one [`Change`].

use std::sync::Arc;

use serde_json::json;

use super::{
    Accounts, Change, Domain, ROLE_ADMIN,
    credentials::IssuedReset,
    deletion::{delete_account, ensure_other_admin},
    lockout,
    rules::{check_display_name, check_roles, check_user_id},
    sessions::{revoke_session_of, revoke_user_sessions},
    signup::{AccountSpec, Creator},
};
use crate::{
    error::AuthError,
    passwords::{self, Password},
    storage::{
        self, ClientInfo, EventKind, UserRecord,
        audit::{AuditKind, AuditRecord},
        resets::ResetPurpose,
        sessions::RevokeReason,
        users::UserChanges,
    },
    tokens::AccessClaims,
};

/// An authenticated admin and where the call came from.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The admin's user id.
    pub user_id: String,
    /// Client address and user agent.
    pub client: ClientInfo,
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
    /// New metadata, replacing the old.
    pub metadata: Option<storage::organizations::Metadata>,
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
    /// Admin-owned metadata.
    pub metadata: storage::organizations::Metadata,
}

/// Sets `user`'s disabled flag in `change`, bumping its version.
async fn set_disabled(
    change: &Change,
    user: &UserRecord,
    disabled: bool,
) -> Result<UserRecord, AuthError> {
    let changes = UserChanges {
        disabled: Some(disabled),
        ..Default::default()
    };
    storage::users::update_user(change.db(), &user.id, user.version, 1, &changes)
        .await?
        .ok_or(AuthError::VersionConflict {
            what: "user",
            current: user.version,
        })
}

/// Admin operations.
#[derive(Debug, Clone)]
pub struct Admin {
    pub(super) accounts: Accounts,
}

impl Admin {
    /// Admin operations over the shared domain state.
    pub(super) fn new(d: Arc<Domain>) -> Self {
        Self {
            accounts: Accounts { d },
        }
    }

    pub(super) fn d(&self) -> &Domain {
        &self.accounts.d
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
        let current = storage::users::find_user(self.d().store.conn(), &claims.user_id)
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

    pub(super) async fn find_user(&self, user_id: &str) -> Result<UserRecord, AuthError> {
        let id = check_user_id(user_id)?;
        storage::users::find_user(self.d().store.conn(), id)
            .await?
            .ok_or(AuthError::NotFound("user"))
    }

    /// Re-reads the user inside `change` (on PostgreSQL, after locking the admins).
    async fn find_user_in(&self, change: &Change, user_id: &str) -> Result<UserRecord, AuthError> {
        storage::users::find_user(change.db(), user_id)
            .await?
            .ok_or(AuthError::NotFound("user"))
    }

    pub(super) fn audit<'a>(
        actor: &'a Actor,
        kind: AuditKind,
        subject: &'a str,
    ) -> AuditRecord<'a> {
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
            service_account: false,
            metadata: new.metadata,
        };
        let creator = Creator {
            kind: AuditKind::AdminUserCreated,
            actor_id: Some(&actor.user_id),
            client: &actor.client,
        };
        self.accounts.create_account(spec, creator, invite).await
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
        if let Some(metadata) = update.metadata {
            super::rules::check_metadata(&metadata)?;
            changes.metadata = Some(metadata);
        }
        let mut change = self.d().begin().await?;
        let user = self.find_user_in(&change, id).await?;
        if let Some(expected) = expected_version
            && expected != user.version
        {
            return Err(AuthError::VersionConflict {
                what: "user",
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
        if changes.metadata.as_ref() == Some(&user.metadata) {
            changes.metadata = None;
        }
        let profile_changed = changes.email.is_some()
            || changes.display_name.is_some()
            || changes.email_verified.is_some()
            || changes.metadata.is_some();
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
            ensure_other_admin(&change, &user).await?;
        }
        let bumps = i64::from(profile_changed) + i64::from(roles_changed);
        let updated = storage::users::update_user(change.db(), id, user.version, bumps, &changes)
            .await
            .map_err(|e| match e {
                storage::StorageError::Duplicate(_) => AuthError::EmailTaken,
                other => other.into(),
            })?;
        let Some(updated) = updated else {
            // Another writer got in between our read and write (PostgreSQL, READ COMMITTED).
            let current = self.find_user(id).await?;
            return Err(AuthError::VersionConflict {
                what: "user",
                current: current.version,
            });
        };
        if profile_changed {
            let mut state = updated.clone();
            if roles_changed {
                state.version -= 1;
            }
            change.event(EventKind::UserUpdated, &state);
        }
        if roles_changed {
            change.event(EventKind::RolesChanged, &updated);
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
        if changes.metadata.is_some() {
            fields.push("metadata");
        }
        if roles_changed {
            fields.push("roles");
        }
        let record = Self::audit(actor, AuditKind::AdminUserUpdated, id).detail(json!({
            "fields": fields,
            "roles": changes.roles,
            "version": updated.version,
        }));
        change.audit(record).await?;
        change.commit().await?;
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
        let mut change = self.d().begin().await?;
        let user = self.find_user_in(&change, id).await?;
        if user.disabled {
            return Ok((user, 0));
        }
        if user.roles.iter().any(|r| r == ROLE_ADMIN) {
            ensure_other_admin(&change, &user).await?;
        }
        let updated = set_disabled(&change, &user, true).await?;
        change.event(EventKind::UserDisabled, &updated);
        let count =
            revoke_user_sessions(&mut change, &updated, None, RevokeReason::UserDisabled).await?;
        let record = Self::audit(actor, AuditKind::AdminUserDisabled, id)
            .detail(json!({ "revoked_sessions": count }));
        change.audit(record).await?;
        change.commit().await?;
        tracing::info!(user_id = %id, revoked_sessions = count, "user disabled");
        Ok((updated, count))
    }

    /// Enables a disabled user; already enabled is a no-op.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn enable_user(&self, actor: &Actor, user_id: &str) -> Result<UserRecord, AuthError> {
        let id = check_user_id(user_id)?;
        let mut change = self.d().begin().await?;
        let user = self.find_user_in(&change, id).await?;
        if !user.disabled {
            return Ok(user);
        }
        let updated = set_disabled(&change, &user, false).await?;
        change.event(EventKind::UserEnabled, &updated);
        change
            .audit(Self::audit(actor, AuditKind::AdminUserEnabled, id))
            .await?;
        change.commit().await?;
        tracing::info!(user_id = %id, "user enabled");
        Ok(updated)
    }

    /// Deletes a user: sessions revoked, then the row becomes a tombstone with its email
    /// released and credentials, MFA and reset tokens erased.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn delete_user(&self, actor: &Actor, user_id: &str) -> Result<usize, AuthError> {
        let id = check_user_id(user_id)?;
        let mut change = self.d().begin().await?;
        let user = self.find_user_in(&change, id).await?;
        if user.roles.iter().any(|r| r == ROLE_ADMIN) && !user.disabled {
            ensure_other_admin(&change, &user).await?;
        }
        let count = delete_account(&mut change, &user, self.accounts.erasure_due_at()).await?;
        let record = Self::audit(actor, AuditKind::AdminUserDeleted, id).detail(json!({
            "email": user.email,
            "revoked_sessions": count,
        }));
        change.audit(record).await?;
        change.commit().await?;
        self.accounts.erase_if_due(id).await;
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
        let mut change = self.d().begin().await?;
        let user = self.find_user_in(&change, id).await?;
        match session_id {
            None => {
                revoke_user_sessions(&mut change, &user, None, RevokeReason::Admin).await?;
            }
            Some(sid) => {
                revoke_session_of(&mut change, &user, sid, RevokeReason::Admin).await?;
            }
        }
        let record = Self::audit(actor, AuditKind::AdminSessionsRevoked, id)
            .detail(json!({ "session_ids": change.revoked() }));
        change.audit(record).await?;
        let revoked = change.commit().await?.revoked;
        tracing::info!(user_id = %id, revoked_sessions = revoked.len(), "sessions revoked");
        Ok(revoked)
    }

    /// Clears the lockout of the user's email; whether there was one.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn unlock_user(&self, actor: &Actor, user_id: &str) -> Result<bool, AuthError> {
        let user = self.find_user(user_id).await?;
        // "Was locked" means a lock was in force, not merely that failures were counted.
        let was_locked = self
            .accounts
            .lockout_state(&user.email)
            .await?
            .locked_until
            .is_some();
        let change = self.d().begin().await?;
        lockout::clear(change.db(), &user.email).await?;
        let record = Self::audit(actor, AuditKind::AdminUserUnlocked, &user.id)
            .detail(json!({ "was_locked": was_locked }));
        change.audit(record).await?;
        change.commit().await?;
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
        let change = self.d().begin().await?;
        let issued = self
            .accounts
            .issue_reset_in(
                &change,
                &user,
                ResetPurpose::Reset,
                Some(&actor.user_id),
                &actor.client,
            )
            .await?;
        change.commit().await?;
        Ok(issued)
    }

    /// Removes the user's TOTP enrollment and recovery codes; whether there was one.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn reset_mfa(&self, actor: &Actor, user_id: &str) -> Result<bool, AuthError> {
        let user = self.find_user(user_id).await?;
        let change = self.d().begin().await?;
        let was_enrolled = storage::mfa::delete_totp(change.db(), &user.id).await?;
        let record = Self::audit(actor, AuditKind::AdminMfaReset, &user.id)
            .detail(json!({ "was_enrolled": was_enrolled }));
        change.audit(record).await?;
        change.commit().await?;
        tracing::info!(user_id = %user.id, was_enrolled, "mfa reset");
        Ok(was_enrolled)
    }
}
