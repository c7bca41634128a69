//! Hand-written `Debug` for the messages that hold a password or a token: the secret is
//! shown as `[redacted]`, everything else as usual.

use std::fmt;

use crate::pb;

const REDACTED: &str = "[redacted]";

/// Login and Refresh responses carry the same token fields.
macro_rules! session_tokens_debug {
    ($message:ident) => {
        impl fmt::Debug for pb::$message {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($message))
                    .field("access_token", &REDACTED)
                    .field("access_token_expires_at", &self.access_token_expires_at)
                    .field("refresh_token", &REDACTED)
                    .field("refresh_token_expires_at", &self.refresh_token_expires_at)
                    .field("session_id", &self.session_id)
                    .field("user", &self.user)
                    .finish()
            }
        }
    };
}

impl fmt::Debug for pb::RegisterRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("email", &self.email)
            .field("password", &REDACTED)
            .field("display_name", &self.display_name)
            .finish()
    }
}

impl fmt::Debug for pb::LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("email", &self.email)
            .field("password", &REDACTED)
            .finish()
    }
}

session_tokens_debug!(LoginResponse);

impl fmt::Debug for pb::RefreshRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshRequest")
            .field("refresh_token", &REDACTED)
            .finish()
    }
}

session_tokens_debug!(RefreshResponse);

impl fmt::Debug for pb::ValidateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidateRequest")
            .field("token", &REDACTED)
            .finish()
    }
}

impl fmt::Debug for pb::ChangePasswordRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangePasswordRequest")
            .field("current_password", &REDACTED)
            .field("new_password", &REDACTED)
            .finish()
    }
}

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
            ..Default::default()
        };
        let printed = format!("{resp:?}");
        assert!(!printed.contains("secret-token") && !printed.contains("refresh-secret"));
    }
}
