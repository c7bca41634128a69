//! The caller's own account (`GetMe`, `ListMySessions`, `RevokeMySessions`): what a signed-in
//! user may read and end by themselves, with the bearer token as the only credential.

use serde_json::json;

use super::{
    Accounts, ROLE_ADMIN,
    deletion::{delete_account, ensure_other_admin},
    memberships::{UserOrganization, user_organizations},
    sessions::{revoke_session_of, revoke_user_sessions},
};
use crate::{
    clock,
    error::AuthError,
    passwords::Password,
    storage::{
        self, ClientInfo, UserRecord,
        audit::{AuditKind, AuditRecord, Outcome},
        sessions::{RevokeReason, SessionDetails},
    },
    tokens::AccessClaims,
};

/// The caller's account.
#[derive(Debug, Clone)]
pub struct Me {
    /// Public state.
    pub user: UserRecord,
    /// Last login, unix ms.
    pub last_login_at: Option<i64>,
    /// Last password set, unix ms; `None` without a password.
    pub password_changed_at: Option<i64>,
    /// Whether TOTP is on.
    pub mfa_enabled: bool,
    /// Organizations now, by id.
    pub organizations: Vec<UserOrganization>,
}

/// Which of the caller's sessions to end.
#[derive(Debug, Clone, Copy)]
pub enum MySessions<'a> {
    /// This one.
    One(&'a str),
    /// Every one but the caller's current session.
    AllButCurrent,
}

impl Accounts {
    /// The caller's account as it is now.
    #[tracing::instrument(skip_all, fields(user_id = %claims.user_id))]
    pub async fn me(&self, claims: &AccessClaims) -> Result<Me, AuthError> {
        let user = self.live_user(claims).await?;
        let conn = self.d.store.conn();
        let (last_login_at, password_changed_at) =
            storage::users::find_login_times(conn, &user.id).await?;
        let mfa_enabled = storage::mfa::find_totp(conn, &user.id)
            .await?
            .is_some_and(|t| t.confirmed);
        let organizations = user_organizations(conn, &user.id).await?;
        Ok(Me {
            user,
            last_login_at,
            password_changed_at,
            mfa_enabled,
            organizations,
        })
    }

    /// The caller's live sessions, newest first.
    pub async fn my_sessions(
        &self,
        claims: &AccessClaims,
    ) -> Result<Vec<SessionDetails>, AuthError> {
        let user = self.live_user(claims).await?;
        Ok(storage::sessions::find_user_sessions(
            self.d.store.conn(),
            &user.id,
            false,
            clock::now_millis(),
        )
        .await?)
    }

    /// Ends one of the caller's sessions, or all but the current one; returns the ids ended.
    /// A session of someone else is NOT_FOUND, as an unknown one.
    #[tracing::instrument(skip_all, fields(user_id = %claims.user_id))]
    pub async fn revoke_my_sessions(
        &self,
        claims: &AccessClaims,
        which: MySessions<'_>,
        client: &ClientInfo,
    ) -> Result<Vec<String>, AuthError> {
        let mut change = self.d.begin().await?;
        let user = storage::users::find_user(change.db(), &claims.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::InvalidCredentials)?;
        match which {
            MySessions::One(session_id) => {
                let session_id = super::rules::check_id("session_id", session_id)?;
                revoke_session_of(&mut change, &user, session_id, RevokeReason::User).await?;
            }
            MySessions::AllButCurrent => {
                let keep = (!claims.session_id.is_empty()).then_some(claims.session_id.as_str());
                revoke_user_sessions(&mut change, &user, keep, RevokeReason::User).await?;
            }
        }
        let mut record = AuditRecord::new(AuditKind::SessionsRevoked, client)
            .actor(&user.id)
            .subject(&user.id)
            .detail(json!({ "session_ids": change.revoked() }));
        if !claims.session_id.is_empty() {
            record = record.session(&claims.session_id);
        }
        change.audit(record).await?;
        let revoked = change.commit().await?.revoked;
        tracing::info!(revoked_sessions = revoked.len(), "own sessions revoked");
        Ok(revoked)
    }

    /// Deletes the caller's account after checking the current password and, when MFA is on,
    /// a current TOTP code (spent, so it cannot be replayed); the same deletion as an admin's.
    /// The last enabled admin cannot delete themselves. Returns how many sessions ended.
    #[tracing::instrument(skip_all, fields(user_id = %claims.user_id))]
    pub async fn delete_my_account(
        &self,
        claims: &AccessClaims,
        current: Password,
        totp_code: &str,
        client: &ClientInfo,
    ) -> Result<usize, AuthError> {
        let d = &self.d;
        let user = self.live_user(claims).await?;
        let totp_code = totp_code.trim();
        if totp_code.len() > 32 {
            return Err(AuthError::MfaCodeInvalid);
        }
        self.check_current_password(&user, current).await?;
        let totp = storage::mfa::find_totp(d.store.conn(), &user.id)
            .await?
            .filter(|t| t.confirmed);
        let mut change = d.begin().await?;
        if let Some(totp) = totp {
            if totp_code.is_empty() {
                return Err(AuthError::InvalidArgument(
                    "totp_code is required: MFA is on for this account".into(),
                ));
            }
            if !self
                .spend_totp_code(&change, &user.id, &totp, totp_code)
                .await?
            {
                drop(change);
                let record = AuditRecord::new(AuditKind::MfaFailed, client)
                    .outcome(Outcome::Failure)
                    .actor(&user.id)
                    .subject(&user.id)
                    .detail(json!({ "stage": "delete_account" }));
                storage::audit::append_audit(d.store.conn(), record).await?;
                return Err(AuthError::MfaCodeInvalid);
            }
        }
        if user.roles.iter().any(|r| r == ROLE_ADMIN) {
            ensure_other_admin(&change, &user).await?;
        }
        let count = delete_account(&mut change, &user, self.erasure_due_at()).await?;
        let mut record = AuditRecord::new(AuditKind::AccountDeleted, client)
            .actor(&user.id)
            .subject(&user.id)
            .detail(json!({ "email": user.email, "revoked_sessions": count }));
        if !claims.session_id.is_empty() {
            record = record.session(&claims.session_id);
        }
        change.audit(record).await?;
        change.commit().await?;
        self.erase_if_due(&user.id).await;
        tracing::info!(revoked_sessions = count, "account deleted by its user");
        Ok(count)
    }
}
