//! [`AuthClient`] calls for a user's own credentials: password reset (request a mail, set a
//! new password with a token) and TOTP (enroll, confirm, disable).

use std::fmt;

use auth_proto::pb;

use crate::{AuthClient, AuthClientError};

/// A started TOTP enrollment: show the secret (or the URI as a QR code) to the user, then
/// confirm with a code from their app. `Debug` hides the secret.
#[derive(Clone)]
pub struct TotpEnrollment {
    /// The secret, base32, for manual entry.
    pub secret: String,
    /// `otpauth://totp/…`, for a QR code (holds the secret too).
    pub otpauth_uri: String,
}

impl fmt::Debug for TotpEnrollment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpEnrollment([redacted])")
    }
}

/// The recovery codes of a confirmed enrollment, shown to the user once. `Debug` hides them.
#[derive(Clone)]
pub struct RecoveryCodes(pub Vec<String>);

impl fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoveryCodes({} codes, [redacted])", self.0.len())
    }
}

impl AuthClient {
    /// `RequestPasswordReset`: asks for a reset mail. Answers `Ok` whether or not the email
    /// has an account; `Other { code: FailedPrecondition, .. }` when the server has no SMTP.
    pub async fn request_password_reset(&self, email: &str) -> Result<(), AuthClientError> {
        let message = pb::RequestPasswordResetRequest {
            email: email.into(),
        };
        self.inner
            .clone()
            .request_password_reset(self.request(message))
            .await?;
        Ok(())
    }

    /// `ResetPassword`: sets a new password with a reset or invite token (single use);
    /// returns how many sessions of the user were revoked.
    pub async fn reset_password(
        &self,
        reset_token: &str,
        new_password: &str,
    ) -> Result<u32, AuthClientError> {
        let message = pb::ResetPasswordRequest {
            reset_token: reset_token.into(),
            new_password: new_password.into(),
        };
        let response = self
            .inner
            .clone()
            .reset_password(self.request(message))
            .await?
            .into_inner();
        Ok(response.revoked_sessions)
    }

    /// `BeginTotpEnrollment`: a new TOTP secret for the token's user (replacing an
    /// unconfirmed one).
    pub async fn begin_totp_enrollment(
        &self,
        access_token: &str,
    ) -> Result<TotpEnrollment, AuthClientError> {
        let request = self.bearer(pb::BeginTotpEnrollmentRequest {}, access_token)?;
        let response = self
            .inner
            .clone()
            .begin_totp_enrollment(request)
            .await?
            .into_inner();
        Ok(TotpEnrollment {
            secret: response.secret,
            otpauth_uri: response.otpauth_uri,
        })
    }

    /// `ConfirmTotpEnrollment`: turns TOTP on with a current code; returns the recovery codes.
    pub async fn confirm_totp_enrollment(
        &self,
        access_token: &str,
        code: &str,
    ) -> Result<RecoveryCodes, AuthClientError> {
        let message = pb::ConfirmTotpEnrollmentRequest { code: code.into() };
        let request = self.bearer(message, access_token)?;
        let response = self
            .inner
            .clone()
            .confirm_totp_enrollment(request)
            .await?
            .into_inner();
        Ok(RecoveryCodes(response.recovery_codes))
    }

    /// `DisableTotp`: turns TOTP off after checking the current password.
    pub async fn disable_totp(
        &self,
        access_token: &str,
        current_password: &str,
    ) -> Result<(), AuthClientError> {
        let message = pb::DisableTotpRequest {
            current_password: current_password.into(),
        };
        let request = self.bearer(message, access_token)?;
        self.inner.clone().disable_totp(request).await?;
        Ok(())
    }
}
