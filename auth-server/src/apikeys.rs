//! API keys of service accounts, checked in memory: no database round trip per call.
//!
//! A key is `ak_` + its id (a UUID without dashes: it identifies the key, safe to log) + `_` +
//! 256 random bits in base64url. Only the SHA-256 of the whole key is stored. This set holds
//! every unrevoked key with its hash, its account's roles and whether the account is enabled;
//! it is loaded at start and kept current from the event feed (`ApiKeyIssued`,
//! `ApiKeyRevoked`, and every change of the owner's roles or state), so a revocation on one
//! replica reaches the others as fast as events do. Each key has its own rate limit.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, RwLock},
};

use base64::Engine as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter as Governor};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::{
    clock,
    secrets::sha256_hex,
    storage::{UserRecord, api_keys::LiveKey},
};

/// What every key starts with.
pub const API_KEY_PREFIX: &str = "ak_";
/// `ak_` + 32 hex digits + `_` + 43 base64url characters.
const KEY_CHARS: usize = 3 + 32 + 1 + 43;

/// A freshly made key: shown once, `Debug` never prints it.
pub struct NewApiKey {
    /// The key id (a UUID).
    pub id: String,
    /// The whole key.
    secret: String,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl NewApiKey {
    /// A new key with a fresh id and 256 random bits.
    pub fn generate() -> Self {
        let id = uuid::Uuid::now_v7();
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!(
            "{API_KEY_PREFIX}{}_{}",
            id.simple(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        Self {
            id: id.to_string(),
            secret,
        }
    }

    /// The key, to hand to the caller once.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    /// Hex SHA-256, the only form stored.
    pub fn hash(&self) -> String {
        sha256_hex(&self.secret)
    }
}

/// Whether a bearer credential is an API key (by its prefix).
pub fn is_api_key(presented: &str) -> bool {
    presented.starts_with(API_KEY_PREFIX)
}

/// The key id of a well-formed key.
fn key_id(presented: &str) -> Option<String> {
    if presented.len() != KEY_CHARS || presented.as_bytes()[35] != b'_' {
        return None;
    }
    let id = uuid::Uuid::try_parse(presented.get(3..35)?).ok()?;
    let secret_ok = presented[36..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    secret_ok.then(|| id.to_string())
}

/// Why a key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// Malformed, unknown, or the secret does not match.
    Invalid,
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
    /// Its service account is disabled or deleted.
    AccountDisabled,
    /// Over its rate limit.
    RateLimited(std::time::Duration),
}

/// Who a key speaks for.
#[derive(Debug, Clone)]
pub struct KeyPrincipal {
    /// The key id.
    pub key_id: String,
    /// The service account.
    pub user_id: String,
    /// Its roles now.
    pub roles: Vec<String>,
    /// The key's expiry, unix ms.
    pub expires_at: Option<i64>,
}

struct Entry {
    hash: [u8; 32],
    user_id: String,
    roles: Vec<String>,
    disabled: bool,
    expires_at: Option<i64>,
    revoked: bool,
}

fn digest(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    out
}

fn entry(live: &LiveKey) -> Entry {
    Entry {
        hash: digest(&live.secret_hash),
        user_id: live.user.id.clone(),
        roles: live.user.roles.clone(),
        disabled: live.user.disabled,
        expires_at: live.key.expires_at,
        revoked: live.key.revoked_at.is_some(),
    }
}

/// The in-memory key set; cheap to clone (shared).
#[derive(Clone)]
pub struct ApiKeys {
    keys: Arc<RwLock<HashMap<String, Entry>>>,
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.len())
            .finish()
    }
}

impl ApiKeys {
    /// An empty set whose keys may each make `per_second` calls (bursts of as many).
    pub fn new(per_second: NonZeroU32) -> Self {
        Self {
            keys: Arc::default(),
            limiter: Arc::new(Governor::keyed(Quota::per_second(per_second))),
        }
    }

    /// Replaces the whole set with `live` (at start).
    pub fn load(&self, live: &[LiveKey]) {
        let map = live.iter().map(|k| (k.key.id.clone(), entry(k))).collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// Adds or replaces one key (issued here or on another replica).
    pub fn insert(&self, live: &LiveKey) {
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(live.key.id.clone(), entry(live));
    }

    /// Refuses the key from now on.
    pub fn revoke(&self, key_id: &str) {
        if let Some(e) = self
            .keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(key_id)
        {
            e.revoked = true;
        }
    }

    /// Takes the owner's roles and state from an event's payload.
    pub fn apply_user(&self, user: &UserRecord) {
        // Every event passes here; most users own no key, so look before taking the write lock.
        let owns_keys = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|e| e.user_id == user.id);
        if !owns_keys {
            return;
        }
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        for e in keys.values_mut().filter(|e| e.user_id == user.id) {
            e.roles.clone_from(&user.roles);
            e.disabled = user.disabled;
        }
    }

    /// Keys in the set (revoked ones included until restart).
    pub fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks a presented key: shape, id, constant-time hash comparison, revocation, expiry,
    /// the owner's state, then the key's rate limit.
    pub fn check(&self, presented: &str) -> Result<KeyPrincipal, KeyRefusal> {
        let presented = presented.trim();
        let id = key_id(presented).ok_or(KeyRefusal::Invalid)?;
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let principal = {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            let entry = keys.get(&id).ok_or(KeyRefusal::Invalid)?;
            if !bool::from(entry.hash.ct_eq(&hash)) {
                return Err(KeyRefusal::Invalid);
            }
            if entry.revoked {
                return Err(KeyRefusal::Revoked);
            }
            if entry.expires_at.is_some_and(|at| at <= clock::now_millis()) {
                return Err(KeyRefusal::Expired);
            }
            if entry.disabled {
                return Err(KeyRefusal::AccountDisabled);
            }
            KeyPrincipal {
                key_id: id,
                user_id: entry.user_id.clone(),
                roles: entry.roles.clone(),
                expires_at: entry.expires_at,
            }
        };
        self.limiter
            .check_key(&principal.key_id)
            .map_err(|not_until| {
                use governor::clock::{Clock as _, DefaultClock};
                KeyRefusal::RateLimited(not_until.wait_time_from(DefaultClock::default().now()))
            })?;
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::api_keys::ApiKeyRecord;

    fn live(key: &NewApiKey, roles: &[&str]) -> LiveKey {
        LiveKey {
            key: ApiKeyRecord {
                id: key.id.clone(),
                user_id: "u1".into(),
                name: "sync".into(),
                created_at: 0,
                expires_at: None,
                revoked_at: None,
            },
            secret_hash: key.hash(),
            user: UserRecord {
                id: "u1".into(),
                email: "svc@example.com".into(),
                email_verified: false,
                display_name: String::new(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                disabled: false,
                version: 1,
                created_at: 0,
                external_id: None,
                service_account: true,
                metadata: Default::default(),
            },
        }
    }

    #[test]
    fn a_key_is_checked_by_hash_and_follows_its_owner_and_revocation() {
        let keys = ApiKeys::new(NonZeroU32::new(1000).expect("non-zero"));
        let key = NewApiKey::generate();
        assert!(key.expose().starts_with(API_KEY_PREFIX));
        assert_eq!(key.expose().len(), KEY_CHARS);
        assert!(!format!("{key:?}").contains(key.expose()));
        assert_eq!(keys.check(key.expose()).err(), Some(KeyRefusal::Invalid));
        keys.insert(&live(&key, &["events.subscriber"]));
        let p = keys.check(key.expose()).expect("valid");
        assert_eq!(p.roles, ["events.subscriber"]);
        assert_eq!(p.key_id, key.id);

        // One changed character of the secret, or a key of another shape: invalid.
        let mut wrong = key.expose().to_owned();
        let last = wrong.pop().expect("char");
        wrong.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(keys.check(&wrong).err(), Some(KeyRefusal::Invalid));
        assert_eq!(keys.check("ak_short").err(), Some(KeyRefusal::Invalid));

        let mut owner = live(&key, &[]).user;
        owner.roles = vec!["admin".into()];
        keys.apply_user(&owner);
        assert_eq!(keys.check(key.expose()).expect("valid").roles, ["admin"]);
        owner.disabled = true;
        keys.apply_user(&owner);
        assert_eq!(
            keys.check(key.expose()).err(),
            Some(KeyRefusal::AccountDisabled)
        );
        keys.revoke(&key.id);
        assert_eq!(keys.check(key.expose()).err(), Some(KeyRefusal::Revoked));
    }

    #[test]
    fn each_key_has_its_own_rate_limit() {
        let keys = ApiKeys::new(NonZeroU32::new(3).expect("non-zero"));
        let (a, b) = (NewApiKey::generate(), NewApiKey::generate());
        keys.insert(&live(&a, &[]));
        keys.insert(&live(&b, &[]));
        for _ in 0..3 {
            keys.check(a.expose()).expect("within the limit");
        }
        assert!(matches!(
            keys.check(a.expose()),
            Err(KeyRefusal::RateLimited(_))
        ));
        keys.check(b.expose()).expect("another key is not limited");
    }
}
