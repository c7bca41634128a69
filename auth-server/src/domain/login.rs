//! Login: email + password, and the TOTP second step for accounts with MFA.
//!
//! Unknown email, wrong password and disabled account all answer `InvalidCredentials` after
//! exactly one argon2 verification (an unknown email verifies the pool's dummy hash), and count
//! toward the email's lockout (`lockout.rs`). A locked email answers the same without hashing.

use serde_json::json;
use time::OffsetDateTime;

use super::{
    Accounts, Change,
    lockout::{self, Throttle},
    sessions::SessionTokens,
};
use crate::{
    clock,
    error::AuthError,
    mfa,
    passwords::{self, Password},
    secrets::{self, OpaqueToken},
    storage::{
        self, ClientInfo, UserRecord,
        audit::{AuditKind, AuditRecord, Outcome},
    },
};

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

/// An id of the same shape as a real user id that no user has: unknown emails look up the
/// credential of this id so they cost the same queries as known ones.
const NO_USER_ID: &str = "00000000-0000-0000-0000-000000000000";

impl Accounts {
    /// Email + password login.
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        email: &str,
        password: Password,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, AuthError> {
        let email = passwords::normalize_email(email)?;
        passwords::check_password_size(password.expose())?;
        let d = &self.d;
        // A place in the hash pool before any database work: when the pool is full the login
        // is refused in microseconds and costs nothing else.
        let ticket = d.hasher.reserve()?;
        let conn = d.store.conn();
        let user = storage::users::find_user_by_email(conn, &email).await?;
        let subject = user.as_ref().map(|u| u.id.as_str());
        let throttle = self.check_throttle(&email, subject, client).await?;
        if throttle == Throttle::Locked {
            d.metrics.login("locked");
            return Err(AuthError::InvalidCredentials);
        }
        let lookup_id = subject.unwrap_or(NO_USER_ID);
        let hash = storage::users::find_password_hash(conn, lookup_id).await?;
        // A hash made with other parameters is replaced once the password is known to match.
        let stale = hash
            .as_ref()
            .filter(|h| !d.hasher.is_current(h))
            .map(|h| (h.clone(), password.clone()));
        let matched = ticket.verify(password, hash).await?;
        let user = match user {
            Some(user) if matched && !user.disabled => user,
            Some(user) if matched => {
                // The right password for a disabled account: refused like any failure, but
                // not counted toward the lockout (nobody is guessing).
                let record = AuditRecord::new(AuditKind::LoginFailed, client)
                    .outcome(Outcome::Denied)
                    .subject(&user.id)
                    .detail(json!({ "email": email, "reason": "disabled" }));
                storage::audit::append_audit(conn, record).await?;
                d.metrics.login("failure");
                tracing::info!(user_id = %user.id, "login refused: account disabled");
                return Err(AuthError::InvalidCredentials);
            }
            user => {
                let subject = user.as_ref().map(|u| u.id.as_str());
                self.record_failure(&email, subject, AuditKind::LoginFailed, client)
                    .await?;
                d.metrics.login("failure");
                tracing::info!("login failed");
                return Err(AuthError::InvalidCredentials);
            }
        };
        let rehashed = match stale {
            Some((old, password)) => self.rehash(old, password).await,
            None => None,
        };
        if storage::mfa::find_totp(conn, &user.id)
            .await?
            .is_some_and(|t| t.confirmed)
        {
            if let Some((old, new)) = rehashed {
                self.store_rehash(conn, &user.id, &old, new).await?;
            }
            d.metrics.login("mfa_required");
            return self.start_mfa_challenge(user, &email, client).await;
        }
        let change = d.begin().await?;
        if let Some((old, new)) = rehashed {
            self.store_rehash(change.db(), &user.id, &old, new).await?;
        }
        let tokens = self
            .start_session(
                change,
                user,
                &email,
                throttle,
                client,
                json!({ "mfa": false }),
            )
            .await?;
        d.metrics.login("success");
        tracing::info!(user_id = %tokens.user.id, session_id = %tokens.session_id, jti = %tokens.access.token_id, "login ok");
        Ok(LoginOutcome::Session(tokens))
    }

    /// A new argon2id hash of `password` with the current parameters, to replace `old`; `None`
    /// when the pool has no place now (the next login tries again) or hashing failed.
    async fn rehash(
        &self,
        old: storage::PasswordHash,
        password: Password,
    ) -> Option<(storage::PasswordHash, storage::PasswordHash)> {
        let ticket = self.d.hasher.reserve().ok()?;
        match ticket.hash(password).await {
            Ok(new) => Some((old, new)),
            Err(error) => {
                tracing::warn!(error.message = %error, "re-hash at login failed; the old hash stays");
                None
            }
        }
    }

    /// Stores a re-hash (if the stored hash is still `old`) and counts it.
    async fn store_rehash(
        &self,
        conn: &impl sea_orm::ConnectionTrait,
        user_id: &str,
        old: &storage::PasswordHash,
        new: storage::PasswordHash,
    ) -> Result<(), AuthError> {
        if storage::users::replace_hash(conn, user_id, old, new).await? {
            self.d.metrics.rehash();
            tracing::info!(user_id, "password re-hashed with the current parameters");
        }
        Ok(())
    }

    async fn start_mfa_challenge(
        &self,
        user: UserRecord,
        email: &str,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, AuthError> {
        let now = clock::now();
        let expires_at = now + self.d.settings.mfa_challenge_ttl;
        let token = OpaqueToken::generate();
        storage::mfa::create_challenge(
            self.d.store.conn(),
            token.hash(),
            &user.id,
            email,
            clock::millis(now),
            clock::millis(expires_at),
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

    /// Creates a session in `change`, clears the email's failures (if `throttle` saw any),
    /// audits the login, commits, and signs the tokens.
    async fn start_session(
        &self,
        change: Change,
        user: UserRecord,
        email: &str,
        throttle: Throttle,
        client: &ClientInfo,
        detail: serde_json::Value,
    ) -> Result<SessionTokens, AuthError> {
        let now = clock::now();
        let expires_at = clock::millis(self.session_expiry(now, now));
        let session_id = storage::sessions::create_session(
            change.db(),
            &user.id,
            clock::millis(now),
            expires_at,
            client,
        )
        .await?;
        if throttle == Throttle::Counting {
            lockout::clear(change.db(), email).await?;
        }
        let record = AuditRecord::new(AuditKind::LoginSucceeded, client)
            .actor(&user.id)
            .subject(&user.id)
            .session(&session_id)
            .detail(detail);
        change.audit(record).await?;
        self.issue_pair(change, user, session_id, now, now).await
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
        let d = &self.d;
        let conn = d.store.conn();
        let now = clock::now_millis();
        let challenge = storage::mfa::find_challenge(conn, &token_hash)
            .await?
            .filter(|c| c.used_at.is_none() && c.expires_at > now)
            .ok_or(AuthError::MfaTokenInvalid)?;
        let throttle = self
            .check_throttle(&challenge.email, Some(&challenge.user_id), client)
            .await?;
        if throttle == Throttle::Locked {
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
        let change = d.begin().await?;
        let method = if code.is_empty() {
            "recovery_code"
        } else {
            "totp"
        };
        let accepted = if code.is_empty() {
            match mfa::normalize_recovery_code(recovery_code) {
                Some(canonical) => {
                    storage::mfa::spend_recovery_code(
                        change.db(),
                        &user.id,
                        &secrets::sha256_hex(&canonical),
                        now,
                    )
                    .await?
                }
                None => false,
            }
        } else {
            self.spend_totp_code(&change, &user.id, &totp, code).await?
        };
        if !accepted {
            drop(change);
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
        if !storage::mfa::spend_challenge(change.db(), &token_hash, now).await? {
            return Err(AuthError::MfaTokenInvalid);
        }
        if method == "recovery_code" {
            let record = AuditRecord::new(AuditKind::MfaRecoveryCodeUsed, client)
                .actor(&user.id)
                .subject(&user.id);
            change.audit(record).await?;
        }
        let tokens = self
            .start_session(
                change,
                user,
                &challenge.email,
                throttle,
                client,
                json!({ "mfa": method }),
            )
            .await?;
        d.metrics.login("success");
        tracing::info!(user_id = %tokens.user.id, session_id = %tokens.session_id, jti = %tokens.access.token_id, method, "login ok (mfa)");
        Ok(tokens)
    }
}
