//! The verified-token cache behind `Validate`: a token seen before costs a hash lookup, not an
//! Ed25519 verification.

use std::collections::HashMap;

use time::OffsetDateTime;

use super::AccessClaims;

/// Entries of the verified-token cache at most; about 150 bytes each.
const VERIFIED_CACHE_ENTRIES: usize = 16_384;

/// Tokens whose signature and claims already verified, keyed by the SHA-256 of the token, so a
/// token presented on every request costs one Ed25519 verification, not one per call. Time
/// checks (`exp`, `nbf`) still run on every hit; revocation is checked by the caller as always.
/// Bounded: when full, expired entries go first, then everything.
#[derive(Debug, Default)]
pub(super) struct VerifiedCache {
    entries: std::sync::RwLock<HashMap<[u8; 32], Cached>>,
}

#[derive(Debug, Clone)]
pub(super) struct Cached {
    pub(super) claims: AccessClaims,
    pub(super) not_before: OffsetDateTime,
}

impl VerifiedCache {
    pub(super) fn key(token: &str) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    pub(super) fn get(&self, key: &[u8; 32]) -> Option<Cached> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(key).cloned()
    }

    pub(super) fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub(super) fn insert(&self, key: [u8; 32], value: Cached, now: OffsetDateTime) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= VERIFIED_CACHE_ENTRIES {
            entries.retain(|_, cached| cached.claims.expires_at > now);
            if entries.len() >= VERIFIED_CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, value);
    }
}
