//! Sealing secrets at rest (TOTP secrets, signing keys) with XChaCha20-Poly1305 under a 256-bit
//! key from a file (0600, created on first use, base64). Each sealed value is
//! base64(nonce || ciphertext) and bound to associated data (a user id, a key id), so it cannot
//! be moved to another row.

use std::{fmt, path::Path};

use base64::Engine as _;
use chacha20poly1305::{
    KeyInit as _, XChaCha20Poly1305, XNonce,
    aead::{Aead as _, Payload},
};
use rand::RngCore as _;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;
const NONCE: usize = 24;

/// Sealing failures.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file could not be read or created.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold a base64 32-byte key.
    #[error("key file {0} is not a base64 32-byte key")]
    BadKey(std::path::PathBuf),
    /// A sealed value does not open (another key file, or moved between rows).
    #[error("sealed value does not open with this key")]
    Open,
}

/// A key that seals and opens values.
#[derive(Clone)]
pub struct SealingKey {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey([redacted])")
    }
}

impl SealingKey {
    /// Loads the key at `path`, creating it (and its directory, 0700) on first use. Replicas
    /// sharing the directory agree on one key even when they start together.
    pub fn load_or_generate(path: &Path) -> Result<Self, SealError> {
        let io = |source| SealError::KeyFile {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::keyfile::create_private_dir(dir).map_err(io)?;
        }
        if !path.exists() {
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            if crate::keyfile::publish_once(path, B64.encode(key).as_bytes()).map_err(io)? {
                tracing::info!(path = %path.display(), "generated a sealing key");
            }
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let key = B64
            .decode(text.trim())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| SealError::BadKey(path.to_owned()))?;
        let cipher = XChaCha20Poly1305::new_from_slice(&key)
            .map_err(|_| SealError::BadKey(path.to_owned()))?;
        Ok(Self { cipher })
    }

    /// Seals `plain`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| SealError::Open)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(B64.encode(out))
    }

    /// Opens a value sealed with `aad`.
    pub fn open(&self, aad: &[u8], sealed: &str) -> Result<Vec<u8>, SealError> {
        let bytes = B64.decode(sealed).map_err(|_| SealError::Open)?;
        if bytes.len() < NONCE {
            return Err(SealError::Open);
        }
        let (nonce, sealed) = bytes.split_at(NONCE);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_aad() {
        let dir = std::env::temp_dir().join(format!("seal-{}", uuid::Uuid::new_v4().simple()));
        let path = dir.join("k.key");
        let key = SealingKey::load_or_generate(&path).expect("key");
        let sealed = key.seal(b"row-a", b"secret bytes").expect("seal");
        assert_eq!(key.open(b"row-a", &sealed).expect("open"), b"secret bytes");
        assert!(key.open(b"row-b", &sealed).is_err());
        let again = SealingKey::load_or_generate(&path).expect("same file");
        assert!(again.open(b"row-a", &sealed).is_ok());
        let other = SealingKey::load_or_generate(&dir.join("other.key")).expect("other");
        assert!(other.open(b"row-a", &sealed).is_err());
        assert!(!format!("{key:?}").contains("secret"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
