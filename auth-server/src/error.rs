//! `AuthError`, the one error type of the domain, and the only place it becomes a
//! `tonic::Status`. Internal details (database errors, hashing failures) go to the log here and
//! never to the caller.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    events::StreamEnd, log_limit::LogThrottle, passwords::HashError, storage::StorageError,
    tokens::TokenError,
};

/// The `google.rpc.ErrorInfo` domain of every reason this service sends.
pub const ERROR_DOMAIN: &str = "auth.v1";

/// Generic message for every failed login, so unknown email and wrong password look the same.
pub const INVALID_CREDENTIALS: &str = "invalid email or password";

/// Everything that can go wrong in a call, by cause.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A request field is malformed; the message names the field and is safe to show.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Email/password did not match (or the email is unknown, or the account is disabled).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// `Register` while self-registration is off.
    #[error("self-registration is disabled")]
    RegistrationDisabled,
    /// The email already belongs to an account.
    #[error("email already registered")]
    EmailTaken,
    /// The bearer or presented access token is not acceptable.
    #[error("token rejected: {0}")]
    Token(#[from] TokenError),
    /// The caller's token is valid but lacks a role.
    #[error("permission denied: {0}")]
    PermissionDenied(&'static str),
    /// The refresh token is unknown, expired or belongs to a dead session.
    #[error("refresh token rejected ({0})")]
    RefreshRejected(&'static str),
    /// The session reached its absolute lifetime or its idle timeout; `reason` says which.
    #[error("{message}")]
    SessionEnded {
        /// ErrorInfo reason: `SESSION_EXPIRED` or `SESSION_IDLE_TIMEOUT`.
        reason: &'static str,
        /// Message for the caller.
        message: &'static str,
    },
    /// A spent refresh token was presented again; its session is now revoked.
    #[error("refresh token reuse detected; session revoked")]
    RefreshReused,
    /// `after_sequence` is beyond the newest event.
    #[error("cursor beyond the newest event {head}")]
    CursorBeyondHead {
        /// The newest sequence.
        head: i64,
    },
    /// An event stream ended early.
    #[error("event stream ended: {0}")]
    StreamEnded(#[from] StreamEnd),
    /// The password hashing queue is full.
    #[error("password hashing queue is full")]
    Overloaded,
    /// Too many requests from this client address.
    #[error("rate limited; retry after {retry_after:?}")]
    RateLimited {
        /// How long until a request would be admitted.
        retry_after: std::time::Duration,
    },
    /// The named object does not exist (or was deleted).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// `expected_version` no longer matches.
    #[error("{what} changed concurrently (version {current})")]
    VersionConflict {
        /// What changed: `user`, `organization` or `membership`.
        what: &'static str,
        /// Its version now.
        current: i64,
    },
    /// The object to create exists already; `reason` is machine-readable.
    #[error("{message}")]
    AlreadyExists {
        /// ErrorInfo reason.
        reason: &'static str,
        /// Message for the caller.
        message: &'static str,
    },
    /// The change would leave no enabled admin.
    #[error("the last enabled admin cannot be disabled, deleted or lose role admin")]
    LastAdmin,
    /// The call cannot run in the current state; `reason` is machine-readable.
    #[error("{message}")]
    FailedPrecondition {
        /// ErrorInfo reason.
        reason: &'static str,
        /// Message for the caller.
        message: &'static str,
    },
    /// A password reset or invite token is unknown, used or expired.
    #[error("reset token invalid")]
    ResetTokenInvalid,
    /// An email verification token is unknown, used, expired or for another address.
    #[error("verification token invalid")]
    VerificationTokenInvalid,
    /// A verification mail went out too recently.
    #[error("verification mail sent recently; retry after {retry_after:?}")]
    MailCooldown {
        /// How long until another mail may go out.
        retry_after: std::time::Duration,
    },
    /// The SMTP server refused or could not be reached.
    #[error("mail could not be sent")]
    MailUnavailable(#[source] crate::mail::MailError),
    /// An MFA login token is unknown, used or expired.
    #[error("mfa token invalid")]
    MfaTokenInvalid,
    /// A TOTP or recovery code was wrong, replayed, or the email is locked.
    #[error("mfa code invalid")]
    MfaCodeInvalid,
    /// The MFA key or a stored secret failed.
    #[error("mfa: {0}")]
    Mfa(#[from] crate::mfa::MfaError),
    /// Storage failed.
    #[error("storage error")]
    Storage(#[from] StorageError),
    /// Hashing failed for a reason other than a wrong password.
    #[error("password hashing failed")]
    Hashing(#[source] HashError),
}

impl From<HashError> for AuthError {
    fn from(error: HashError) -> Self {
        match error {
            HashError::QueueFull | HashError::QueueTimeout => AuthError::Overloaded,
            other => AuthError::Hashing(other),
        }
    }
}

// Errors that repeat while something is down: one line per 10 s each (see `log_limit`); the
// calls are counted by status code in the RPC metrics.
static MFA_ERRORS: LogThrottle = LogThrottle::new();
static STREAM_ERRORS: LogThrottle = LogThrottle::new();
static DB_UNAVAILABLE: LogThrottle = LogThrottle::new();
static CONTENTION: LogThrottle = LogThrottle::new();
static MAIL_ERRORS: LogThrottle = LogThrottle::new();
static STORAGE_ERRORS: LogThrottle = LogThrottle::new();
static HASH_ERRORS: LogThrottle = LogThrottle::new();

fn with_reason(code: Code, message: &str, reason: &str) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
    )
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::InvalidArgument(message) => {
                with_reason(Code::InvalidArgument, &message, "INVALID_ARGUMENT")
            }
            AuthError::InvalidCredentials => with_reason(
                Code::Unauthenticated,
                INVALID_CREDENTIALS,
                "INVALID_CREDENTIALS",
            ),
            AuthError::RegistrationDisabled => with_reason(
                Code::PermissionDenied,
                "self-registration is disabled",
                "REGISTRATION_DISABLED",
            ),
            AuthError::EmailTaken => with_reason(
                Code::AlreadyExists,
                "email already registered",
                "EMAIL_TAKEN",
            ),
            AuthError::Token(token) => {
                with_reason(Code::Unauthenticated, token.message(), token.reason())
            }
            AuthError::PermissionDenied(what) => {
                with_reason(Code::PermissionDenied, what, "PERMISSION_DENIED")
            }
            AuthError::RefreshRejected(why) => with_reason(
                Code::Unauthenticated,
                &format!("refresh token rejected: {why}"),
                "REFRESH_TOKEN_INVALID",
            ),
            AuthError::SessionEnded { reason, message } => {
                with_reason(Code::Unauthenticated, message, reason)
            }
            AuthError::RefreshReused => with_reason(
                Code::Unauthenticated,
                "refresh token already used; the session is revoked",
                "REFRESH_TOKEN_REUSED",
            ),
            AuthError::Overloaded => Status::with_error_details(
                Code::ResourceExhausted,
                "too many password operations in flight, retry shortly",
                ErrorDetails::with_retry_info(Some(std::time::Duration::from_millis(200))),
            ),
            AuthError::RateLimited { retry_after } => {
                let mut details = ErrorDetails::with_retry_info(Some(retry_after));
                details.set_error_info("RATE_LIMITED", ERROR_DOMAIN, HashMap::new());
                Status::with_error_details(
                    Code::ResourceExhausted,
                    format!(
                        "too many requests from this address; retry in {} ms",
                        retry_after.as_millis().max(1)
                    ),
                    details,
                )
            }
            AuthError::NotFound(what) => {
                with_reason(Code::NotFound, &format!("{what} not found"), "NOT_FOUND")
            }
            AuthError::VersionConflict { what, current } => Status::with_error_details(
                Code::Aborted,
                format!(
                    "the {what} changed meanwhile (version is now {current}); re-read and retry"
                ),
                ErrorDetails::with_error_info(
                    "VERSION_MISMATCH",
                    ERROR_DOMAIN,
                    HashMap::from([("current_version".to_owned(), current.to_string())]),
                ),
            ),
            AuthError::LastAdmin => with_reason(
                Code::FailedPrecondition,
                "the last enabled admin cannot be disabled, deleted or lose role admin",
                "LAST_ADMIN",
            ),
            AuthError::AlreadyExists { reason, message } => {
                with_reason(Code::AlreadyExists, message, reason)
            }
            AuthError::FailedPrecondition { reason, message } => {
                with_reason(Code::FailedPrecondition, message, reason)
            }
            AuthError::ResetTokenInvalid => with_reason(
                Code::Unauthenticated,
                "reset token is invalid, used or expired",
                "RESET_TOKEN_INVALID",
            ),
            AuthError::VerificationTokenInvalid => with_reason(
                Code::Unauthenticated,
                "verification token is invalid, used, expired or for an address the account no longer has",
                "VERIFICATION_TOKEN_INVALID",
            ),
            AuthError::MailCooldown { retry_after } => {
                let mut details = ErrorDetails::with_retry_info(Some(retry_after));
                details.set_error_info("MAIL_COOLDOWN", ERROR_DOMAIN, HashMap::new());
                Status::with_error_details(
                    Code::ResourceExhausted,
                    format!(
                        "a verification mail went out moments ago; retry in {} s",
                        retry_after.as_secs().max(1)
                    ),
                    details,
                )
            }
            AuthError::MailUnavailable(source) => {
                crate::throttled!(MAIL_ERRORS, error, error.message = %source, "sending mail failed (logged at most every 10 s)");
                with_reason(
                    Code::Unavailable,
                    "the mail server could not be reached; retry later",
                    "MAIL_UNAVAILABLE",
                )
            }
            AuthError::MfaTokenInvalid => with_reason(
                Code::Unauthenticated,
                "mfa token is invalid, used or expired; log in again",
                "MFA_TOKEN_INVALID",
            ),
            AuthError::MfaCodeInvalid => with_reason(
                Code::Unauthenticated,
                "invalid verification code",
                "MFA_CODE_INVALID",
            ),
            AuthError::Mfa(source) => {
                crate::throttled!(MFA_ERRORS, error, error.message = %source, error.cause_chain = ?source, "mfa error");
                Status::internal("internal error")
            }
            AuthError::CursorBeyondHead { head } => Status::with_error_details(
                Code::OutOfRange,
                format!("after_sequence is beyond the newest event ({head})"),
                ErrorDetails::with_error_info(
                    "CURSOR_BEYOND_HEAD",
                    ERROR_DOMAIN,
                    HashMap::from([("head_sequence".to_owned(), head.to_string())]),
                ),
            ),
            AuthError::StreamEnded(StreamEnd::Pruned { oldest }) => Status::with_error_details(
                Code::OutOfRange,
                format!(
                    "the events after this cursor were pruned (retention); the oldest kept is {oldest}: load a UserSnapshot and follow from its sequence"
                ),
                ErrorDetails::with_error_info(
                    "CURSOR_PRUNED",
                    ERROR_DOMAIN,
                    HashMap::from([("oldest_sequence".to_owned(), oldest.to_string())]),
                ),
            ),
            AuthError::StreamEnded(StreamEnd::ShuttingDown) => Status::unavailable(
                "server shutting down; reconnect and resume from your last sequence",
            ),
            AuthError::StreamEnded(StreamEnd::Storage(source)) => {
                crate::throttled!(STREAM_ERRORS, error, error.message = %source, error.cause_chain = ?source, "event stream storage error");
                Status::unavailable("event storage unavailable; resume from your last sequence")
            }
            AuthError::Storage(StorageError::Unavailable(source)) => {
                crate::throttled!(DB_UNAVAILABLE, error, error.message = %source, error.cause_chain = ?source, "database unavailable (calls answer UNAVAILABLE; logged at most every 10 s)");
                Status::unavailable("database unavailable")
            }
            AuthError::Storage(StorageError::InvalidText(_)) => {
                Status::invalid_argument("text contains characters that cannot be stored (NUL)")
            }
            AuthError::Storage(StorageError::Contention(source)) => {
                crate::throttled!(CONTENTION, warn, error.message = %source, "transaction aborted by a concurrent one (logged at most every 10 s)");
                Status::aborted("concurrent change aborted this one; retry the call")
            }
            AuthError::Storage(other) => {
                crate::throttled!(STORAGE_ERRORS, error, error.message = %other, error.cause_chain = ?other, "storage error (logged at most every 10 s)");
                Status::internal("internal error")
            }
            AuthError::Hashing(source) => {
                crate::throttled!(HASH_ERRORS, error, error.message = %source, error.cause_chain = ?source, "hashing error");
                Status::internal("internal error")
            }
        }
    }
}
