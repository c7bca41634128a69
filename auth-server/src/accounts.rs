//! The account domain: register, login, refresh, logout, validate, change password, and account
//! creation for the CLI. Composes storage, hashing, tokens and the revocation set; knows nothing
//! of gRPC.

use std::{fmt, sync::Arc, time::Duration};

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{
    error::AuthError,
    passwords::{self, HashPool, Password, PolicyError},
    revocation::Revocations,
    storage::{
        self, EventKind, Store, UserRecord,
        sessions::{ClientInfo, RevokeReason},
        users::NewUser,
    },
    tokens::{AccessClaims, IssuedToken, TokenError, TokenIssuer},
};

/// Built-in role: may use AdminService and subscribe to events.
pub const ROLE_ADMIN: &str = "admin";
/// Built-in role: may subscribe to `UserEvents`.
pub const ROLE_EVENTS_SUBSCRIBER: &str = "events.subscriber";

/// Refresh tokens are 256 random bits, base64url without padding: 43 characters.
const REFRESH_TOKEN_CHARS: usize = 43;

/// An opaque refresh token: prints as `[redacted]`.
pub struct RefreshToken(String);

impl RefreshToken {
    fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The token, to hand to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Hex SHA-256, the only form stored.
    fn hash(&self) -> String {
        hash_refresh_token(&self.0)
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

fn hash_refresh_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        use fmt::Write as _;
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

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

/// Settings the domain needs.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// Whether `Register` is open.
    pub allow_registration: bool,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// Minimum password length.
    pub min_password_length: usize,
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

fn millis(t: OffsetDateTime) -> i64 {
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

/// Creates an account with a password and writes `UserCreated` in the same transaction.
/// Used by `Register`, the CLI's `create-user`/`create-admin`, and later AdminService.
#[tracing::instrument(skip_all)]
pub async fn create_account(
    store: &Store,
    hasher: &HashPool,
    min_password_length: usize,
    new: NewAccount<'_>,
) -> Result<UserRecord, AuthError> {
    let email = passwords::normalize_email(new.email)?;
    passwords::check_new_password(new.password.expose(), &email, min_password_length)?;
    let display_name = new.display_name.trim();
    if display_name.len() > 256 {
        return Err(AuthError::InvalidArgument(
            "display name is longer than 256 bytes".into(),
        ));
    }
    let mut roles = new.roles;
    for role in &roles {
        check_role(role)?;
    }
    roles.sort();
    roles.dedup();
    // Save a hash in the common case; the unique index still decides under a race.
    if storage::users::find_user_by_email(store.conn(), &email)
        .await?
        .is_some()
    {
        return Err(AuthError::EmailTaken);
    }
    let hash = hasher.hash(new.password).await?;
    let tx = store.begin_write().await?;
    let user = storage::users::create_user(
        &*tx,
        NewUser {
            email,
            display_name: display_name.to_owned(),
            roles,
            password_hash: Some(hash),
        },
    )
    .await
    .map_err(|e| match e {
        storage::StorageError::Duplicate(_) => AuthError::EmailTaken,
        other => other.into(),
    })?;
    storage::events::append_event(&tx, EventKind::UserCreated, &user, None).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "user created");
    Ok(user)
}

impl Accounts {
    /// Builds the service.
    pub fn new(
        store: Store,
        hasher: HashPool,
        tokens: Arc<TokenIssuer>,
        revocations: Revocations,
        settings: AccountSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                hasher,
                tokens,
                revocations,
                settings,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
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

    /// Creates an account with a password (see [`create_account`]).
    pub async fn create_account(
        &self,
        email: &str,
        password: Password,
        display_name: &str,
        roles: Vec<String>,
    ) -> Result<UserRecord, AuthError> {
        let inner = &self.inner;
        let new = NewAccount {
            email,
            password,
            display_name,
            roles,
        };
        create_account(
            &inner.store,
            &inner.hasher,
            inner.settings.min_password_length,
            new,
        )
        .await
    }

    /// Self-registration.
    pub async fn register(
        &self,
        email: &str,
        password: Password,
        display_name: &str,
    ) -> Result<UserRecord, AuthError> {
        if !self.inner.settings.allow_registration {
            return Err(AuthError::RegistrationDisabled);
        }
        self.create_account(email, password, display_name, Vec::new())
            .await
    }

    /// Email + password login. Unknown email, wrong password and disabled account all answer
    /// `InvalidCredentials` after exactly one argon2 verification.
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        email: &str,
        password: Password,
        client: &ClientInfo,
    ) -> Result<SessionTokens, AuthError> {
        let email = passwords::normalize_email(email)?;
        passwords::check_password_size(password.expose())?;
        let conn = self.inner.store.conn();
        let user = storage::users::find_user_by_email(conn, &email).await?;
        let lookup_id = user.as_ref().map_or(NO_USER_ID, |u| u.id.as_str());
        let hash = storage::users::find_password_hash(conn, lookup_id).await?;
        let matched = self.inner.hasher.verify(password, hash).await?;
        let user = match user {
            Some(user) if matched && !user.disabled => user,
            _ => {
                tracing::info!("login failed");
                return Err(AuthError::InvalidCredentials);
            }
        };
        let tokens = self.start_session(user, client).await?;
        tracing::info!(user_id = %tokens.user.id, session_id = %tokens.session_id, jti = %tokens.access.token_id, "login ok");
        Ok(tokens)
    }

    async fn start_session(
        &self,
        user: UserRecord,
        client: &ClientInfo,
    ) -> Result<SessionTokens, AuthError> {
        let now = OffsetDateTime::now_utc();
        let expires_at = millis(now + self.inner.settings.refresh_ttl);
        let tx = self.inner.store.begin_write().await?;
        let session_id =
            storage::sessions::create_session(&*tx, &user.id, millis(now), expires_at, client)
                .await?;
        self.issue_pair(tx, user, session_id, now).await
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
    pub async fn refresh(&self, presented: &str) -> Result<SessionTokens, AuthError> {
        let presented = presented.trim();
        let well_formed = presented.len() == REFRESH_TOKEN_CHARS
            && presented
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(AuthError::RefreshRejected("malformed"));
        }
        let token_hash = hash_refresh_token(presented);
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
            self.revoke_in(
                tx,
                &session.user_id,
                &session.id,
                RevokeReason::RefreshReuse,
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

    /// Revokes a session inside `tx`, writes `SessionRevoked`, commits, and updates the
    /// in-memory set.
    async fn revoke_in(
        &self,
        tx: storage::WriteTx,
        user_id: &str,
        session_id: &str,
        reason: RevokeReason,
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
    pub async fn logout(&self, claims: &AccessClaims) -> Result<(), AuthError> {
        let tx = self.inner.store.begin_write().await?;
        self.revoke_in(
            tx,
            &claims.user_id,
            &claims.session_id,
            RevokeReason::Logout,
        )
        .await?;
        tracing::info!(jti = %claims.token_id, "logged out");
        Ok(())
    }

    /// Changes the password of the token's user after checking the current one; revokes every
    /// other session. The change, `PasswordChanged` and one `SessionRevoked` per revoked session
    /// commit together. Returns how many sessions were revoked.
    #[tracing::instrument(skip_all, fields(user_id = %claims.user_id))]
    pub async fn change_password(
        &self,
        claims: &AccessClaims,
        current: Password,
        new: Password,
    ) -> Result<usize, AuthError> {
        if current.expose().is_empty() {
            return Err(AuthError::InvalidCredentials);
        }
        passwords::check_password_size(current.expose())?;
        let conn = self.inner.store.conn();
        let user = storage::users::find_user(conn, &claims.user_id)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::InvalidCredentials)?;
        passwords::check_new_password(
            new.expose(),
            &user.email,
            self.inner.settings.min_password_length,
        )?;
        let old_hash = storage::users::find_password_hash(conn, &user.id).await?;
        let Some(old_hash) = old_hash else {
            return Err(AuthError::InvalidCredentials);
        };
        if !self
            .inner
            .hasher
            .verify(current, Some(old_hash.clone()))
            .await?
        {
            tracing::info!("password change refused: wrong current password");
            return Err(AuthError::InvalidCredentials);
        }
        let new_hash = self.inner.hasher.hash(new).await?;
        let tx = self.inner.store.begin_write().await?;
        let Some(updated) =
            storage::users::update_password(&*tx, &user.id, &old_hash, new_hash).await?
        else {
            // Changed concurrently: the current password is no longer the one we checked.
            return Err(AuthError::InvalidCredentials);
        };
        let now = storage::now_millis();
        let revoked = storage::sessions::revoke_user_sessions(
            &*tx,
            &user.id,
            Some(&claims.session_id),
            RevokeReason::PasswordChanged,
            now,
        )
        .await?;
        storage::events::append_event(&tx, EventKind::PasswordChanged, &updated, None).await?;
        for session_id in &revoked {
            storage::events::append_event(
                &tx,
                EventKind::SessionRevoked,
                &updated,
                Some(session_id),
            )
            .await?;
        }
        tx.commit().await?;
        let count = revoked.len();
        self.inner.revocations.revoke_all(revoked);
        tracing::info!(revoked_sessions = count, "password changed");
        Ok(count)
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

    #[test]
    fn refresh_tokens_are_43_chars_and_print_redacted() {
        let token = RefreshToken::generate();
        assert_eq!(token.expose().len(), REFRESH_TOKEN_CHARS);
        assert!(!format!("{token:?}").contains(token.expose()));
        assert_eq!(token.hash().len(), 64);
    }
}
