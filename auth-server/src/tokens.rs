//! Access tokens: PASETO `v4.public` (Ed25519) signed with the current key of a [`KeySet`],
//! verified against any key of the set, so a key can rotate without logging anyone out.
//!
//! Keys live in `<data dir>/keys/*.paserk` (PASERK `k4.secret.`, file mode 0600). On first start
//! `signing-0001.paserk` is generated; every file verifies, the last by name signs (so a
//! rotation adds e.g. `signing-0002.paserk`). Claims: `sub`, `sid`, `roles`,
//! `iss`, `iat`, `nbf`, `exp`, `jti`; the footer carries `kid` (the PASERK `k4.pid.` id).

use std::{
    collections::HashMap,
    fmt, fs,
    path::{Path, PathBuf},
    time::Duration,
};

use pasetors::{
    Public,
    keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate},
    paserk::{FormatAsPaserk, Id},
    token::UntrustedToken,
    version4::{PublicToken, V4},
};
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Longest token accepted for parsing; longer input is refused without work.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Name of the key generated on first start; later keys sort after it.
const FIRST_KEY_FILE: &str = "signing-0001.paserk";
/// Clock skew tolerated on `nbf`/`iat`.
const LEEWAY: Duration = Duration::from_secs(30);

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
        }
    }
}

/// Key loading and generation failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key directory failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key file does not hold a `k4.secret.` PASERK.
    #[error("key file {0} does not hold a k4.secret PASERK")]
    Parse(PathBuf),
    /// Key generation or encoding failed.
    #[error("key generation failed")]
    Generate,
}

/// One Ed25519 key pair with its PASERK id.
pub struct SigningKey {
    kid: String,
    secret: AsymmetricSecretKey<V4>,
    public: AsymmetricPublicKey<V4>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl SigningKey {
    fn from_secret(secret: AsymmetricSecretKey<V4>) -> Result<Self, KeyError> {
        let public =
            AsymmetricPublicKey::<V4>::try_from(&secret).map_err(|_| KeyError::Generate)?;
        let mut kid = String::new();
        Id::from(&public)
            .fmt(&mut kid)
            .map_err(|_| KeyError::Generate)?;
        Ok(Self {
            kid,
            secret,
            public,
        })
    }

    /// Generates a fresh key pair.
    pub fn generate() -> Result<Self, KeyError> {
        let pair = AsymmetricKeyPair::<V4>::generate().map_err(|_| KeyError::Generate)?;
        Self::from_secret(pair.secret)
    }

    /// Key id (`k4.pid.…`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Public key as PASERK `k4.public.…`.
    pub fn public_paserk(&self) -> String {
        let mut out = String::new();
        // Formatting into a String cannot fail.
        let _ = self.public.fmt(&mut out);
        out
    }
}

/// The signing key and every verification key.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<SigningKey>,
    by_kid: HashMap<String, usize>,
}

impl KeySet {
    /// A set of the given keys; the last one signs.
    pub fn new(keys: Vec<SigningKey>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Generate);
        }
        let by_kid = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.kid.clone(), i))
            .collect();
        Ok(Self { keys, by_kid })
    }

    /// Loads `<dir>/keys/*.paserk`, generating the first key if there is none.
    pub fn load_or_generate(data_dir: &Path) -> Result<Self, KeyError> {
        let dir = data_dir.join("keys");
        create_private_dir(&dir)?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| KeyError::Io { path, source }
        };
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "paserk"))
            .collect();
        files.sort();
        if files.is_empty() {
            // Replicas sharing a data dir may start together: the first key has a fixed name and
            // is published with an atomic hard link, so exactly one generated key wins and every
            // process loads that one.
            let key = SigningKey::generate()?;
            let mut paserk = String::new();
            key.secret
                .fmt(&mut paserk)
                .map_err(|_| KeyError::Generate)?;
            let path = dir.join(FIRST_KEY_FILE);
            match crate::keyfile::publish_once(&path, paserk.as_bytes()) {
                Ok(true) => {
                    tracing::info!(kid = %key.kid, path = %path.display(), "generated a new signing key");
                    return Self::new(vec![key]);
                }
                Ok(false) => files.push(path),
                Err(source) => return Err(KeyError::Io { path, source }),
            }
        }
        let mut keys = Vec::with_capacity(files.len());
        for path in files {
            let text = fs::read_to_string(&path).map_err(io(&path))?;
            let secret = AsymmetricSecretKey::<V4>::try_from(text.trim())
                .map_err(|_| KeyError::Parse(path.clone()))?;
            keys.push(SigningKey::from_secret(secret)?);
        }
        Self::new(keys)
    }

    /// The key new tokens are signed with.
    pub fn signer(&self) -> &SigningKey {
        // `new` refuses an empty set.
        &self.keys[self.keys.len() - 1]
    }

    /// Every key, signer first.
    pub fn keys(&self) -> impl Iterator<Item = &SigningKey> {
        self.keys.iter().rev()
    }

    fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.by_kid.get(kid).map(|&i| &self.keys[i])
    }
}

fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    crate::keyfile::create_private_dir(dir).map_err(|source| KeyError::Io {
        path: dir.to_owned(),
        source,
    })
}

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
}

#[derive(Serialize, Deserialize)]
struct WireClaims {
    iss: String,
    sub: String,
    sid: String,
    roles: Vec<String>,
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
    keys: KeySet,
    issuer: String,
    ttl: Duration,
    verified: VerifiedCache,
}

/// Entries of the verified-token cache at most; about 150 bytes each.
const VERIFIED_CACHE_ENTRIES: usize = 16_384;

/// Tokens whose signature and claims already verified, keyed by the SHA-256 of the token, so a
/// token presented on every request costs one Ed25519 verification, not one per call. Time
/// checks (`exp`, `nbf`) still run on every hit; revocation is checked by the caller as always.
/// Bounded: when full, expired entries go first, then everything.
#[derive(Debug, Default)]
struct VerifiedCache {
    entries: std::sync::RwLock<HashMap<[u8; 32], Cached>>,
}

#[derive(Debug, Clone)]
struct Cached {
    claims: AccessClaims,
    not_before: OffsetDateTime,
}

impl VerifiedCache {
    fn key(token: &str) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    fn get(&self, key: &[u8; 32]) -> Option<Cached> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(key).cloned()
    }

    fn insert(&self, key: [u8; 32], value: Cached, now: OffsetDateTime) {
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

fn rfc3339(t: OffsetDateTime) -> Result<String, TokenError> {
    t.format(&Rfc3339).map_err(|_| TokenError::Malformed)
}

impl TokenIssuer {
    /// A new issuer.
    pub fn new(keys: KeySet, issuer: String, ttl: Duration) -> Self {
        Self {
            keys,
            issuer,
            ttl,
            verified: VerifiedCache::default(),
        }
    }

    /// The key set.
    pub fn keys(&self) -> &KeySet {
        &self.keys
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
    ) -> Result<IssuedToken, TokenError> {
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .map_err(|_| TokenError::Malformed)?;
        let expires_at = now + self.ttl;
        let token_id = uuid::Uuid::now_v7().to_string();
        let claims = WireClaims {
            iss: self.issuer.clone(),
            sub: user_id.to_owned(),
            sid: session_id.to_owned(),
            roles: roles.to_vec(),
            iat: rfc3339(now)?,
            nbf: rfc3339(now)?,
            exp: rfc3339(expires_at)?,
            jti: token_id.clone(),
        };
        let signer = self.keys.signer();
        let payload = serde_json::to_vec(&claims).map_err(|_| TokenError::Malformed)?;
        let footer = serde_json::to_vec(&WireFooter {
            kid: signer.kid.clone(),
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
        self.verify_at(token, OffsetDateTime::now_utc())
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
        let key = self.keys.find(&footer.kid).ok_or(TokenError::UnknownKey)?;
        let trusted = PublicToken::verify(&key.public, &untrusted, None, None)
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
mod tests {
    use super::*;

    fn issuer(keys: Vec<SigningKey>) -> TokenIssuer {
        TokenIssuer::new(
            KeySet::new(keys).expect("non-empty"),
            "test".into(),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn issued_token_verifies_and_carries_claims() {
        let tokens = issuer(vec![SigningKey::generate().expect("key")]);
        let issued = tokens.issue("u1", "s1", &["admin".into()]).expect("issue");
        let claims = tokens.verify(&issued.token).expect("valid");
        assert_eq!(claims.user_id, "u1");
        assert_eq!(claims.session_id, "s1");
        assert_eq!(claims.roles, vec!["admin".to_owned()]);
        assert_eq!(claims.token_id, issued.token_id);
        assert!(!format!("{issued:?}").contains(&issued.token));
    }

    #[test]
    fn expired_tampered_and_foreign_tokens_are_refused() {
        let tokens = issuer(vec![SigningKey::generate().expect("key")]);
        let issued = tokens.issue("u1", "s1", &[]).expect("issue");
        let later = OffsetDateTime::now_utc() + Duration::from_secs(61);
        assert_eq!(
            tokens.verify_at(&issued.token, later),
            Err(TokenError::Expired)
        );

        let mut tampered = issued.token.clone().into_bytes();
        let i = PublicToken::HEADER.len() + 10;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert!(matches!(
            tokens.verify(&tampered),
            Err(TokenError::BadSignature | TokenError::Malformed)
        ));

        let other = issuer(vec![SigningKey::generate().expect("key")]);
        assert_eq!(other.verify(&issued.token), Err(TokenError::UnknownKey));
        assert_eq!(tokens.verify("garbage"), Err(TokenError::Malformed));
        assert_eq!(tokens.verify(""), Err(TokenError::Missing));
    }

    #[test]
    fn tokens_of_an_older_key_still_verify_after_rotation() {
        let old = SigningKey::generate().expect("key");
        let old_secret = AsymmetricSecretKey::<V4>::from(old.secret.as_bytes()).expect("copy");
        let before = issuer(vec![old]);
        let token = before.issue("u1", "s1", &[]).expect("issue").token;
        let rotated = issuer(vec![
            SigningKey::from_secret(old_secret).expect("key"),
            SigningKey::generate().expect("key"),
        ]);
        assert!(rotated.verify(&token).is_ok());
        let fresh = rotated.issue("u1", "s1", &[]).expect("issue").token;
        assert!(rotated.verify(&fresh).is_ok());
        assert_ne!(rotated.keys().signer().kid(), before.keys().signer().kid());
    }
}
