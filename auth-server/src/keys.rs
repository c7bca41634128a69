//! Signing key management: keys live in the database (private halves sealed under the
//! key-encryption key, `<data dir>/kek.key` or `AUTH_KEY_FILE`), so every replica signs and
//! verifies with the same set and picks a rotation up on its next reload.
//!
//! `rotate` adds a key that starts signing after a propagation delay (default 60 s, longer
//! than the replicas' reload interval): every replica already verifies it by the time any
//! replica signs with it. The replaced key keeps verifying one access token lifetime longer, so
//! nobody is logged out. `retire` removes a key at once (a leaked key): its tokens fail.

use std::{path::Path, sync::Arc, time::Duration};

use time::OffsetDateTime;

use crate::{
    clock,
    sealing::SealingKey,
    storage::{self, Store, keys::KeyRow},
    tokens::{KeyError, KeySet, SigningKey, StoredKey, TokenIssuer},
};

/// Default name of the key-encryption key file in the data dir.
pub const KEK_FILE: &str = "kek.key";

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Verifies; starts signing at `signing_from`.
    Pending,
    /// Signs new tokens.
    Signing,
    /// Replaced; verifies until `verify_until`.
    Verifying,
    /// Replaced long enough ago that none of its tokens can be valid.
    Expired,
    /// Retired: verifies nothing.
    Retired,
}

impl KeyState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "pending",
            KeyState::Signing => "signing",
            KeyState::Verifying => "verifying",
            KeyState::Expired => "expired",
            KeyState::Retired => "retired",
        }
    }
}

/// A key as `keys list` shows it.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// Key id.
    pub kid: String,
    /// State now.
    pub state: KeyState,
    /// Creation.
    pub created_at: OffsetDateTime,
    /// Signing start.
    pub signing_from: OffsetDateTime,
    /// End of verification, once replaced.
    pub verify_until: Option<OffsetDateTime>,
    /// Retirement.
    pub retired_at: Option<OffsetDateTime>,
}

/// A stored instant; a value out of range can only be a corrupt row.
fn time_of(ms: i64) -> Result<OffsetDateTime, KeyError> {
    clock::from_millis(ms).ok_or_else(|| {
        KeyError::Storage(crate::storage::StorageError::Corrupt(format!(
            "signing key time {ms} is out of range"
        )))
    })
}

/// Reads, creates, rotates and retires signing keys.
#[derive(Clone, Debug)]
pub struct KeyManager {
    store: Store,
    kek: SealingKey,
    access_ttl: Duration,
}

impl KeyManager {
    /// Keys in `store`, sealed with the key-encryption key at `kek_path`.
    pub fn new(store: Store, kek_path: &Path, access_ttl: Duration) -> Result<Self, KeyError> {
        let kek = SealingKey::load_or_generate(kek_path).map_err(KeyError::Kek)?;
        Ok(Self {
            store,
            kek,
            access_ttl,
        })
    }

    fn row(&self, key: &SigningKey, signing_from: i64) -> Result<KeyRow, KeyError> {
        let secret = self
            .kek
            .seal(key.kid().as_bytes(), key.secret_paserk()?.as_bytes())
            .map_err(KeyError::Kek)?;
        Ok(KeyRow {
            kid: key.kid().to_owned(),
            public_paserk: key.public_paserk(),
            secret_sealed: secret,
            created_at: clock::now_millis(),
            signing_from,
            retired_at: None,
        })
    }

    /// On first start (no key stored yet) imports the file-based keys of `data_dir` so tokens
    /// they signed keep verifying, or generates the first key.
    pub async fn ensure_keys(&self, data_dir: &Path) -> Result<(), KeyError> {
        let rows = storage::keys::find_keys(self.store.conn()).await?;
        if !rows.is_empty() {
            return Ok(());
        }
        let legacy = KeySet::legacy_files(data_dir)?;
        let now = clock::now_millis();
        if legacy.is_empty() {
            let key = SigningKey::generate()?;
            storage::keys::create_key(self.store.conn(), self.row(&key, now)?).await?;
            tracing::info!(kid = %key.kid(), "generated the first signing key");
            return Ok(());
        }
        // The last file by name signed before; keep that order.
        let count = i64::try_from(legacy.len()).unwrap_or(i64::MAX);
        for (i, key) in legacy.iter().enumerate() {
            let start = now - count + i64::try_from(i).unwrap_or(0) + 1;
            storage::keys::create_key(self.store.conn(), self.row(key, start)?).await?;
            tracing::info!(kid = %key.kid(), "imported a signing key from the data dir");
        }
        Ok(())
    }

    /// The verifying set now.
    pub async fn load(&self) -> Result<KeySet, KeyError> {
        let rows = storage::keys::find_keys(self.store.conn()).await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows.into_iter().filter(|r| r.retired_at.is_none()) {
            let paserk = self
                .kek
                .open(row.kid.as_bytes(), &row.secret_sealed)
                .map_err(|source| KeyError::Sealed {
                    kid: row.kid.clone(),
                    source,
                })?;
            let paserk = String::from_utf8(paserk).map_err(|_| KeyError::Generate)?;
            let key = SigningKey::from_secret_paserk(&paserk)?;
            if key.kid() != row.kid {
                return Err(KeyError::Refused(format!(
                    "stored key {} does not match its id",
                    row.kid
                )));
            }
            keys.push(StoredKey {
                key,
                signing_from: time_of(row.signing_from)?,
            });
        }
        KeySet::from_stored(keys, clock::now(), self.access_ttl)
    }

    /// Every key with its state.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let rows = storage::keys::find_keys(self.store.conn()).await?;
        let now = clock::now();
        let now_ms = clock::millis(now);
        let live: Vec<&KeyRow> = rows.iter().filter(|r| r.retired_at.is_none()).collect();
        let starts = live
            .iter()
            .map(|r| time_of(r.signing_from))
            .collect::<Result<Vec<_>, _>>()?;
        let signer = live
            .iter()
            .filter(|r| r.signing_from <= now_ms)
            .max_by_key(|r| r.signing_from)
            .map(|r| r.kid.clone());
        rows.iter()
            .map(|row| {
                let signing_from = time_of(row.signing_from)?;
                let verify_until =
                    crate::tokens::verify_until(signing_from, &starts, now, self.access_ttl);
                let state = if row.retired_at.is_some() {
                    KeyState::Retired
                } else if signing_from > now {
                    KeyState::Pending
                } else if signer.as_deref() == Some(row.kid.as_str()) {
                    KeyState::Signing
                } else if verify_until.is_some_and(|u| u <= now) {
                    KeyState::Expired
                } else {
                    KeyState::Verifying
                };
                Ok(KeyInfo {
                    kid: row.kid.clone(),
                    state,
                    created_at: time_of(row.created_at)?,
                    signing_from,
                    verify_until: verify_until.filter(|_| row.retired_at.is_none()),
                    retired_at: row.retired_at.map(time_of).transpose()?,
                })
            })
            .collect()
    }

    /// Adds a key that starts signing after `activate_in`.
    pub async fn rotate(&self, activate_in: Duration) -> Result<KeyInfo, KeyError> {
        let key = SigningKey::generate()?;
        let start = clock::millis(clock::now() + activate_in);
        storage::keys::create_key(self.store.conn(), self.row(&key, start)?).await?;
        tracing::info!(kid = %key.kid(), activate_in_secs = activate_in.as_secs(), "signing key rotated");
        self.info(key.kid()).await
    }

    /// Retires a key: it verifies nothing from the next reload on. The key signing now cannot
    /// be retired (rotate first, with `--activate-in-secs 0` in an emergency).
    pub async fn retire(&self, kid: &str) -> Result<KeyInfo, KeyError> {
        let info = self.info(kid).await?;
        match info.state {
            KeyState::Retired => return Ok(info),
            KeyState::Signing => {
                return Err(KeyError::Refused(format!(
                    "{kid} signs new tokens; rotate first (keys rotate --activate-in-secs 0), then retire it"
                )));
            }
            _ => {}
        }
        storage::keys::retire_key(self.store.conn(), kid, clock::now_millis()).await?;
        tracing::warn!(kid, "signing key retired; its tokens no longer verify");
        self.info(kid).await
    }

    async fn info(&self, kid: &str) -> Result<KeyInfo, KeyError> {
        self.list()
            .await?
            .into_iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| KeyError::Unknown(kid.to_owned()))
    }
}

/// Reloads the key set every `interval` and swaps it into `tokens` when it changed (a rotation,
/// a retirement, or a key that expired).
/// Runs until dropped; the caller spawns it.
pub async fn refresh_keys(keys: KeyManager, tokens: Arc<TokenIssuer>, interval: Duration) {
    {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            match keys.load().await {
                Ok(set) => {
                    let signer = set.signer().kid().to_owned();
                    if tokens.replace_keys(set) {
                        tracing::info!(signer = %signer, "signing keys reloaded");
                    }
                }
                Err(error) => {
                    tracing::warn!(error.message = %error, error.cause_chain = ?error, "could not reload signing keys; keeping the current set")
                }
            }
        }
    }
}
