//! Sessions: the token pair a session is issued, refresh-token rotation with reuse detection,
//! logout, and revoking sessions (one, or all of a user's).
//!
//! # Refresh-token reuse
//!
//! Every refresh spends the presented token (a conditional UPDATE, so exactly one of many
//! concurrent presenters wins) and issues a new one. A token presented after it was spent, by
//! anyone (a thief or the legitimate client after a thief), revokes its whole session:
//! `RefreshReused`, a `SessionRevoked` event and a `refresh_reuse_detected` audit record.

use time::OffsetDateTime;

use super::{Accounts, Change};
use crate::{
    clock,
    error::AuthError,
    secrets::{self, OpaqueToken},
    storage::{
        self, ClientInfo, UserRecord,
        audit::{AuditKind, AuditRecord, Outcome},
        sessions::RevokeReason,
    },
    tokens::{AccessClaims, IssuedToken},
};

/// A refresh token.
pub type RefreshToken = OpaqueToken;

/// A new or refreshed session with its tokens.
#[derive(Debug)]
pub struct SessionTokens {
    /// Access token.
    pub access: IssuedToken,
    /// Refresh token.
    pub refresh: RefreshToken,
    /// Refresh token expiry.
    pub refresh_expires_at: OffsetDateTime,
    /// Session id.
    pub session_id: String,
    /// The user.
    pub user: UserRecord,
}

/// Revokes every live session of `user` in `change` (except `keep`), one `SessionRevoked`
/// each. Returns how many.
pub(super) async fn revoke_user_sessions(
    change: &mut Change,
    user: &UserRecord,
    keep: Option<&str>,
    reason: RevokeReason,
) -> Result<usize, AuthError> {
    let revoked = storage::sessions::revoke_user_sessions(
        change.db(),
        &user.id,
        keep,
        reason,
        clock::now_millis(),
    )
    .await?;
    for session_id in &revoked {
        change.session_revoked(user, session_id);
    }
    Ok(revoked.len())
}

/// Revokes one session of `user` in `change`; whether it was live.
pub(super) async fn revoke_session(
    change: &mut Change,
    user: &UserRecord,
    session_id: &str,
    reason: RevokeReason,
) -> Result<bool, AuthError> {
    let revoked =
        storage::sessions::revoke_session(change.db(), session_id, reason, clock::now_millis())
            .await?;
    if revoked {
        change.session_revoked(user, session_id);
    }
    Ok(revoked)
}

/// Revokes `session_id`, which must be one of `user`'s sessions (anyone else's is NOT_FOUND,
/// like an unknown one); whether it was live.
pub(super) async fn revoke_session_of(
    change: &mut Change,
    user: &UserRecord,
    session_id: &str,
    reason: RevokeReason,
) -> Result<bool, AuthError> {
    let session = storage::sessions::find_session(change.db(), session_id)
        .await?
        .filter(|s| s.user_id == user.id)
        .ok_or(AuthError::NotFound("session"))?;
    revoke_session(change, user, &session.id, reason).await
}

impl Accounts {
    /// When a session that started at `created_at` and is used `now` expires: after the
    /// refresh token lifetime, the idle timeout or at the absolute lifetime, whichever is first.
    pub(super) fn session_expiry(
        &self,
        created_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> OffsetDateTime {
        let s = &self.d.settings;
        (now + s.refresh_ttl.min(s.session_idle_timeout)).min(created_at + s.session_max_lifetime)
    }

    /// Records a new refresh token for the session in `change`, commits, and signs the access
    /// token (which expires with the session at the latest).
    pub(super) async fn issue_pair(
        &self,
        change: Change,
        user: UserRecord,
        session_id: String,
        created_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<SessionTokens, AuthError> {
        let refresh_expires_at = self.session_expiry(created_at, now);
        let refresh = RefreshToken::generate();
        storage::sessions::create_refresh_token(
            change.db(),
            refresh.hash(),
            &session_id,
            clock::millis(now),
            clock::millis(refresh_expires_at),
        )
        .await?;
        let memberships = super::memberships::token_memberships(change.db(), &user.id).await?;
        change.commit().await?;
        let access = self.d.tokens.issue_until(
            &user.id,
            &session_id,
            &user.roles,
            &memberships,
            Some(created_at + self.d.settings.session_max_lifetime),
        )?;
        Ok(SessionTokens {
            access,
            refresh,
            refresh_expires_at,
            session_id,
            user,
        })
    }

    /// Rotates a refresh token. A spent token revokes its whole session.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(
        &self,
        presented: &str,
        client: &ClientInfo,
    ) -> Result<SessionTokens, AuthError> {
        let Some(presented) = secrets::well_formed(presented) else {
            return Err(AuthError::RefreshRejected("malformed"));
        };
        let token_hash = secrets::sha256_hex(presented);
        let now = clock::now();
        let now_ms = clock::millis(now);
        let change = self.d.begin().await?;
        let Some(record) = storage::sessions::find_refresh_token(change.db(), &token_hash).await?
        else {
            return Err(AuthError::RefreshRejected("unknown"));
        };
        let session = storage::sessions::find_session(change.db(), &record.session_id)
            .await?
            .ok_or(AuthError::RefreshRejected("unknown session"))?;
        if session.revoked_at.is_some() {
            return Err(AuthError::RefreshRejected("session revoked"));
        }
        if record.used_at.is_some()
            || !storage::sessions::spend_refresh_token(change.db(), &token_hash, now_ms).await?
        {
            // Spent before (or by a concurrent caller a moment ago): treat as theft.
            let audit = AuditRecord::new(AuditKind::RefreshReuseDetected, client)
                .outcome(Outcome::Denied)
                .subject(&session.user_id)
                .session(&session.id);
            self.end_session(
                change,
                &session.user_id,
                &session.id,
                RevokeReason::RefreshReuse,
                audit,
            )
            .await?;
            tracing::warn!(user_id = %session.user_id, session_id = %session.id, "refresh token reuse; session revoked");
            return Err(AuthError::RefreshReused);
        }
        let settings = &self.d.settings;
        let expired = || AuthError::SessionEnded {
            reason: "SESSION_EXPIRED",
            message: "the session reached its maximum lifetime; log in again",
        };
        let created_at = clock::from_millis(session.created_at).ok_or_else(expired)?;
        if now >= created_at + settings.session_max_lifetime {
            return Err(expired());
        }
        if now_ms >= session.last_used_at + clock::duration_millis(settings.session_idle_timeout) {
            return Err(AuthError::SessionEnded {
                reason: "SESSION_IDLE_TIMEOUT",
                message: "the session was idle too long; log in again",
            });
        }
        if record.expires_at <= now_ms {
            return Err(AuthError::RefreshRejected("expired"));
        }
        let user = storage::users::find_user(change.db(), &session.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::RefreshRejected("account unavailable"))?;
        let expires_at = clock::millis(self.session_expiry(created_at, now));
        storage::sessions::update_session_used(change.db(), &session.id, now_ms, expires_at)
            .await?;
        let tokens = self
            .issue_pair(change, user, session.id, created_at, now)
            .await?;
        tracing::info!(user_id = %tokens.user.id, session_id = %tokens.session_id, jti = %tokens.access.token_id, "refreshed");
        Ok(tokens)
    }

    /// Revokes a session inside `change` (with `SessionRevoked` if it was live) and the audit
    /// record, and commits.
    async fn end_session(
        &self,
        mut change: Change,
        user_id: &str,
        session_id: &str,
        reason: RevokeReason,
        audit: AuditRecord<'_>,
    ) -> Result<(), AuthError> {
        let revoked =
            storage::sessions::revoke_session(change.db(), session_id, reason, clock::now_millis())
                .await?;
        let user = match revoked {
            true => storage::users::find_user(change.db(), user_id).await?,
            false => None,
        };
        match user {
            Some(user) => change.session_revoked(&user, session_id),
            None => change.refuse_session(session_id),
        }
        change.audit(audit).await?;
        change.commit().await?;
        Ok(())
    }

    /// Revokes the session of a validated token.
    #[tracing::instrument(skip_all, fields(user_id = %claims.user_id, session_id = %claims.session_id))]
    pub async fn logout(
        &self,
        claims: &AccessClaims,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        if claims.session_id.is_empty() {
            return Err(AuthError::FailedPrecondition {
                reason: "NO_SESSION",
                message: "an API key has no session to end; an admin revokes it with RevokeApiKey",
            });
        }
        let change = self.d.begin().await?;
        let audit = AuditRecord::new(AuditKind::Logout, client)
            .actor(&claims.user_id)
            .subject(&claims.user_id)
            .session(&claims.session_id);
        self.end_session(
            change,
            &claims.user_id,
            &claims.session_id,
            RevokeReason::Logout,
            audit,
        )
        .await?;
        tracing::info!(jti = %claims.token_id, "logged out");
        Ok(())
    }

    /// The token's user, if it still exists and is enabled.
    pub(super) async fn live_user(&self, claims: &AccessClaims) -> Result<UserRecord, AuthError> {
        storage::users::find_user(self.d.store.conn(), &claims.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::InvalidCredentials)
    }
}
