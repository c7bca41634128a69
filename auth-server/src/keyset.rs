//! The signing key set: Ed25519 key pairs with their PASERK ids and signing starts, which key
//! signs now, and how long a replaced key keeps verifying. Tokens are [`crate::tokens`]; where
//! keys are stored and rotated is [`crate::keys`].

use std::{
    collections::HashMap,
    fmt, fs,
    path::{Path, PathBuf},
    time::Duration,
};

use pasetors::{
    keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate},
    paserk::{FormatAsPaserk, Id},
    version4::V4,
};
use time::OffsetDateTime;

use crate::clock::LEEWAY;

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
    /// A stored private key does not open with the key-encryption key.
    #[error("signing key {kid} does not open with the key-encryption key ({source})")]
    Sealed {
        /// The key.
        kid: String,
        /// The cause.
        #[source]
        source: crate::sealing::SealError,
    },
    /// The key-encryption key file failed.
    #[error("key-encryption key: {0}")]
    Kek(#[source] crate::sealing::SealError),
    /// The key database failed.
    #[error("signing key storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    /// No key with this id.
    #[error("no signing key {0}")]
    Unknown(String),
    /// The request would leave no key to sign with.
    #[error("{0}")]
    Refused(String),
}

/// One Ed25519 key pair with its PASERK id.
pub struct SigningKey {
    kid: String,
    pub(crate) secret: AsymmetricSecretKey<V4>,
    pub(crate) public: AsymmetricPublicKey<V4>,
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
    pub(crate) fn from_secret(secret: AsymmetricSecretKey<V4>) -> Result<Self, KeyError> {
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

    /// A key from its PASERK `k4.secret.…`.
    pub fn from_secret_paserk(paserk: &str) -> Result<Self, KeyError> {
        let secret = AsymmetricSecretKey::<V4>::try_from(paserk.trim())
            .map_err(|_| KeyError::Parse(PathBuf::from("<stored key>")))?;
        Self::from_secret(secret)
    }

    /// The private key as PASERK `k4.secret.…` (to seal; never to log).
    pub fn secret_paserk(&self) -> Result<String, KeyError> {
        let mut out = String::new();
        self.secret.fmt(&mut out).map_err(|_| KeyError::Generate)?;
        Ok(out)
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

/// A key of a [`KeySet`] with its window.
#[derive(Debug)]
pub struct KeyEntry {
    pub(crate) key: SigningKey,
    signing_from: OffsetDateTime,
    verify_until: Option<OffsetDateTime>,
}

impl KeyEntry {
    /// Key id.
    pub fn kid(&self) -> &str {
        &self.key.kid
    }

    /// Public PASERK.
    pub fn public_paserk(&self) -> String {
        self.key.public_paserk()
    }

    /// When it starts (or started) signing.
    pub fn signing_from(&self) -> OffsetDateTime {
        self.signing_from
    }

    /// When it stops verifying (`None`: while it signs, and one access token lifetime after).
    pub fn verify_until(&self) -> Option<OffsetDateTime> {
        self.verify_until
    }
}

/// When a key that began signing at `start` stops verifying, given every live key's start: one
/// access token lifetime plus leeway after the next key that has begun took over (`None` while
/// no later key has begun).
pub fn verify_until(
    start: OffsetDateTime,
    starts: &[OffsetDateTime],
    now: OffsetDateTime,
    access_ttl: Duration,
) -> Option<OffsetDateTime> {
    starts
        .iter()
        .copied()
        .filter(|&s| s > start && s <= now)
        .min()
        .map(|replaced_at| replaced_at + access_ttl + LEEWAY)
}

/// A key with its signing start, as loaded from storage.
#[derive(Debug)]
pub struct StoredKey {
    /// The key.
    pub key: SigningKey,
    /// When it starts signing.
    pub signing_from: OffsetDateTime,
}

/// The signing key and every verification key.
#[derive(Debug)]
pub struct KeySet {
    /// By signing start, oldest first.
    entries: Vec<KeyEntry>,
    pub(crate) by_kid: HashMap<String, usize>,
}

impl KeySet {
    /// A set of the given keys, all valid now; the last one signs (tests, benchmarks).
    pub fn new(keys: Vec<SigningKey>) -> Result<Self, KeyError> {
        let start = OffsetDateTime::UNIX_EPOCH;
        Self::from_entries(
            keys.into_iter()
                .map(|key| KeyEntry {
                    key,
                    signing_from: start,
                    verify_until: None,
                })
                .collect(),
        )
    }

    fn from_entries(entries: Vec<KeyEntry>) -> Result<Self, KeyError> {
        if entries.is_empty() {
            return Err(KeyError::Refused("no signing key".into()));
        }
        let by_kid = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key.kid.clone(), i))
            .collect();
        Ok(Self { entries, by_kid })
    }

    /// The verifying set at `now` from stored (unretired) keys: a key stops verifying one
    /// access token lifetime plus leeway after the next key began signing; such expired keys
    /// are left out.
    pub fn from_stored(
        mut keys: Vec<StoredKey>,
        now: OffsetDateTime,
        access_ttl: Duration,
    ) -> Result<Self, KeyError> {
        keys.sort_by_key(|k| k.signing_from);
        let starts: Vec<OffsetDateTime> = keys.iter().map(|k| k.signing_from).collect();
        let mut entries = Vec::with_capacity(keys.len());
        for stored in keys {
            let verify_until = verify_until(stored.signing_from, &starts, now, access_ttl);
            if verify_until.is_some_and(|until| until <= now) {
                continue;
            }
            entries.push(KeyEntry {
                key: stored.key,
                signing_from: stored.signing_from,
                verify_until,
            });
        }
        Self::from_entries(entries)
    }

    /// Private key files of the file-based layout (`<data dir>/keys/*.paserk`, before keys
    /// moved to the database), by name: imported once on first start.
    pub fn legacy_files(data_dir: &Path) -> Result<Vec<SigningKey>, KeyError> {
        let dir = data_dir.join("keys");
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
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
        let mut keys = Vec::with_capacity(files.len());
        for path in files {
            let text = fs::read_to_string(&path).map_err(io(&path))?;
            let secret = AsymmetricSecretKey::<V4>::try_from(text.trim())
                .map_err(|_| KeyError::Parse(path.clone()))?;
            keys.push(SigningKey::from_secret(secret)?);
        }
        Ok(keys)
    }

    /// The key that signs at `now`: the latest signing start that has begun.
    pub fn signer_at(&self, now: OffsetDateTime) -> &KeyEntry {
        self.entries
            .iter()
            .filter(|e| e.signing_from <= now)
            .max_by_key(|e| e.signing_from)
            // Only keys that have not begun (a clock far behind): the earliest of them.
            .unwrap_or(&self.entries[0])
    }

    /// The key that signs now.
    pub fn signer(&self) -> &KeyEntry {
        self.signer_at(crate::clock::now())
    }

    /// Every verifying key, latest signing start first.
    pub fn keys(&self) -> impl Iterator<Item = &KeyEntry> {
        self.entries.iter().rev()
    }

    pub(crate) fn find(&self, kid: &str) -> Option<&KeyEntry> {
        self.by_kid.get(kid).map(|&i| &self.entries[i])
    }

    pub(crate) fn same_keys(&self, other: &KeySet) -> bool {
        self.entries.len() == other.entries.len()
            && self.entries.iter().zip(&other.entries).all(|(a, b)| {
                a.key.kid == b.key.kid
                    && a.signing_from == b.signing_from
                    && a.verify_until == b.verify_until
            })
    }
}
