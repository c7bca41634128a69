//! The domain: every account flow, one file each, composing storage, hashing, tokens and the
//! revocation set. Knows nothing of gRPC.
//!
//! | file | flow |
//! | --- | --- |
//! | `signup.rs` | account creation: self-registration, the CLI, admins (with invites) |
//! | `login.rs` | email + password login and the TOTP second step |
//! | `lockout.rs` | the failed-login lockout: policy, state machine, check and audit |
//! | `sessions.rs` | sessions: issue, refresh (rotation and reuse detection), logout, revocation, validate |
//! | `credentials.rs` | change password, reset and invite tokens, self-service reset mails |
//! | `import.rs` | moving users in: rows checked one by one, written in batches, re-runs skip |
//! | `mfa.rs` | TOTP enrollment and removal |
//! | `admin.rs` | AdminService: authorization, account changes with the last-admin rule |
//! | `admin_views.rs` | AdminService reads: one user, pages of users and of the audit trail, sessions |
//! | `service_accounts.rs` | service accounts, API keys (issue, list, revoke) and their check as bearer credentials |
//! | `rules.rs` | input rules shared by the flows: roles, display names, user ids |
//! | `deletion.rs` | account deletion (admin and self) and the last-admin rule |
//! | `erasure.rs` | a deleted user's history rewritten to the tombstone (`--erasure-delay-secs`) |
//! | `retention.rs` | housekeeping's pruning: ended sessions, spent refresh tokens, old tokens and audit |
//! | `change.rs` | [`Change`]: the one write transaction (audit, events last, revocations after commit) |
//!
//! Every state change goes through a [`Change`], so its user events and audit record commit
//! with it, and the sessions it revoked reach the in-memory revocation set after commit.

mod admin;
mod admin_views;
mod change;
mod credentials;
mod deletion;
mod email;
mod erasure;
mod import;
mod lockout;
mod login;
mod me;
mod memberships;
mod mfa;
mod organizations;
mod retention;
mod rules;
mod service_accounts;
mod sessions;
mod signup;

use std::{sync::Arc, time::Duration};

pub use admin::{Actor, Admin, CreateUser, UserUpdate};
pub use admin_views::{MAX_PAGE_SIZE, UserDetails};
pub use change::{Change, Committed};
pub use credentials::IssuedReset;
pub use email::{EmailChanged, VERIFICATION_MAIL_COOLDOWN, VerificationSent};
pub use import::{
    IMPORT_BATCH, ImportRow, ImportSource, ImportSummary, Importer, RowOutcome, RowResult,
};
pub use lockout::LockoutPolicy;
pub use login::LoginOutcome;
pub use me::{Me, MySessions};
pub use memberships::{MAX_TOKEN_MEMBERSHIP_BYTES, MAX_TOKEN_MEMBERSHIPS, UserOrganization};
pub use organizations::{NewOrganization, OrganizationUpdate};
pub use retention::{EventRetention, PruneReport, RetentionPolicy};
pub use rules::{MAX_METADATA_BYTES, check_role, check_user_id};
pub use sessions::{RefreshToken, SessionTokens};
pub use signup::{NewAccount, create_account};
#[cfg(feature = "fuzzing")]
pub(crate) use {
    admin_views::decode_page_token,
    rules::{check_display_name, check_metadata},
};

use crate::{
    apikeys::ApiKeys,
    audit_rollup::AuditRollup,
    error::AuthError,
    mail::Mailer,
    metrics::Metrics,
    mfa::MfaCipher,
    passwords::{HashPool, PolicyError},
    revocation::Revocations,
    storage::Store,
    tokens::{AccessClaims, KeySet, TokenError, TokenIssuer},
};

/// Built-in role: may use AdminService and subscribe to events.
pub const ROLE_ADMIN: &str = "admin";
/// Built-in role: may subscribe to `UserEvents`.
pub const ROLE_EVENTS_SUBSCRIBER: &str = "events.subscriber";

/// What the domain's rules are set to (assembled by `startup` from the configuration).
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// Whether `Register` is open.
    pub allow_registration: bool,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// A session ends this long after its login, refreshed or not.
    pub session_max_lifetime: Duration,
    /// A session not refreshed for this long ends.
    pub session_idle_timeout: Duration,
    /// Minimum password length.
    pub min_password_length: usize,
    /// Failed-login lockout.
    pub lockout: LockoutPolicy,
    /// Reset token lifetime.
    pub reset_token_ttl: Duration,
    /// Invite token lifetime.
    pub invite_ttl: Duration,
    /// Email verification token lifetime.
    pub verification_ttl: Duration,
    /// Lifetime of the MFA login token.
    pub mfa_challenge_ttl: Duration,
    /// Issuer shown by authenticator apps.
    pub totp_issuer: String,
    /// Delay between a deletion and the erasure of the user's history.
    pub erasure_delay: Duration,
}

/// What the domain uses besides storage, hashing and tokens.
#[derive(Debug)]
pub struct AccountExtras {
    /// Seals TOTP secrets.
    pub mfa: MfaCipher,
    /// Sends reset mails, if SMTP is configured.
    pub mailer: Option<Mailer>,
    /// Login outcome counters.
    pub metrics: Metrics,
    /// The in-memory API key set (shared with the event feed, which keeps it current).
    pub api_keys: ApiKeys,
    /// Aggregated audit records (attempts against a locked email).
    pub audit_rollup: AuditRollup,
}

/// The state every flow shares. Its fields are private to `domain/`: nothing outside reaches
/// past the flows into the store, the hasher or the revocation set.
#[derive(Debug)]
struct Domain {
    store: Store,
    hasher: HashPool,
    tokens: Arc<TokenIssuer>,
    revocations: Revocations,
    settings: AccountSettings,
    mfa: MfaCipher,
    mailer: Option<Mailer>,
    metrics: Metrics,
    api_keys: ApiKeys,
    audit_rollup: AuditRollup,
}

impl Domain {
    /// Starts a write transaction whose revocations reach this server's set on commit.
    async fn begin(&self) -> Result<Change, AuthError> {
        Change::begin(&self.store, &self.revocations).await
    }
}

/// The account flows (AuthService's domain).
#[derive(Debug, Clone)]
pub struct Accounts {
    d: Arc<Domain>,
}

impl From<PolicyError> for AuthError {
    fn from(error: PolicyError) -> Self {
        AuthError::InvalidArgument(error.to_string())
    }
}

impl Accounts {
    /// Builds the domain.
    pub fn new(
        store: Store,
        hasher: HashPool,
        tokens: Arc<TokenIssuer>,
        revocations: Revocations,
        settings: AccountSettings,
        extras: AccountExtras,
    ) -> Self {
        let AccountExtras {
            mfa,
            mailer,
            metrics,
            api_keys,
            audit_rollup,
        } = extras;
        Self {
            d: Arc::new(Domain {
                store,
                hasher,
                tokens,
                revocations,
                settings,
                mfa,
                mailer,
                metrics,
                api_keys,
                audit_rollup,
            }),
        }
    }

    /// The admin flows over the same state.
    pub fn admin(&self) -> Admin {
        Admin::new(Arc::clone(&self.d))
    }

    /// Checks an access token: signature, issuer, validity window and revocation. No database.
    pub fn validate(&self, token: &str) -> Result<AccessClaims, AuthError> {
        if crate::apikeys::is_api_key(token) {
            return self.validate_api_key(token);
        }
        let claims = self.d.tokens.verify(token)?;
        if self.d.revocations.is_revoked(&claims.session_id) {
            return Err(TokenError::SessionRevoked.into());
        }
        Ok(claims)
    }

    /// The verification keys and the issuer, for `GetPublicKeys`.
    pub fn public_keys(&self) -> (Arc<KeySet>, &str) {
        (self.d.tokens.keys(), self.d.tokens.issuer())
    }
}
