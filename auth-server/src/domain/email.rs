//! The caller's email address: verification by a mailed single-use token
//! (`RequestEmailVerification`, `VerifyEmail`) and the self-service change (`ChangeEmail`).
//!
//! Tokens live in `email_verifications` (SHA-256 only) with the address they were mailed to,
//! apart from password reset tokens, so one can never be spent as the other. A token verifies
//! its address only while the account still has it; a newer token, a change of address or a
//! verification voids the older ones.

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use super::{Accounts, Change};
use crate::{
    clock,
    error::AuthError,
    mail::Mailer,
    passwords::{self, Password},
    secrets::{self, OpaqueToken},
    storage::{
        self, ClientInfo, EventKind, StorageError, UserRecord,
        audit::{AuditKind, AuditRecord},
        users::UserChanges,
    },
    tokens::AccessClaims,
};

/// Least time between two verification mails to one account.
pub const VERIFICATION_MAIL_COOLDOWN: Duration = Duration::from_secs(60);

/// A verification mail that went out.
#[derive(Debug, Clone)]
pub struct VerificationSent {
    /// The address mailed.
    pub email: String,
    /// When its token stops working.
    pub expires_at: OffsetDateTime,
}

/// The account after `ChangeEmail`.
#[derive(Debug, Clone)]
pub struct EmailChanged {
    /// The user, new address unverified.
    pub user: UserRecord,
    /// Whether the verification mail to the new address went out.
    pub verification_sent: bool,
}

impl Accounts {
    fn mailer(&self) -> Result<Mailer, AuthError> {
        self.d.mailer.clone().ok_or(AuthError::FailedPrecondition {
            reason: "MAIL_DISABLED",
            message: "no SMTP server is configured (AUTH_SMTP_URL), so no verification mail can be sent; ask an admin to mark the address verified",
        })
    }

    /// Voids the user's earlier tokens and stores a new one for their current address in
    /// `change`, with its audit record.
    async fn issue_verification_in(
        &self,
        change: &Change,
        user: &UserRecord,
        client: &ClientInfo,
    ) -> Result<(OpaqueToken, OffsetDateTime), AuthError> {
        let now = clock::now();
        let expires_at = now + self.d.settings.verification_ttl;
        let token = OpaqueToken::generate();
        storage::verifications::void_user_verifications(change.db(), &user.id, clock::millis(now))
            .await?;
        storage::verifications::create_verification(
            change.db(),
            token.hash(),
            &user.id,
            &user.email,
            clock::millis(now),
            clock::millis(expires_at),
        )
        .await?;
        let record = AuditRecord::new(AuditKind::EmailVerificationIssued, client)
            .actor(&user.id)
            .subject(&user.id)
            .detail(json!({ "expires_at": clock::millis(expires_at) }));
        change.audit(record).await?;
        Ok((token, expires_at))
    }

    /// Mails a verification token to the caller's address. The token is stored before the
    /// mail goes out; if sending fails it is deleted again and the call is UNAVAILABLE.
    #[tracing::instrument(skip_all, fields(user_id = %claims.user_id))]
    pub async fn request_email_verification(
        &self,
        claims: &AccessClaims,
        client: &ClientInfo,
    ) -> Result<VerificationSent, AuthError> {
        let mailer = self.mailer()?;
        let user = self.live_user(claims).await?;
        if user.email_verified {
            return Err(AuthError::FailedPrecondition {
                reason: "EMAIL_ALREADY_VERIFIED",
                message: "the address is already verified",
            });
        }
        let conn = self.d.store.conn();
        if let Some(last) = storage::verifications::latest_verification_at(conn, &user.id).await? {
            let since =
                Duration::from_millis(u64::try_from(clock::now_millis() - last).unwrap_or(0));
            if let Some(retry_after) = VERIFICATION_MAIL_COOLDOWN.checked_sub(since)
                && !retry_after.is_zero()
            {
                return Err(AuthError::MailCooldown { retry_after });
            }
        }
        let change = self.d.begin().await?;
        let (token, expires_at) = self.issue_verification_in(&change, &user, client).await?;
        change.commit().await?;
        let valid_for = self.d.settings.verification_ttl;
        if let Err(error) = mailer
            .send_verification(&user.email, token.expose(), valid_for)
            .await
        {
            // Let the user ask again at once: the token never reached them.
            storage::verifications::delete_verification(conn, &token.hash()).await?;
            return Err(AuthError::MailUnavailable(error));
        }
        tracing::info!("email verification mail sent");
        Ok(VerificationSent {
            email: user.email,
            expires_at,
        })
    }

    /// Spends a verification token and marks its address verified (`UserUpdated`), if the
    /// account still has that address and is enabled. Earlier tokens are voided.
    #[tracing::instrument(skip_all)]
    pub async fn verify_email(
        &self,
        token: &str,
        client: &ClientInfo,
    ) -> Result<UserRecord, AuthError> {
        let token = secrets::well_formed(token).ok_or(AuthError::VerificationTokenInvalid)?;
        let token_hash = secrets::sha256_hex(token);
        let now = clock::now_millis();
        let mut change = self.d.begin().await?;
        let spent = storage::verifications::spend_verification(change.db(), &token_hash, now)
            .await?
            .ok_or(AuthError::VerificationTokenInvalid)?;
        let user = storage::users::find_user(change.db(), &spent.user_id)
            .await?
            .filter(|u| !u.disabled && u.email == spent.email)
            .ok_or(AuthError::VerificationTokenInvalid)?;
        storage::verifications::void_user_verifications(change.db(), &user.id, now).await?;
        let user = if user.email_verified {
            user
        } else {
            let changes = UserChanges {
                email_verified: Some(true),
                ..UserChanges::default()
            };
            let updated =
                storage::users::update_user(change.db(), &user.id, user.version, 1, &changes)
                    .await?
                    // Changed in between: the rollback keeps the token, so a retry works.
                    .ok_or(AuthError::VersionConflict {
                        what: "user",
                        current: user.version,
                    })?;
            change.event(EventKind::UserUpdated, &updated);
            updated
        };
        let record = AuditRecord::new(AuditKind::EmailVerified, client)
            .actor(&user.id)
            .subject(&user.id);
        change.audit(record).await?;
        change.commit().await?;
        tracing::info!(user_id = %user.id, "email verified");
        Ok(user)
    }

    /// Changes the caller's address after checking the current password: the new address is
    /// unverified (`UserUpdated`), earlier tokens are void, and with SMTP a verification mail
    /// goes to the new address (its token stored in the same transaction) and a notice to the
    /// old one. A taken address is `EMAIL_TAKEN`.
    #[tracing::instrument(skip_all, fields(user_id = %claims.user_id))]
    pub async fn change_email(
        &self,
        claims: &AccessClaims,
        current: Password,
        new_email: &str,
        client: &ClientInfo,
    ) -> Result<EmailChanged, AuthError> {
        let new_email = passwords::normalize_email(new_email)?;
        let user = self.live_user(claims).await?;
        if new_email == user.email {
            return Err(AuthError::InvalidArgument(
                "new_email is the account's address already".into(),
            ));
        }
        self.check_current_password(&user, current).await?;
        let mut change = self.d.begin().await?;
        let changes = UserChanges {
            email: Some(new_email.clone()),
            email_verified: Some(false),
            ..UserChanges::default()
        };
        let updated = storage::users::update_user(change.db(), &user.id, user.version, 1, &changes)
            .await
            .map_err(|e| match e {
                StorageError::Duplicate(_) => AuthError::EmailTaken,
                other => other.into(),
            })?
            .ok_or(AuthError::VersionConflict {
                what: "user",
                current: user.version,
            })?;
        change.event(EventKind::UserUpdated, &updated);
        let mailer = self.d.mailer.clone();
        let token = match &mailer {
            Some(_) => Some(
                self.issue_verification_in(&change, &updated, client)
                    .await?
                    .0,
            ),
            None => {
                storage::verifications::void_user_verifications(
                    change.db(),
                    &user.id,
                    clock::now_millis(),
                )
                .await?;
                None
            }
        };
        let record = AuditRecord::new(AuditKind::EmailChanged, client)
            .actor(&user.id)
            .subject(&user.id)
            .session(&claims.session_id)
            .detail(json!({ "from": user.email, "to": updated.email }));
        change.audit(record).await?;
        change.commit().await?;
        tracing::info!("email changed");
        let mut verification_sent = false;
        if let (Some(mailer), Some(token)) = (mailer, token) {
            match mailer
                .send_verification(
                    &updated.email,
                    token.expose(),
                    self.d.settings.verification_ttl,
                )
                .await
            {
                Ok(()) => verification_sent = true,
                Err(error) => {
                    tracing::warn!(error.message = %error, "could not send the verification mail to the new address");
                }
            }
            let (old, new) = (user.email, updated.email.clone());
            tokio::spawn(async move {
                if let Err(error) = mailer.send_email_changed(&old, &new).await {
                    tracing::warn!(error.message = %error, "could not send the address-change notice to the old address");
                }
            });
        }
        Ok(EmailChanged {
            user: updated,
            verification_sent,
        })
    }
}
