//! Offline validation: verify PASETO `v4.public` access tokens locally with the keys from
//! `GetPublicKeys`, so validation costs no RPC at all.
//!
//! Keys are fetched on first use and again when a token names an unknown key id (a rotation),
//! at most once per [`REFETCH_INTERVAL`]. The trade-off: the server's revocation state is not
//! consulted, so a revoked session is refused only once its `SessionRevoked` event reached
//! [`Validator::apply_event`](crate::Validator::apply_event) (the validator remembers revoked
//! sessions and disabled or deleted users until their tokens expire). Without an event feed an
//! offline validator trusts a token until its `exp`.

use std::{
    collections::{HashMap, HashSet},
    sync::RwLock,
    time::{Duration, Instant, SystemTime},
};

use pasetors::{
    Public,
    keys::AsymmetricPublicKey,
    token::UntrustedToken,
    version4::{PublicToken, V4},
};
use serde::Deserialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::sync::Mutex;

use crate::{AuthClient, AuthClientError, Principal};

/// Default shortest interval between two key fetches triggered by unknown key ids. A token
/// naming a key that a fetch within this interval did not return is refused as invalid.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Clock skew tolerated on `nbf`/`iat`.
const LEEWAY: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    sid: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    orgs: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    orgs_truncated: bool,
    iat: String,
    nbf: String,
    exp: String,
    jti: String,
}

#[derive(Deserialize)]
struct Footer {
    kid: String,
}

#[derive(Default)]
struct KeyRing {
    keys: HashMap<String, AsymmetricPublicKey<V4>>,
    issuer: String,
}

/// Local verifier with the server's public keys and the revocations learned from events.
pub(crate) struct OfflineVerifier {
    refetch_interval: Duration,
    ring: RwLock<KeyRing>,
    last_fetch: Mutex<Option<Instant>>,
    /// Revoked session ids with when we learned of them; forgotten after [`MAX_TOKEN_LIFETIME`].
    revoked_sessions: RwLock<HashMap<String, Instant>>,
    blocked_users: RwLock<HashSet<String>>,
}

/// The longest access token lifetime the server allows; a session revoked longer ago than this
/// has no unexpired token left.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

fn invalid(message: &str) -> AuthClientError {
    AuthClientError::Unauthenticated {
        reason: "TOKEN_INVALID".into(),
        message: message.into(),
    }
}

fn parse_time(s: &str) -> Result<OffsetDateTime, AuthClientError> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| invalid("malformed token time"))
}

impl OfflineVerifier {
    pub(crate) fn new(refetch_interval: Duration) -> Self {
        Self {
            refetch_interval,
            ring: RwLock::new(KeyRing::default()),
            last_fetch: Mutex::new(None),
            revoked_sessions: RwLock::new(HashMap::new()),
            blocked_users: RwLock::new(HashSet::new()),
        }
    }

    /// Fetches the keys unless a fetch happened less than [`REFETCH_INTERVAL`] ago (the first
    /// fetch always happens).
    async fn refresh_keys(&self, client: &AuthClient) -> Result<(), AuthClientError> {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.refetch_interval) {
            return Ok(());
        }
        let response = client.public_keys().await?;
        let mut keys = HashMap::new();
        for key in response.keys {
            match AsymmetricPublicKey::<V4>::try_from(key.paserk.as_str()) {
                Ok(public) => {
                    keys.insert(key.key_id, public);
                }
                Err(_) => {
                    tracing::warn!(kid = %key.key_id, "ignoring a public key that is not a k4.public PASERK")
                }
            }
        }
        *last = Some(Instant::now());
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        *ring = KeyRing {
            keys,
            issuer: response.issuer,
        };
        Ok(())
    }

    /// Verifies signature, issuer, validity window and the revocations learned from events.
    pub(crate) async fn verify(
        &self,
        client: &AuthClient,
        token: &str,
    ) -> Result<Principal, AuthClientError> {
        if !token.starts_with(PublicToken::HEADER) {
            return Err(invalid("not a v4.public token"));
        }
        let untrusted = UntrustedToken::<Public, V4>::try_from(token)
            .map_err(|_| invalid("malformed token"))?;
        let footer: Footer = serde_json::from_slice(untrusted.untrusted_footer())
            .map_err(|_| invalid("token without key id"))?;
        if !self.has_key(&footer.kid) {
            self.refresh_keys(client).await?;
        }
        let payload = {
            let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
            let key = ring
                .keys
                .get(&footer.kid)
                .ok_or_else(|| invalid("unknown signing key"))?;
            let trusted = PublicToken::verify(key, &untrusted, None, None)
                .map_err(|_| invalid("invalid signature"))?;
            let claims: Claims =
                serde_json::from_str(trusted.payload()).map_err(|_| invalid("malformed claims"))?;
            if claims.iss != ring.issuer {
                return Err(invalid("wrong issuer"));
            }
            claims
        };
        let now = OffsetDateTime::now_utc();
        let expires_at = parse_time(&payload.exp)?;
        let not_before = parse_time(&payload.nbf)?.max(parse_time(&payload.iat)?);
        if now >= expires_at {
            return Err(AuthClientError::Unauthenticated {
                reason: "TOKEN_EXPIRED".into(),
                message: "token expired".into(),
            });
        }
        if now + LEEWAY < not_before {
            return Err(AuthClientError::Unauthenticated {
                reason: "TOKEN_NOT_YET_VALID".into(),
                message: "token not yet valid".into(),
            });
        }
        if self.is_revoked(&payload.sid, &payload.sub) {
            return Err(AuthClientError::Unauthenticated {
                reason: "SESSION_REVOKED".into(),
                message: "session revoked".into(),
            });
        }
        Ok(Principal {
            user_id: payload.sub,
            session_id: payload.sid,
            roles: payload.roles,
            expires_at: SystemTime::from(expires_at),
            token_id: payload.jti,
            organizations: payload.orgs,
            organizations_truncated: payload.orgs_truncated,
        })
    }

    fn has_key(&self, kid: &str) -> bool {
        self.ring
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .contains_key(kid)
    }

    fn is_revoked(&self, session_id: &str, user_id: &str) -> bool {
        self.revoked_sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(session_id)
            || self
                .blocked_users
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(user_id)
    }

    pub(crate) fn revoke_session(&self, session_id: &str) {
        let mut revoked = self
            .revoked_sessions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if revoked.len() % 1024 == 1023 {
            revoked.retain(|_, learned| learned.elapsed() < MAX_TOKEN_LIFETIME);
        }
        revoked.insert(session_id.to_owned(), Instant::now());
    }

    pub(crate) fn block_user(&self, user_id: &str) {
        self.blocked_users
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user_id.to_owned());
    }

    pub(crate) fn unblock_user(&self, user_id: &str) {
        self.blocked_users
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(user_id);
    }
}
