//! [`AuthClientError`]: one error type that keeps "denied" apart from "could not decide".

use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// Why a call failed.
///
/// The split that matters for authorization: [`AuthClientError::Unauthenticated`] and
/// [`AuthClientError::PermissionDenied`] are decisions ("no"); [`AuthClientError::Unavailable`]
/// means the answer is unknown, and a caller guarding a resource must fail closed on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthClientError {
    /// The token or credentials were refused. `reason` is the server's `ErrorInfo` reason, for
    /// example `TOKEN_EXPIRED`, `SESSION_REVOKED`, `TOKEN_INVALID` or `INVALID_CREDENTIALS`.
    #[error("unauthenticated ({reason}): {message}")]
    Unauthenticated {
        /// Machine-readable reason.
        reason: String,
        /// Human-readable message.
        message: String,
    },
    /// The caller is known but not allowed.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The request was malformed (bad email, short password, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The email is already registered.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The server could not be reached or could not decide (timeout, overload, outage).
    #[error("auth service unavailable: {0}")]
    Unavailable(String),
    /// The password was right but the account needs a second factor (TOTP): use
    /// [`AuthClient::complete_mfa_login`](crate::AuthClient::complete_mfa_login). A service
    /// account that cannot answer one should not have TOTP.
    #[error("the account has TOTP enabled: a second factor is required")]
    MfaRequired,
    /// The events after the cursor passed to `UserEvents` were pruned by the server's event
    /// retention: load a `UserSnapshot` and follow from its sequence
    /// ([`Subscriber::follow`](crate::Subscriber::follow) does that by itself).
    #[error("events after the cursor were pruned; the oldest kept is {oldest_sequence}")]
    CursorPruned {
        /// The oldest sequence the server still has.
        oldest_sequence: u64,
    },
    /// Any other status, with its code.
    #[error("auth service error {code:?}: {message}")]
    Other {
        /// The gRPC code.
        code: Code,
        /// The message.
        message: String,
    },
}

impl AuthClientError {
    /// Whether this is a decision that the token or caller is not allowed (as opposed to
    /// "could not decide").
    pub fn is_denied(&self) -> bool {
        matches!(
            self,
            Self::Unauthenticated { .. } | Self::PermissionDenied(_) | Self::MfaRequired
        )
    }

    /// Whether the server answered NOT_FOUND (for example `get_user` of a deleted user).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::Other {
                code: Code::NotFound,
                ..
            }
        )
    }

    /// The `ErrorInfo` reason of an `Unauthenticated` error.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Unauthenticated { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl From<Status> for AuthClientError {
    fn from(status: Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::Unauthenticated => {
                let reason = status
                    .get_details_error_info()
                    .map_or_else(|| "UNAUTHENTICATED".to_owned(), |info| info.reason);
                Self::Unauthenticated { reason, message }
            }
            Code::PermissionDenied => Self::PermissionDenied(message),
            Code::InvalidArgument => Self::InvalidArgument(message),
            Code::AlreadyExists => Self::AlreadyExists(message),
            // Everything that means "no answer": the caller must not treat it as a decision.
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Internal
            | Code::Unknown => Self::Unavailable(message),
            Code::OutOfRange => match status.get_details_error_info() {
                Some(info) if info.reason == "CURSOR_PRUNED" => Self::CursorPruned {
                    oldest_sequence: info
                        .metadata
                        .get("oldest_sequence")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                },
                _ => Self::Other {
                    code: Code::OutOfRange,
                    message,
                },
            },
            code => Self::Other { code, message },
        }
    }
}

impl From<tonic::transport::Error> for AuthClientError {
    fn from(error: tonic::transport::Error) -> Self {
        Self::Unavailable(error.to_string())
    }
}
