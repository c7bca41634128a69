//! The caller's own account (`GetMe`, `ListMySessions`, `RevokeMySessions`): what a signed-in
//! user may read and end by themselves, with the bearer token as the only credential.

use serde_json::json;

use super::{
    Accounts,
    memberships::{UserOrganization, user_organizations},
    sessions::{revoke_session, revoke_user_sessions},
};
use crate::{
    clock,
    error::AuthError,
    storage::{
        self, ClientInfo, UserRecord,
        audit::{AuditKind, AuditRecord},
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
                let session = storage::sessions::find_session(change.db(), session_id)
                    .await?
                    .filter(|s| s.user_id == user.id)
                    .ok_or(AuthError::NotFound("session"))?;
                revoke_session(&mut change, &user, &session.id, RevokeReason::User).await?;
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
}
