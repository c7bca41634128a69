//! The account domain: register, login (with lockout and the TOTP second step), refresh,
//! logout, validate, change password, password reset, MFA enrollment, and account creation for
//! the CLI and admins. Composes storage, hashing, tokens and the revocation set; knows nothing
//! of gRPC.
//!
//! Every state change writes its user events and its audit record in the same transaction.

use std::{sync::Arc, time::Duration};

use serde_json::json;
use time::OffsetDateTime;

use crate::{
    error::AuthError,
    mail::Mailer,
    metrics::Metrics,
    mfa::{self, MfaCipher, TotpSecret},
    passwords::{self, HashPool, Password, PolicyError},
    revocation::Revocations,
    secrets::{self, OpaqueToken},
    storage::{
        self, EventKind, Store, UserRecord, WriteTx,
        audit::{AuditKind, AuditRecord, Outcome},
        resets::ResetPurpose,
        sessions::{ClientInfo, RevokeReason},
        throttle::LockoutPolicy,
        users::NewUser,
    },
    tokens::{AccessClaims, IssuedToken, TokenError, TokenIssuer},
};

/// Built-in role: may use AdminService and subscribe to events.
pub const ROLE_ADMIN: &str = "admin";
/// Built-in role: may subscribe to `UserEvents`.
pub const ROLE_EVENTS_SUBSCRIBER: &str = "events.subscriber";

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

/// What a correct email and password lead to.
#[derive(Debug)]
pub enum LoginOutcome {
    /// A new session.
    Session(SessionTokens),
    /// TOTP is enabled: the second step needs this token and a code.
    MfaRequired {
        /// Single-use token for `complete_mfa_login`.
        token: OpaqueToken,
        /// Its expiry.
        expires_at: OffsetDateTime,
        /// The user.
        user: UserRecord,
    },
}

/// A reset or invite token handed out once.
#[derive(Debug)]
pub struct IssuedReset {
    /// The token.
    pub token: OpaqueToken,
    /// Its expiry.
    pub expires_at: OffsetDateTime,
}

/// Settings the domain needs.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// Whether `Register` is open.
    pub allow_registration: bool,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// Minimum password length.
    pub min_password_length: usize,
    /// Failed-login lockout.
    pub lockout: LockoutPolicy,
    /// Reset token lifetime.
    pub reset_token_ttl: Duration,
    /// Invite token lifetime.
    pub invite_ttl: Duration,
    /// Lifetime of the MFA login token.
    pub mfa_challenge_ttl: Duration,
    /// Issuer shown by authenticator apps.
    pub totp_issuer: String,
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
}

/// The account domain service.
#[derive(Debug, Clone)]
pub struct Accounts {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    hasher: HashPool,
    tokens: Arc<TokenIssuer>,
    revocations: Revocations,
    settings: AccountSettings,
    mfa: MfaCipher,
    mailer: Option<Mailer>,
    metrics: Metrics,
}

impl From<PolicyError> for AuthError {
    fn from(error: PolicyError) -> Self {
        AuthError::InvalidArgument(error.to_string())
    }
}

/// Checks a role name against `[a-z][a-z0-9._-]{0,63}`.
pub fn check_role(role: &str) -> Result<(), AuthError> {
    let mut chars = role.chars();
    let valid = role.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(AuthError::InvalidArgument(format!(
            "role {role:?} must match [a-z][a-z0-9._-]{{0,63}}"
        )))
    }
}

pub(crate) fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// An id of the same shape as a real user id that no user has: unknown emails look up the
/// credential of this id so they cost the same queries as known ones.
const NO_USER_ID: &str = "00000000-0000-0000-0000-000000000000";

/// What [`create_account`] needs.
#[derive(Debug)]
pub struct NewAccount<'a> {
    /// Email as typed.
    pub email: &'a str,
    /// Password.
    pub password: Password,
    /// Display name.
    pub display_name: &'a str,
    /// Roles to grant.
    pub roles: Vec<String>,
}

/// Who creates an account, for the audit trail.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Creator<'a> {
    pub kind: AuditKind,
    pub actor_id: Option<&'a str>,
    pub client: &'a ClientInfo,
}

/// Everything an account creation needs, password optional (an invite has none).
#[derive(Debug)]
pub(crate) struct AccountSpec<'a> {
    pub email: &'a str,
    pub password: Option<Password>,
    pub display_name: &'a str,
    pub roles: Vec<String>,
    pub email_verified: bool,
}

/// Validates a display name.
pub(crate) fn check_display_name(name: &str) -> Result<String, AuthError> {
    let name = name.trim();
    if name.len() > 256 {
        return Err(AuthError::InvalidArgument(
            "display name is longer than 256 bytes".into(),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(AuthError::InvalidArgument(
            "display name must not contain control characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// Validates, sorts and deduplicates role names.
pub(crate) fn check_roles(mut roles: Vec<String>) -> Result<Vec<String>, AuthError> {
    for role in &roles {
        check_role(role)?;
    }
    roles.sort();
    roles.dedup();
    if roles.len() > 64 {
        return Err(AuthError::InvalidArgument("at most 64 roles".into()));
    }
    Ok(roles)
}

/// Creates an account with a password and writes `UserCreated` in the same transaction.
/// Used by the CLI's `create-user`/`create-admin` (audited as an admin action without actor).
#[tracing::instrument(skip_all)]
pub async fn create_account(
    store: &Store,
    hasher: &HashPool,
    min_password_length: usize,
    new: NewAccount<'_>,
) -> Result<UserRecord, AuthError> {
    let client = ClientInfo {
        addr: None,
        user_agent: Some("auth-server cli".into()),
    };
    let spec = AccountSpec {
        email: new.email,
        password: Some(new.password),
        display_name: new.display_name,
        roles: new.roles,
        email_verified: false,
    };
    let creator = Creator {
        kind: AuditKind::AdminUserCreated,
        actor_id: None,
        client: &client,
    };
    let (user, tx) = create_account_in(store, hasher, min_password_length, spec).await?;
    finish_creation(tx, &user, creator).await?;
    Ok(user)
}

/// Validates and inserts the account and its `UserCreated` event in an open transaction, for
/// the caller to add to (an invite token) and finish with [`finish_creation`].
pub(crate) async fn create_account_in(
    store: &Store,
    hasher: &HashPool,
    min_password_length: usize,
    spec: AccountSpec<'_>,
) -> Result<(UserRecord, WriteTx), AuthError> {
    let email = passwords::normalize_email(spec.email)?;
    if let Some(password) = &spec.password {
        passwords::check_new_password(password.expose(), &email, min_password_length)?;
    }
    let display_name = check_display_name(spec.display_name)?;
    let roles = check_roles(spec.roles)?;
    // Save a hash in the common case; the unique index still decides under a race.
    if storage::users::find_user_by_email(store.conn(), &email)
        .await?
        .is_some()
    {
        return Err(AuthError::EmailTaken);
    }
    let hash = match spec.password {
        Some(password) => Some(hasher.hash(password).await?),
        None => None,
    };
    let tx = store.begin_write().await?;
    let user = storage::users::create_user(
        &*tx,
        NewUser {
            email,
            display_name,
            roles,
            password_hash: hash,
            email_verified: spec.email_verified,
        },
    )
    .await
    .map_err(|e| match e {
        storage::StorageError::Duplicate(_) => AuthError::EmailTaken,
        other => other.into(),
    })?;
    storage::events::append_event(&tx, EventKind::UserCreated, &user, None).await?;
    Ok((user, tx))
}

/// Audits a creation and commits it.
pub(crate) async fn finish_creation(
    tx: WriteTx,
    user: &UserRecord,
    creator: Creator<'_>,
) -> Result<(), AuthError> {
    let mut record = AuditRecord::new(creator.kind, creator.client)
        .subject(&user.id)
        .detail(json!({ "email": user.email, "roles": user.roles }));
    if let Some(actor) = creator.actor_id {
        record = record.actor(actor);
    }
    storage::audit::append_audit(&*tx, record).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "user created");
    Ok(())
}

/// Revokes every live session of a user in `tx` (except `keep`) and writes one
/// `SessionRevoked` per session, carrying `user`. Returns the revoked ids for the in-memory set.
pub(crate) async fn revoke_all_in(
    tx: &WriteTx,
    user: &UserRecord,
    keep: Option<&str>,
    reason: RevokeReason,
) -> Result<Vec<String>, AuthError> {
    let now = storage::now_millis();
    let revoked =
        storage::sessions::revoke_user_sessions(&**tx, &user.id, keep, reason, now).await?;
    for session_id in &revoked {
        storage::events::append_event(tx, EventKind::SessionRevoked, user, Some(session_id))
            .await?;
    }
    Ok(revoked)
}

fn unix_secs_now() -> u64 {
    u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0)
}

impl Accounts {
    /// Builds the service.
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
        } = extras;
        Self {
            inner: Arc::new(Inner {
                store,
                hasher,
                tokens,
                revocations,
                settings,
                mfa,
                mailer,
                metrics,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The password hash pool.
    pub fn hasher(&self) -> &HashPool {
        &self.inner.hasher
    }

    /// The domain settings.
    pub fn settings(&self) -> &AccountSettings {
        &self.inner.settings
    }

    /// The newest committed event sequence.
    pub async fn head_sequence(&self) -> Result<i64, AuthError> {
        Ok(storage::events::find_head_sequence(self.inner.store.conn()).await?)
    }

    /// The token issuer.
    pub fn tokens(&self) -> &TokenIssuer {
        &self.inner.tokens
    }

    /// The revocation set.
    pub fn revocations(&self) -> &Revocations {
        &self.inner.revocations
    }

    /// Creates an account (password optional), with its event and audit record.
    pub(crate) async fn create_account(
        &self,
        spec: AccountSpec<'_>,
        creator: Creator<'_>,
        invite: bool,
    ) -> Result<(UserRecord, Option<IssuedReset>), AuthError> {
        let inner = &self.inner;
        let (user, tx) = create_account_in(
            &inner.store,
            &inner.hasher,
            inner.settings.min_password_length,
            spec,
        )
        .await?;
        let issued = if invite {
            Some(
                self.issue_reset_in(
                    &tx,
                    &user,
                    ResetPurpose::Invite,
                    creator.actor_id,
                    creator.client,
                )
                .await?,
            )
        } else {
            None
        };
        finish_creation(tx, &user, creator).await?;
        Ok((user, issued))
    }

    /// Self-registration.
    pub async fn register(
        &self,
        email: &str,
        password: Password,
        display_name: &str,
        client: &ClientInfo,
    ) -> Result<UserRecord, AuthError> {
        if !self.inner.settings.allow_registration {
            return Err(AuthError::RegistrationDisabled);
        }
        let spec = AccountSpec {
            email,
            password: Some(password),
            display_name,
            roles: Vec::new(),
            email_verified: false,
        };
        let creator = Creator {
            kind: AuditKind::UserRegistered,
            actor_id: None,
            client,
        };
        let (user, _) = self.create_account(spec, creator, false).await?;
        Ok(user)
    }

    /// Email + password login. Unknown email, wrong password and disabled account all answer
    /// `InvalidCredentials` after exactly one argon2 verification, and count toward the email's
    /// lockout. A locked email answers the same without hashing at all.
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        email: &str,
        password: Password,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, AuthError> {
        let email = passwords::normalize_email(email)?;
        passwords::check_password_size(password.expose())?;
        let conn = self.inner.store.conn();
        let user = storage::users::find_user_by_email(conn, &email).await?;
        let subject = user.as_ref().map(|u| u.id.as_str());
        if self.is_locked(&email, subject, client).await? {
            self.inner.metrics.login("locked");
            return Err(AuthError::InvalidCredentials);
        }
        let lookup_id = subject.unwrap_or(NO_USER_ID);
        let hash = storage::users::find_password_hash(conn, lookup_id).await?;
        let matched = self.inner.hasher.verify(password, hash).await?;
        let user = match user {
            Some(user) if matched && !user.disabled => user,
            user => {
                let subject = user.as_ref().map(|u| u.id.as_str());
                self.record_failure(&email, subject, AuditKind::LoginFailed, client)
                    .await?;
                self.inner.metrics.login("failure");
                tracing::info!("login failed");
                return Err(AuthError::InvalidCredentials);
            }
        };
        if storage::mfa::find_totp(conn, &user.id)
            .await?
            .is_some_and(|t| t.confirmed)
        {
            self.inner.metrics.login("mfa_required");
            return self.start_mfa_challenge(user, &email, client).await;
        }
        let tx = self.inner.store.begin_write().await?;
        let tokens = self
            .start_session(tx, user, &email, client, json!({ "mfa": false }))
            .await?;
        self.inner.metrics.login("success");
        tracing::info!(user_id = %tokens.user.id, session_id = %tokens.session_id, jti = %tokens.access.token_id, "login ok");
        Ok(LoginOutcome::Session(tokens))
    }

    /// Whether `email` is locked now; a locked attempt is audited (no hash is spent).
    async fn is_locked(
        &self,
        email: &str,
        subject: Option<&str>,
        client: &ClientInfo,
    ) -> Result<bool, AuthError> {
        let now = storage::now_millis();
        let state = storage::throttle::find_throttle(self.inner.store.conn(), email).await?;
        let Some(state) = state.filter(|s| s.is_locked(now)) else {
            return Ok(false);
        };
        let mut record = AuditRecord::new(AuditKind::LoginLocked, client)
            .outcome(Outcome::Denied)
            .detail(json!({ "email": email, "locked_until": state.locked_until }));
        if let Some(subject) = subject {
            record = record.subject(subject);
        }
        storage::audit::append_audit(self.inner.store.conn(), record).await?;
        tracing::info!("login refused: email locked");
        Ok(true)
    }

    /// Counts a failed password or code toward the email's lockout and audits it, in one
    /// small transaction of its own.
    async fn record_failure(
        &self,
        email: &str,
        subject: Option<&str>,
        kind: AuditKind,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let now = storage::now_millis();
        let tx = self.inner.store.begin_write().await?;
        let locked =
            storage::throttle::record_failure(&*tx, email, now, &self.inner.settings.lockout)
                .await?;
        let mut record = AuditRecord::new(kind, client)
            .outcome(Outcome::Failure)
            .detail(json!({ "email": email, "locked_until": locked }));
        if let Some(subject) = subject {
            record = record.subject(subject);
        }
        storage::audit::append_audit(&*tx, record).await?;
        tx.commit().await?;
        if let Some(until) = locked {
            self.inner.metrics.lockout();
            tracing::warn!(locked_until = until, "email locked after repeated failures");
        }
        Ok(())
    }

    async fn start_mfa_challenge(
        &self,
        user: UserRecord,
        email: &str,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, AuthError> {
        let now = OffsetDateTime::now_utc();
        let expires_at = now + self.inner.settings.mfa_challenge_ttl;
        let token = OpaqueToken::generate();
        storage::mfa::create_challenge(
            self.inner.store.conn(),
            token.hash(),
            &user.id,
            email,
            millis(now),
            millis(expires_at),
            client,
        )
        .await?;
        tracing::info!(user_id = %user.id, "password ok; second factor required");
        Ok(LoginOutcome::MfaRequired {
            token,
            expires_at,
            user,
        })
    }

    /// Creates a session in `tx`, clears the email's failures, audits the login, commits, and
    /// signs the tokens.
    async fn start_session(
        &self,
        tx: WriteTx,
        user: UserRecord,
        email: &str,
        client: &ClientInfo,
        detail: serde_json::Value,
    ) -> Result<SessionTokens, AuthError> {
        let now = OffsetDateTime::now_utc();
        let expires_at = millis(now + self.inner.settings.refresh_ttl);
        let session_id =
            storage::sessions::create_session(&*tx, &user.id, millis(now), expires_at, client)
                .await?;
        storage::throttle::delete_throttle(&*tx, email).await?;
        let record = AuditRecord::new(AuditKind::LoginSucceeded, client)
            .actor(&user.id)
            .subject(&user.id)
            .session(&session_id)
            .detail(detail);
        storage::audit::append_audit(&*tx, record).await?;
        self.issue_pair(tx, user, session_id, now).await
    }

    /// Second step of an MFA login: the `mfa_token` from Login plus a current TOTP code or an
    /// unused recovery code. Wrong codes count toward the email's lockout.
    #[tracing::instrument(skip_all)]
    pub async fn complete_mfa_login(
        &self,
        mfa_token: &str,
        code: &str,
        recovery_code: &str,
        client: &ClientInfo,
    ) -> Result<SessionTokens, AuthError> {
        let (code, recovery_code) = (code.trim(), recovery_code.trim());
        if code.is_empty() == recovery_code.is_empty() {
            return Err(AuthError::InvalidArgument(
                "give exactly one of code and recovery_code".into(),
            ));
        }
        if code.len() > 32 || recovery_code.len() > 64 {
            return Err(AuthError::MfaCodeInvalid);
        }
        let token = secrets::well_formed(mfa_token).ok_or(AuthError::MfaTokenInvalid)?;
        let token_hash = secrets::sha256_hex(token);
        let conn = self.inner.store.conn();
        let now = storage::now_millis();
        let challenge = storage::mfa::find_challenge(conn, &token_hash)
            .await?
            .filter(|c| c.used_at.is_none() && c.expires_at > now)
            .ok_or(AuthError::MfaTokenInvalid)?;
        if self
            .is_locked(&challenge.email, Some(&challenge.user_id), client)
            .await?
        {
            return Err(AuthError::MfaCodeInvalid);
        }
        let user = storage::users::find_user(conn, &challenge.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::MfaTokenInvalid)?;
        let totp = storage::mfa::find_totp(conn, &user.id)
            .await?
            .filter(|t| t.confirmed)
            .ok_or(AuthError::MfaTokenInvalid)?;
        let tx = self.inner.store.begin_write().await?;
        let method = if code.is_empty() {
            "recovery_code"
        } else {
            "totp"
        };
        let accepted = if code.is_empty() {
            match mfa::normalize_recovery_code(recovery_code) {
                Some(canonical) => {
                    storage::mfa::spend_recovery_code(
                        &*tx,
                        &user.id,
                        &secrets::sha256_hex(&canonical),
                        now,
                    )
                    .await?
                }
                None => false,
            }
        } else {
            let secret = self.inner.mfa.decrypt(&user.id, &totp.secret_enc)?;
            match secret.check(code, unix_secs_now()) {
                Some(step) => storage::mfa::spend_totp_step(&*tx, &user.id, step).await?,
                None => false,
            }
        };
        if !accepted {
            drop(tx);
            self.record_failure(
                &challenge.email,
                Some(&user.id),
                AuditKind::MfaFailed,
                client,
            )
            .await?;
            tracing::info!(user_id = %user.id, method, "second factor refused");
            return Err(AuthError::MfaCodeInvalid);
        }
        if !storage::mfa::spend_challenge(&*tx, &token_hash, now).await? {
            return Err(AuthError::MfaTokenInvalid);
        }
        if method == "recovery_code" {
            let record = AuditRecord::new(AuditKind::MfaRecoveryCodeUsed, client)
                .actor(&user.id)
                .subject(&user.id);
            storage::audit::append_audit(&*tx, record).await?;
        }
        let tokens = self
            .start_session(tx, user, &challenge.email, client, json!({ "mfa": method }))
            .await?;
        self.inner.metrics.login("success");
        tracing::info!(user_id = %tokens.user.id, session_id = %tokens.session_id, jti = %tokens.access.token_id, method, "login ok (mfa)");
        Ok(tokens)
    }

    /// Records a new refresh token for the session in `tx`, commits, and signs the access token.
    async fn issue_pair(
        &self,
        tx: storage::WriteTx,
        user: UserRecord,
        session_id: String,
        now: OffsetDateTime,
    ) -> Result<SessionTokens, AuthError> {
        let refresh_expires_at = now + self.inner.settings.refresh_ttl;
        let refresh = RefreshToken::generate();
        storage::sessions::create_refresh_token(
            &*tx,
            refresh.hash(),
            &session_id,
            millis(now),
            millis(refresh_expires_at),
        )
        .await?;
        tx.commit().await?;
        let access = self
            .inner
            .tokens
            .issue(&user.id, &session_id, &user.roles)?;
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
        let now = OffsetDateTime::now_utc();
        let now_ms = millis(now);
        let tx = self.inner.store.begin_write().await?;
        let Some(record) = storage::sessions::find_refresh_token(&*tx, &token_hash).await? else {
            return Err(AuthError::RefreshRejected("unknown"));
        };
        let session = storage::sessions::find_session(&*tx, &record.session_id)
            .await?
            .ok_or(AuthError::RefreshRejected("unknown session"))?;
        if session.revoked_at.is_some() {
            return Err(AuthError::RefreshRejected("session revoked"));
        }
        if record.used_at.is_some()
            || !storage::sessions::spend_refresh_token(&*tx, &token_hash, now_ms).await?
        {
            // Spent before (or by a concurrent caller a moment ago): treat as theft.
            let audit = AuditRecord::new(AuditKind::RefreshReuseDetected, client)
                .outcome(Outcome::Denied)
                .subject(&session.user_id)
                .session(&session.id);
            self.revoke_in(
                tx,
                &session.user_id,
                &session.id,
                RevokeReason::RefreshReuse,
                audit,
            )
            .await?;
            tracing::warn!(user_id = %session.user_id, session_id = %session.id, "refresh token reuse; session revoked");
            return Err(AuthError::RefreshReused);
        }
        if record.expires_at <= now_ms {
            return Err(AuthError::RefreshRejected("expired"));
        }
        let user = storage::users::find_user(&*tx, &session.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::RefreshRejected("account unavailable"))?;
        let expires_at = millis(now + self.inner.settings.refresh_ttl);
        storage::sessions::update_session_used(&*tx, &session.id, now_ms, expires_at).await?;
        let tokens = self.issue_pair(tx, user, session.id, now).await?;
        tracing::info!(user_id = %tokens.user.id, session_id = %tokens.session_id, jti = %tokens.access.token_id, "refreshed");
        Ok(tokens)
    }

    /// Revokes a session inside `tx`, writes `SessionRevoked` and the audit record, commits,
    /// and updates the in-memory set.
    async fn revoke_in(
        &self,
        tx: storage::WriteTx,
        user_id: &str,
        session_id: &str,
        reason: RevokeReason,
        audit: AuditRecord<'_>,
    ) -> Result<(), AuthError> {
        let now = storage::now_millis();
        let revoked = storage::sessions::revoke_session(&*tx, session_id, reason, now).await?;
        let user = match revoked {
            true => storage::users::find_user(&*tx, user_id).await?,
            false => None,
        };
        if let Some(user) = user {
            storage::events::append_event(&tx, EventKind::SessionRevoked, &user, Some(session_id))
                .await?;
        }
        storage::audit::append_audit(&*tx, audit).await?;
        tx.commit().await?;
        self.inner.revocations.revoke(session_id);
        Ok(())
    }

    /// Checks an access token: signature, issuer, validity window and revocation. No database.
    pub fn validate(&self, token: &str) -> Result<AccessClaims, AuthError> {
        let claims = self.inner.tokens.verify(token)?;
        if self.inner.revocations.is_revoked(&claims.session_id) {
            return Err(TokenError::SessionRevoked.into());
        }
        Ok(claims)
    }

    /// Revokes the session of a validated token.
    #[tracing::instrument(skip_all, fields(user_id = %claims.user_id, session_id = %claims.session_id))]
    pub async fn logout(
        &self,
        claims: &AccessClaims,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let tx = self.inner.store.begin_write().await?;
        let audit = AuditRecord::new(AuditKind::Logout, client)
            .actor(&claims.user_id)
            .subject(&claims.user_id)
            .session(&claims.session_id);
        self.revoke_in(
            tx,
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
    async fn live_user(&self, claims: &AccessClaims) -> Result<UserRecord, AuthError> {
        storage::users::find_user(self.inner.store.conn(), &claims.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::InvalidCredentials)
    }

    /// Checks `user`'s current password and returns the hash it matched (no lockout counting:
    /// the caller already holds a session).
    async fn check_current_password(
        &self,
        user: &UserRecord,
        current: Password,
    ) -> Result<passwords::PasswordHash, AuthError> {
        if current.expose().is_empty() {
            return Err(AuthError::InvalidCredentials);
        }
        passwords::check_password_size(current.expose())?;
        let hash = storage::users::find_password_hash(self.inner.store.conn(), &user.id).await?;
        let Some(hash) = hash else {
            return Err(AuthError::InvalidCredentials);
        };
        if !self
            .inner
            .hasher
            .verify(current, Some(hash.clone()))
            .await?
        {
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
        let user = self.live_user(claims).await?;
        // Check the new password's rules before spending a hash on the current one.
        passwords::check_new_password(
            new.expose(),
            &user.email,
            self.inner.settings.min_password_length,
        )?;
        let old_hash = self.check_current_password(&user, current).await?;
        let new_hash = self.inner.hasher.hash(new).await?;
        let tx = self.inner.store.begin_write().await?;
        let Some(updated) =
            storage::users::update_password(&*tx, &user.id, &old_hash, new_hash).await?
        else {
            // Changed concurrently: the current password is no longer the one we checked.
            return Err(AuthError::InvalidCredentials);
        };
        storage::events::append_event(&tx, EventKind::PasswordChanged, &updated, None).await?;
        let revoked = revoke_all_in(
            &tx,
            &updated,
            Some(&claims.session_id),
            RevokeReason::PasswordChanged,
        )
        .await?;
        let record = AuditRecord::new(AuditKind::PasswordChanged, client)
            .actor(&user.id)
            .subject(&user.id)
            .session(&claims.session_id)
            .detail(json!({ "revoked_sessions": revoked.len() }));
        storage::audit::append_audit(&*tx, record).await?;
        tx.commit().await?;
        let count = revoked.len();
        self.inner.revocations.revoke_all(revoked);
        tracing::info!(revoked_sessions = count, "password changed");
        Ok(count)
    }

    /// Stores a new reset (or invite) token for `user` in `tx` and audits its issue.
    pub(crate) async fn issue_reset_in(
        &self,
        tx: &WriteTx,
        user: &UserRecord,
        purpose: ResetPurpose,
        issued_by: Option<&str>,
        client: &ClientInfo,
    ) -> Result<IssuedReset, AuthError> {
        let now = OffsetDateTime::now_utc();
        let ttl = match purpose {
            ResetPurpose::Reset => self.inner.settings.reset_token_ttl,
            ResetPurpose::Invite => self.inner.settings.invite_ttl,
        };
        let expires_at = now + ttl;
        let token = OpaqueToken::generate();
        storage::resets::create_reset(
            &**tx,
            token.hash(),
            &user.id,
            purpose,
            issued_by,
            millis(now),
            millis(expires_at),
        )
        .await?;
        let kind = match issued_by {
            Some(_) => AuditKind::AdminPasswordResetIssued,
            None => AuditKind::PasswordResetIssued,
        };
        let mut record = AuditRecord::new(kind, client)
            .subject(&user.id)
            .detail(json!({ "purpose": format!("{purpose:?}").to_lowercase(), "expires_at": millis(expires_at) }));
        if let Some(actor) = issued_by {
            record = record.actor(actor);
        }
        storage::audit::append_audit(&**tx, record).await?;
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
        let Some(mailer) = self.inner.mailer.clone() else {
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
        let user = storage::users::find_user_by_email(self.inner.store.conn(), email).await?;
        let Some(user) = user.filter(|u| !u.disabled) else {
            tracing::info!("password reset asked for an unknown or disabled email; nothing sent");
            return Ok(());
        };
        let tx = self.inner.store.begin_write().await?;
        let issued = self
            .issue_reset_in(&tx, &user, ResetPurpose::Reset, None, client)
            .await?;
        tx.commit().await?;
        if let Err(error) = mailer
            .send_reset(
                &user.email,
                issued.token.expose(),
                self.inner.settings.reset_token_ttl,
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
        let conn = self.inner.store.conn();
        let now = storage::now_millis();
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
            self.inner.settings.min_password_length,
        )?;
        let hash = self.inner.hasher.hash(new_password).await?;
        let tx = self.inner.store.begin_write().await?;
        if storage::resets::spend_reset(&*tx, &token_hash, storage::now_millis())
            .await?
            .is_none()
        {
            return Err(AuthError::ResetTokenInvalid);
        }
        let updated = storage::users::set_password(&*tx, &user.id, hash)
            .await?
            .ok_or(AuthError::ResetTokenInvalid)?;
        storage::resets::spend_user_resets(&*tx, &user.id, now).await?;
        storage::throttle::delete_throttle(&*tx, &user.email).await?;
        storage::events::append_event(&tx, EventKind::PasswordChanged, &updated, None).await?;
        let revoked = revoke_all_in(&tx, &updated, None, RevokeReason::PasswordReset).await?;
        let record = AuditRecord::new(AuditKind::PasswordResetUsed, client)
            .actor(&user.id)
            .subject(&user.id)
            .detail(json!({ "revoked_sessions": revoked.len() }));
        storage::audit::append_audit(&*tx, record).await?;
        tx.commit().await?;
        let count = revoked.len();
        self.inner.revocations.revoke_all(revoked);
        tracing::info!(user_id = %user.id, revoked_sessions = count, "password reset");
        Ok(count)
    }

    /// Starts (or restarts) a TOTP enrollment for the token's user: base32 secret and
    /// `otpauth://` URI. Already enabled is `FAILED_PRECONDITION`.
    #[tracing::instrument(skip_all, fields(user_id = %claims.user_id))]
    pub async fn begin_totp_enrollment(
        &self,
        claims: &AccessClaims,
    ) -> Result<(String, String), AuthError> {
        let user = storage::users::find_user(self.inner.store.conn(), &claims.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::Token(TokenError::SessionRevoked))?;
        let secret = TotpSecret::generate();
        let stored = self.inner.mfa.encrypt(&user.id, &secret)?;
        let tx = self.inner.store.begin_write().await?;
        if !storage::mfa::create_pending_totp(&*tx, &user.id, stored, storage::now_millis()).await?
        {
            return Err(mfa_already_enabled());
        }
        tx.commit().await?;
        let provisioning = secret.provisioning(&self.inner.settings.totp_issuer, &user.email)?;
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
        let conn = self.inner.store.conn();
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
        let secret = self.inner.mfa.decrypt(&claims.user_id, &totp.secret_enc)?;
        let Some(step) = secret.check(code, unix_secs_now()) else {
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
        let now = storage::now_millis();
        let tx = self.inner.store.begin_write().await?;
        if !storage::mfa::confirm_totp(&*tx, &claims.user_id, step, now).await? {
            return Err(mfa_already_enabled());
        }
        storage::mfa::replace_recovery_codes(&*tx, &claims.user_id, hashes, now).await?;
        let record = AuditRecord::new(AuditKind::MfaEnrolled, client)
            .actor(&claims.user_id)
            .subject(&claims.user_id)
            .session(&claims.session_id);
        storage::audit::append_audit(&*tx, record).await?;
        tx.commit().await?;
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
        let tx = self.inner.store.begin_write().await?;
        if !storage::mfa::delete_totp(&*tx, &user.id).await? {
            return Err(AuthError::FailedPrecondition {
                reason: "MFA_NOT_ENABLED",
                message: "TOTP is not enabled",
            });
        }
        let record = AuditRecord::new(AuditKind::MfaDisabled, client)
            .actor(&user.id)
            .subject(&user.id)
            .session(&claims.session_id);
        storage::audit::append_audit(&*tx, record).await?;
        tx.commit().await?;
        tracing::info!("totp disabled");
        Ok(())
    }
}

fn mfa_already_enabled() -> AuthError {
    AuthError::FailedPrecondition {
        reason: "MFA_ALREADY_ENABLED",
        message: "TOTP is already enabled; disable it first to enroll a new device",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_follow_the_pattern() {
        for ok in ["admin", "events.subscriber", "a", "svc-1_x"] {
            assert!(check_role(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Admin", "1abc", "a b", &"a".repeat(65)] {
            assert!(check_role(bad).is_err(), "{bad}");
        }
    }
}
