//! Access tokens: PASETO `v4.public` (Ed25519) signed with the current key of a [`KeySet`],
//! verified against any key of the set, so a key can rotate without logging anyone out.
//!
//! Every key has a signing start; the signer is the key with the latest start that has begun.
//! A key replaced as signer keeps verifying for one access-token lifetime (plus leeway), after
//! which no token it signed can still be valid; a key not yet signing already verifies, so
//! replicas that pick a rotation up at slightly different moments accept each other's tokens.
//! Where keys are stored and rotated is [`crate::keys`]. Claims: `sub`, `sid`, `roles`, `iss`,
//! `iat`, `nbf`, `exp`, `jti`, and for a member of organizations `orgs` (organization id ->
//! roles in it) with `orgs_truncated: true` when some were left out; the footer carries `kid`
//! (the PASERK `k4.pid.` id).

mod verified;

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, RwLock},
    time::Duration,
};

use pasetors::{
    Public,
    token::UntrustedToken,
    version4::{PublicToken, V4},
};
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use self::verified::{Cached, VerifiedCache};

/// Longest token accepted for parsing; longer input is refused without work.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Clock skew tolerated on `nbf`/`iat`.
pub use crate::clock::LEEWAY;

/// Why a token is refused. Each maps to an `ErrorInfo` reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `authorization` metadata (or an empty token).
    #[error("missing bearer token")]
    Missing,
    /// `authorization` is not exactly one `Bearer <token>`.
    #[error("malformed authorization header")]
    BadHeader,
    /// Not a PASETO v4.public token, or bad encoding, footer or claims.
    #[error("malformed token")]
    Malformed,
    /// The `kid` names no key of this server.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// `iss` is not this server's.
    #[error("wrong issuer")]
    WrongIssuer,
    /// Past `exp`.
    #[error("token expired")]
    Expired,
    /// Before `nbf`.
    #[error("token not yet valid")]
    NotYetValid,
    /// The session was revoked (logout, refresh reuse, password change).
    #[error("session revoked")]
    SessionRevoked,
    /// An API key that is malformed, unknown, or whose secret does not match.
    #[error("invalid API key")]
    ApiKeyInvalid,
    /// A revoked API key.
    #[error("API key revoked")]
    ApiKeyRevoked,
    /// An API key past its expiry.
    #[error("API key expired")]
    ApiKeyExpired,
    /// An API key whose service account is disabled or deleted.
    #[error("account disabled")]
    AccountDisabled,
}

impl TokenError {
    /// Machine-readable reason for `google.rpc.ErrorInfo`.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Missing => "TOKEN_MISSING",
            TokenError::BadHeader => "AUTHORIZATION_MALFORMED",
            TokenError::Malformed
            | TokenError::UnknownKey
            | TokenError::BadSignature
            | TokenError::WrongIssuer => "TOKEN_INVALID",
            TokenError::Expired => "TOKEN_EXPIRED",
            TokenError::NotYetValid => "TOKEN_NOT_YET_VALID",
            TokenError::SessionRevoked => "SESSION_REVOKED",
            TokenError::ApiKeyInvalid => "API_KEY_INVALID",
            TokenError::ApiKeyRevoked => "API_KEY_REVOKED",
            TokenError::ApiKeyExpired => "API_KEY_EXPIRED",
            TokenError::AccountDisabled => "ACCOUNT_DISABLED",
        }
    }

    /// Message for the caller. Signature and key problems share one message on purpose.
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Missing => "missing bearer token",
            TokenError::BadHeader => "authorization must be exactly one 'Bearer <token>'",
            TokenError::Malformed
            | TokenError::UnknownKey
            | TokenError::BadSignature
            | TokenError::WrongIssuer => "invalid token",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid",
            TokenError::SessionRevoked => "session revoked",
            TokenError::ApiKeyInvalid => "invalid API key",
            TokenError::ApiKeyRevoked => "API key revoked",
            TokenError::ApiKeyExpired => "API key expired",
            TokenError::AccountDisabled => "account disabled",
        }
    }
}

pub use crate::keyset::{KeyEntry, KeyError, KeySet, SigningKey, StoredKey, verify_until};

/// What a verified access token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    /// `sub`: the user id.
    pub user_id: String,
    /// `sid`: the session id.
    pub session_id: String,
    /// `roles`.
    pub roles: Vec<String>,
    /// `exp`.
    pub expires_at: OffsetDateTime,
    /// `jti`: the token id (safe to log).
    pub token_id: String,
    /// `orgs` and `orgs_truncated`.
    pub memberships: TokenMemberships,
}

/// The organization memberships a token carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenMemberships {
    /// Organization id -> the roles in it.
    pub organizations: BTreeMap<String, Vec<String>>,
    /// Whether some of the user's memberships were left out (over the token's cap).
    pub truncated: bool,
}

#[derive(Serialize, Deserialize)]
struct WireClaims {
    iss: String,
    sub: String,
    sid: String,
    roles: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    orgs: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    orgs_truncated: bool,
    iat: String,
    nbf: String,
    exp: String,
    jti: String,
}

#[derive(Serialize, Deserialize)]
struct WireFooter {
    kid: String,
}

/// A freshly issued access token.
pub struct IssuedToken {
    /// The token string.
    pub token: String,
    /// Its `exp`.
    pub expires_at: OffsetDateTime,
    /// Its `jti`.
    pub token_id: String,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .field("token_id", &self.token_id)
            .finish()
    }
}

/// Issues and verifies access tokens.
#[derive(Debug)]
pub struct TokenIssuer {
    keys: RwLock<Arc<KeySet>>,
    issuer: String,
    ttl: Duration,
    verified: VerifiedCache,
}

fn rfc3339(t: OffsetDateTime) -> Result<String, TokenError> {
    t.format(&Rfc3339).map_err(|_| TokenError::Malformed)
}

impl TokenIssuer {
    /// A new issuer.
    pub fn new(keys: KeySet, issuer: String, ttl: Duration) -> Self {
        Self {
            keys: RwLock::new(Arc::new(keys)),
            issuer,
            ttl,
            verified: VerifiedCache::default(),
        }
    }

    /// The key set now.
    pub fn keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Swaps in a reloaded key set; `true` if it differs. When a key left the set (retired or
    /// expired), the verified-token cache is cleared so its tokens are checked again (and fail).
    pub fn replace_keys(&self, keys: KeySet) -> bool {
        let mut current = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if current.same_keys(&keys) {
            return false;
        }
        let dropped = current
            .by_kid
            .keys()
            .any(|kid| !keys.by_kid.contains_key(kid));
        *current = Arc::new(keys);
        drop(current);
        if dropped {
            self.verified.clear();
        }
        true
    }

    /// The `iss` of issued tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Access token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs a token for a session.
    pub fn issue(
        &self,
        user_id: &str,
        session_id: &str,
        roles: &[String],
        memberships: &TokenMemberships,
    ) -> Result<IssuedToken, TokenError> {
        self.issue_until(user_id, session_id, roles, memberships, None)
    }

    /// Signs a token for a session that ends at `session_ends_at`: the token expires then at
    /// the latest (whole seconds, rounded down), so it never outlives its session.
    pub fn issue_until(
        &self,
        user_id: &str,
        session_id: &str,
        roles: &[String],
        memberships: &TokenMemberships,
        session_ends_at: Option<OffsetDateTime>,
    ) -> Result<IssuedToken, TokenError> {
        let now = crate::clock::now()
            .replace_nanosecond(0)
            .map_err(|_| TokenError::Malformed)?;
        let mut expires_at = now + self.ttl;
        if let Some(ends) = session_ends_at {
            let ends = ends
                .replace_nanosecond(0)
                .map_err(|_| TokenError::Malformed)?;
            expires_at = expires_at.min(ends.max(now));
        }
        let token_id = uuid::Uuid::now_v7().to_string();
        let claims = WireClaims {
            iss: self.issuer.clone(),
            sub: user_id.to_owned(),
            sid: session_id.to_owned(),
            roles: roles.to_vec(),
            orgs: memberships.organizations.clone(),
            orgs_truncated: memberships.truncated,
            iat: rfc3339(now)?,
            nbf: rfc3339(now)?,
            exp: rfc3339(expires_at)?,
            jti: token_id.clone(),
        };
        let keys = self.keys();
        // The precise time: `now` above is truncated to the second for the claims.
        let signer = &keys.signer_at(crate::clock::now()).key;
        let payload = serde_json::to_vec(&claims).map_err(|_| TokenError::Malformed)?;
        let footer = serde_json::to_vec(&WireFooter {
            kid: signer.kid().to_owned(),
        })
        .map_err(|_| TokenError::Malformed)?;
        let token = PublicToken::sign(&signer.secret, &payload, Some(&footer), None)
            .map_err(|_| TokenError::Malformed)?;
        Ok(IssuedToken {
            token,
            expires_at,
            token_id,
        })
    }

    /// Verifies signature, issuer and validity window. Revocation is the caller's business.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        self.verify_at(token, crate::clock::now())
    }

    /// [`Self::verify`] at a given time.
    pub fn verify_at(&self, token: &str, now: OffsetDateTime) -> Result<AccessClaims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES || !token.starts_with(PublicToken::HEADER) {
            return Err(TokenError::Malformed);
        }
        let cache_key = VerifiedCache::key(token);
        if let Some(cached) = self.verified.get(&cache_key) {
            check_window(now, cached.claims.expires_at, cached.not_before)?;
            return Ok(cached.claims);
        }
        let (claims, not_before) = self.verify_signed(token, now)?;
        self.verified.insert(
            cache_key,
            Cached {
                claims: claims.clone(),
                not_before,
            },
            now,
        );
        Ok(claims)
    }

    /// Full verification without the verified-token cache (what a first sight of a token
    /// costs); returns the claims and the effective not-before.
    pub fn verify_signed(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<(AccessClaims, OffsetDateTime), TokenError> {
        if token.len() > MAX_TOKEN_BYTES || !token.starts_with(PublicToken::HEADER) {
            return Err(TokenError::Malformed);
        }
        let untrusted =
            UntrustedToken::<Public, V4>::try_from(token).map_err(|_| TokenError::Malformed)?;
        let footer: WireFooter = serde_json::from_slice(untrusted.untrusted_footer())
            .map_err(|_| TokenError::Malformed)?;
        let keys = self.keys();
        let entry = keys.find(&footer.kid).ok_or(TokenError::UnknownKey)?;
        if entry.verify_until().is_some_and(|until| until <= now) {
            return Err(TokenError::UnknownKey);
        }
        let trusted = PublicToken::verify(&entry.key.public, &untrusted, None, None)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: WireClaims =
            serde_json::from_str(trusted.payload()).map_err(|_| TokenError::Malformed)?;
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        let parse = |s: &str| OffsetDateTime::parse(s, &Rfc3339).map_err(|_| TokenError::Malformed);
        let expires_at = parse(&claims.exp)?;
        let not_before = parse(&claims.nbf)?.max(parse(&claims.iat)?);
        check_window(now, expires_at, not_before)?;
        let claims = AccessClaims {
            user_id: claims.sub,
            session_id: claims.sid,
            roles: claims.roles,
            expires_at,
            token_id: claims.jti,
            memberships: TokenMemberships {
                organizations: claims.orgs,
                truncated: claims.orgs_truncated,
            },
        };
        Ok((claims, not_before))
    }
}

fn check_window(
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
    not_before: OffsetDateTime,
) -> Result<(), TokenError> {
    if now >= expires_at {
        return Err(TokenError::Expired);
    }
    if now + LEEWAY < not_before {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
