//! Credentials: changing the password (with the current one), reset and invite tokens, the
//! self-service reset mail, and setting a password with a token. Every password change
//! revokes the user's other sessions and writes `PasswordChanged` in the same transaction.

use serde_json::json;
use time::OffsetDateTime;

use super::{Accounts, Change, lockout, sessions::revoke_user_sessions};
use crate::{
    clock,
    error::AuthError,
    mail::Mailer,
    passwords::{self, Password, PasswordHash},
    secrets::{self, OpaqueToken},
    storage::{
        self, ClientInfo, EventKind, UserRecord,
        audit::{AuditKind, AuditRecord},
        resets::ResetPurpose,
        sessions::RevokeReason,
    },
    tokens::AccessClaims,
};

/// A reset or invite token handed out once.
#[derive(Debug)]
pub struct IssuedReset {
    /// The token.
    pub token: OpaqueToken,
    /// Its expiry.
    pub expires_at: OffsetDateTime,
}

impl Accounts {
    /// Checks `user`'s current password and returns the hash it matched (no lockout counting:
    /// the caller already holds a session).
    pub(super) async fn check_current_password(
        &self,
        user: &UserRecord,
        current: Password,
    ) -> Result<PasswordHash, AuthError> {
        if current.expose().is_empty() {
            return Err(AuthError::InvalidCredentials);
        }
        passwords::check_password_size(current.expose())?;
        let hash = storage::users::find_password_hash(self.d.store.conn(), &user.id).await?;
        let Some(hash) = hash else {
            return Err(AuthError::InvalidCredentials);
        };
        if !self.d.hasher.verify(current, Some(hash.clone())).await? {
            tracing::info!("wrong current password");
            return Err(AuthError::InvalidCredentials);
        }
        Ok(hash)
    }

    /// Changes the password of the token's user after checking the current one; revokes every
    /// other session. The change, `PasswordChanged`, one `SessionRevoked` per revoked session
    /// and the audit record commit together. Returns how many sessions were revoked.
    #[tracing::instrument(skip_all, fields(user_id = %claims.user_id))]
    pub async fn change_password(
        &self,
        claims: &AccessClaims,
        current: Password,
        new: Password,
        client: &ClientInfo,
    ) -> Result<usize, AuthError> {
        let d = &self.d;
        let user = self.live_user(claims).await?;
        // Check the new password's rules before spending a hash on the current one.
        passwords::check_new_password(new.expose(), &user.email, d.settings.min_password_length)?;
        let old_hash = self.check_current_password(&user, current).await?;
        let new_hash = d.hasher.hash(new).await?;
        let mut change = d.begin().await?;
        let Some(updated) =
            storage::users::update_password(change.db(), &user.id, &old_hash, new_hash).await?
        else {
            // Changed concurrently: the current password is no longer the one we checked.
            return Err(AuthError::InvalidCredentials);
        };
        change.event(EventKind::PasswordChanged, &updated);
        let count = revoke_user_sessions(
            &mut change,
            &updated,
            Some(&claims.session_id),
            RevokeReason::PasswordChanged,
        )
        .await?;
        let record = AuditRecord::new(AuditKind::PasswordChanged, client)
            .actor(&user.id)
            .subject(&user.id)
            .session(&claims.session_id)
            .detail(json!({ "revoked_sessions": count }));
        change.audit(record).await?;
        change.commit().await?;
        tracing::info!(revoked_sessions = count, "password changed");
        Ok(count)
    }

    /// Stores a new reset (or invite) token for `user` in `change` and audits its issue.
    pub(super) async fn issue_reset_in(
        &self,
        change: &Change,
        user: &UserRecord,
        purpose: ResetPurpose,
        issued_by: Option<&str>,
        client: &ClientInfo,
    ) -> Result<IssuedReset, AuthError> {
        let now = clock::now();
        let ttl = match purpose {
            ResetPurpose::Reset => self.d.settings.reset_token_ttl,
            ResetPurpose::Invite => self.d.settings.invite_ttl,
        };
        let expires_at = now + ttl;
        let token = OpaqueToken::generate();
        storage::resets::create_reset(
            change.db(),
            token.hash(),
            &user.id,
            purpose,
            issued_by,
            clock::millis(now),
            clock::millis(expires_at),
        )
        .await?;
        let kind = match issued_by {
            Some(_) => AuditKind::AdminPasswordResetIssued,
            None => AuditKind::PasswordResetIssued,
        };
        let mut record = AuditRecord::new(kind, client)
            .subject(&user.id)
            .detail(json!({
                "purpose": format!("{purpose:?}").to_lowercase(),
                "expires_at": clock::millis(expires_at),
            }));
        if let Some(actor) = issued_by {
            record = record.actor(actor);
        }
        change.audit(record).await?;
        Ok(IssuedReset { token, expires_at })
    }

    /// Self-service reset: always answers at once; if the email belongs to an enabled account, a
    /// token is created and mailed in the background (so timing tells nothing either).
    #[tracing::instrument(skip_all)]
    pub async fn request_password_reset(
        &self,
        email: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let Some(mailer) = self.d.mailer.clone() else {
            return Err(AuthError::FailedPrecondition {
                reason: "RESET_DISABLED",
                message: "self-service password reset is disabled: no SMTP server is configured (AUTH_SMTP_URL); ask an admin for a reset token",
            });
        };
        let email = passwords::normalize_email(email)?;
        let this = self.clone();
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(error) = this.mail_reset(&mailer, &email, &client).await {
                tracing::error!(error.message = %error, error.cause_chain = ?error, "password reset mail failed");
            }
        });
        Ok(())
    }

    async fn mail_reset(
        &self,
        mailer: &Mailer,
        email: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let user = storage::users::find_user_by_email(self.d.store.conn(), email).await?;
        let Some(user) = user.filter(|u| !u.disabled) else {
            tracing::info!("password reset asked for an unknown or disabled email; nothing sent");
            return Ok(());
        };
        let change = self.d.begin().await?;
        let issued = self
            .issue_reset_in(&change, &user, ResetPurpose::Reset, None, client)
            .await?;
        change.commit().await?;
        if let Err(error) = mailer
            .send_reset(
                &user.email,
                issued.token.expose(),
                self.d.settings.reset_token_ttl,
            )
            .await
        {
            tracing::error!(user_id = %user.id, error.message = %error, "could not send the reset mail");
            return Ok(());
        }
        tracing::info!(user_id = %user.id, "password reset mail sent");
        Ok(())
    }

    /// Sets a new password with a reset or invite token: the token is spent (exactly once, also
    /// under concurrent use), every session revoked, older tokens voided, the lockout cleared,
    /// `PasswordChanged` and the audit record written, all in one transaction.
    #[tracing::instrument(skip_all)]
    pub async fn reset_password(
        &self,
        reset_token: &str,
        new_password: Password,
        client: &ClientInfo,
    ) -> Result<usize, AuthError> {
        let token = secrets::well_formed(reset_token).ok_or(AuthError::ResetTokenInvalid)?;
        let token_hash = secrets::sha256_hex(token);
        let d = &self.d;
        let conn = d.store.conn();
        let now = clock::now_millis();
        let pending = storage::resets::find_reset(conn, &token_hash)
            .await?
            .filter(|r| r.used_at.is_none() && r.expires_at > now)
            .ok_or(AuthError::ResetTokenInvalid)?;
        let user = storage::users::find_user(conn, &pending.user_id)
            .await?
            .ok_or(AuthError::ResetTokenInvalid)?;
        // A weak password must not burn the token.
        passwords::check_new_password(
            new_password.expose(),
            &user.email,
            d.settings.min_password_length,
        )?;
        let hash = d.hasher.hash(new_password).await?;
        let mut change = d.begin().await?;
        if storage::resets::spend_reset(change.db(), &token_hash, clock::now_millis())
            .await?
            .is_none()
        {
            return Err(AuthError::ResetTokenInvalid);
        }
        let updated = storage::users::set_password(change.db(), &user.id, hash)
            .await?
            .ok_or(AuthError::ResetTokenInvalid)?;
        storage::resets::spend_user_resets(change.db(), &user.id, now).await?;
        lockout::clear(change.db(), &user.email).await?;
        change.event(EventKind::PasswordChanged, &updated);
        let count =
            revoke_user_sessions(&mut change, &updated, None, RevokeReason::PasswordReset).await?;
        let record = AuditRecord::new(AuditKind::PasswordResetUsed, client)
            .actor(&user.id)
            .subject(&user.id)
            .detail(json!({ "revoked_sessions": count }));
        change.audit(record).await?;
        change.commit().await?;
        tracing::info!(user_id = %user.id, revoked_sessions = count, "password reset");
        Ok(count)
    }
}
