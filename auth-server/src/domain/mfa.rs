//! TOTP enrollment: begin (a new secret, sealed at rest), confirm with a current code (returns
//! the recovery codes), and disable with the password. The login's second step is in
//! `login.rs`; secrets and codes themselves are `crate::mfa`.

use serde_json::json;

use super::{Accounts, Change};
use crate::{
    clock,
    error::AuthError,
    mfa::{self, TotpSecret},
    passwords::Password,
    secrets,
    storage::{
        self, ClientInfo,
        audit::{AuditKind, AuditRecord, Outcome},
        mfa::TotpRecord,
    },
    tokens::{AccessClaims, TokenError},
};

fn mfa_already_enabled() -> AuthError {
    AuthError::FailedPrecondition {
        reason: "MFA_ALREADY_ENABLED",
        message: "TOTP is already enabled; disable it first to enroll a new device",
    }
}

impl Accounts {
    /// Starts (or restarts) a TOTP enrollment for the token's user: base32 secret and
    /// `otpauth://` URI. Already enabled is `FAILED_PRECONDITION`.
    #[tracing::instrument(skip_all, fields(user_id = %claims.user_id))]
    pub async fn begin_totp_enrollment(
        &self,
        claims: &AccessClaims,
    ) -> Result<(String, String), AuthError> {
        let d = &self.d;
        let user = storage::users::find_user(d.store.conn(), &claims.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::Token(TokenError::SessionRevoked))?;
        let secret = TotpSecret::generate();
        let stored = d.mfa.encrypt(&user.id, &secret)?;
        let change = d.begin().await?;
        if !storage::mfa::create_pending_totp(change.db(), &user.id, stored, clock::now_millis())
            .await?
        {
            return Err(mfa_already_enabled());
        }
        change.commit().await?;
        let provisioning = secret.provisioning(&d.settings.totp_issuer, &user.email)?;
        tracing::info!("totp enrollment started");
        Ok(provisioning)
    }

    /// Confirms the pending enrollment with a current code; returns the recovery codes.
    #[tracing::instrument(skip_all, fields(user_id = %claims.user_id))]
    pub async fn confirm_totp_enrollment(
        &self,
        claims: &AccessClaims,
        code: &str,
        client: &ClientInfo,
    ) -> Result<Vec<String>, AuthError> {
        if code.len() > 32 {
            return Err(AuthError::MfaCodeInvalid);
        }
        let d = &self.d;
        let conn = d.store.conn();
        let totp = storage::mfa::find_totp(conn, &claims.user_id).await?;
        let totp = match totp {
            Some(t) if t.confirmed => return Err(mfa_already_enabled()),
            Some(t) => t,
            None => {
                return Err(AuthError::FailedPrecondition {
                    reason: "MFA_NOT_ENROLLING",
                    message: "no TOTP enrollment is pending; call BeginTotpEnrollment first",
                });
            }
        };
        let secret = d.mfa.decrypt(&claims.user_id, &totp.secret_enc)?;
        let Some(step) = clock::unix_secs_now().and_then(|t| secret.check(code, t)) else {
            let record = AuditRecord::new(AuditKind::MfaFailed, client)
                .outcome(Outcome::Failure)
                .actor(&claims.user_id)
                .subject(&claims.user_id)
                .detail(json!({ "stage": "enrollment" }));
            storage::audit::append_audit(conn, record).await?;
            return Err(AuthError::MfaCodeInvalid);
        };
        let codes: Vec<String> = (0..mfa::RECOVERY_CODES)
            .map(|_| mfa::generate_recovery_code())
            .collect();
        let hashes = codes
            .iter()
            .filter_map(|c| mfa::normalize_recovery_code(c))
            .map(|c| secrets::sha256_hex(&c))
            .collect();
        let now = clock::now_millis();
        let change = d.begin().await?;
        if !storage::mfa::confirm_totp(change.db(), &claims.user_id, step, now).await? {
            return Err(mfa_already_enabled());
        }
        storage::mfa::replace_recovery_codes(change.db(), &claims.user_id, hashes, now).await?;
        let record = AuditRecord::new(AuditKind::MfaEnrolled, client)
            .actor(&claims.user_id)
            .subject(&claims.user_id)
            .session(&claims.session_id);
        change.audit(record).await?;
        change.commit().await?;
        tracing::info!("totp enabled");
        Ok(codes)
    }

    /// Turns TOTP off after checking the current password.
    #[tracing::instrument(skip_all, fields(user_id = %claims.user_id))]
    pub async fn disable_totp(
        &self,
        claims: &AccessClaims,
        current: Password,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let user = self.live_user(claims).await?;
        self.check_current_password(&user, current).await?;
        let change = self.d.begin().await?;
        if !storage::mfa::delete_totp(change.db(), &user.id).await? {
            return Err(AuthError::FailedPrecondition {
                reason: "MFA_NOT_ENABLED",
                message: "TOTP is not enabled",
            });
        }
        let record = AuditRecord::new(AuditKind::MfaDisabled, client)
            .actor(&user.id)
            .subject(&user.id)
            .session(&claims.session_id);
        change.audit(record).await?;
        change.commit().await?;
        tracing::info!("totp disabled");
        Ok(())
    }

    /// Whether `code` is a current TOTP code of `totp` not used before; if so its step is spent
    /// in `change`, so the same code cannot be used again (the login's second step, and
    /// `DeleteMyAccount`).
    pub(super) async fn spend_totp_code(
        &self,
        change: &Change,
        user_id: &str,
        totp: &TotpRecord,
        code: &str,
    ) -> Result<bool, AuthError> {
        let secret = self.d.mfa.decrypt(user_id, &totp.secret_enc)?;
        match clock::unix_secs_now().and_then(|t| secret.check(code, t)) {
            Some(step) => Ok(storage::mfa::spend_totp_step(change.db(), user_id, step).await?),
            None => Ok(false),
        }
    }
}
