//! Hand-written `Debug` for the messages that hold a password, a token, a TOTP secret or a
//! code: the secret is shown as `[redacted]`, everything else as usual.

use std::fmt;

use crate::pb;

const REDACTED: &str = "[redacted]";

/// `redacted_debug!(Message { shown: [a, b], hidden: [c] })` writes `Debug` for `pb::Message`
/// printing `shown` fields as usual and `hidden` ones as `[redacted]`.
macro_rules! redacted_debug {
    ($message:ident { shown: [$($shown:ident),* $(,)?], hidden: [$($hidden:ident),* $(,)?] $(,)? }) => {
        impl fmt::Debug for pb::$message {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut out = f.debug_struct(stringify!($message));
                $(out.field(stringify!($shown), &self.$shown);)*
                $(out.field(stringify!($hidden), &REDACTED);)*
                out.finish()
            }
        }
    };
}

redacted_debug!(RegisterRequest {
    shown: [email, display_name],
    hidden: [password]
});
redacted_debug!(LoginRequest {
    shown: [email],
    hidden: [password]
});
redacted_debug!(LoginResponse {
    shown: [
        access_token_expires_at,
        refresh_token_expires_at,
        session_id,
        user,
        mfa_required,
        mfa_token_expires_at
    ],
    hidden: [access_token, refresh_token, mfa_token],
});
redacted_debug!(RefreshRequest {
    shown: [],
    hidden: [refresh_token]
});
redacted_debug!(RefreshResponse {
    shown: [
        access_token_expires_at,
        refresh_token_expires_at,
        session_id,
        user
    ],
    hidden: [access_token, refresh_token],
});
redacted_debug!(ValidateRequest {
    shown: [],
    hidden: [token]
});
redacted_debug!(ChangePasswordRequest {
    shown: [],
    hidden: [current_password, new_password]
});
redacted_debug!(ResetPasswordRequest {
    shown: [],
    hidden: [reset_token, new_password]
});
redacted_debug!(BeginTotpEnrollmentResponse {
    shown: [],
    hidden: [secret, otpauth_uri]
});
redacted_debug!(ConfirmTotpEnrollmentRequest {
    shown: [],
    hidden: [code]
});
redacted_debug!(ConfirmTotpEnrollmentResponse {
    shown: [],
    hidden: [recovery_codes]
});
redacted_debug!(CompleteMfaLoginRequest {
    shown: [],
    hidden: [mfa_token, code, recovery_code]
});
redacted_debug!(CompleteMfaLoginResponse {
    shown: [
        access_token_expires_at,
        refresh_token_expires_at,
        session_id,
        user
    ],
    hidden: [access_token, refresh_token],
});
redacted_debug!(DisableTotpRequest {
    shown: [],
    hidden: [current_password]
});
redacted_debug!(DeleteMyAccountRequest {
    shown: [],
    hidden: [current_password, totp_code]
});
redacted_debug!(CreateUserRequest {
    shown: [email, display_name, roles, email_verified],
    hidden: [password],
});
redacted_debug!(CreateUserResponse {
    shown: [user, invite_expires_at],
    hidden: [invite_token]
});
redacted_debug!(IssuePasswordResetResponse {
    shown: [expires_at],
    hidden: [reset_token]
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_passwords_and_tokens() {
        let login = pb::LoginRequest {
            email: "a@example.com".into(),
            password: "hunter2-secret".into(),
        };
        let printed = format!("{login:?}");
        assert!(printed.contains("a@example.com"));
        assert!(!printed.contains("hunter2-secret"));

        let resp = pb::LoginResponse {
            access_token: "v4.public.secret-token".into(),
            refresh_token: "refresh-secret".into(),
            mfa_token: "mfa-secret".into(),
            ..Default::default()
        };
        let printed = format!("{resp:?}");
        for secret in ["secret-token", "refresh-secret", "mfa-secret"] {
            assert!(!printed.contains(secret), "{printed}");
        }

        let mfa = pb::CompleteMfaLoginRequest {
            mfa_token: "mfa-secret".into(),
            code: "123456".into(),
            recovery_code: "abcd-efgh".into(),
        };
        let printed = format!("{mfa:?}");
        for secret in ["mfa-secret", "123456", "abcd-efgh"] {
            assert!(!printed.contains(secret), "{printed}");
        }

        let invite = pb::CreateUserResponse {
            invite_token: "invite-secret".into(),
            ..Default::default()
        };
        assert!(!format!("{invite:?}").contains("invite-secret"));
    }
}
