//! TOTP (RFC 6238) second factor: secret generation, encryption at rest, code checks, and
//! recovery codes.
//!
//! Secrets are 160 random bits (the RFC 4226 recommendation), SHA-1, 6 digits, 30 s steps: what
//! every authenticator app understands. They are stored encrypted with XChaCha20-Poly1305 under
//! a 256-bit key from `<data dir>/mfa.key` (0600, created on first use), the user id as
//! associated data so a ciphertext cannot be moved to another account. Recovery codes are 80
//! random bits shown once; only their SHA-256 is stored.

use std::{fmt, path::Path};

use rand::RngCore as _;
use totp_rs::{Algorithm, Secret, Totp};

use crate::sealing::{SealError, SealingKey};

/// Name of the key file in the data dir.
pub const KEY_FILE: &str = "mfa.key";
/// Number of recovery codes issued at enrollment.
pub const RECOVERY_CODES: usize = 10;
const STEP_SECS: u64 = 30;

/// MFA failures.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// The key file failed, or a stored secret does not decrypt (wrong key file, or moved
    /// between users).
    #[error("MFA key: {0}")]
    Seal(#[from] SealError),
    /// The TOTP parameters were refused (cannot happen with the fixed ones).
    #[error("TOTP setup: {0}")]
    Totp(String),
}

/// A TOTP secret in clear: prints as `[redacted]`.
pub struct TotpSecret([u8; 20]);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([redacted])")
    }
}

impl TotpSecret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 20];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    fn totp(&self, issuer: &str, account: &str) -> Result<Totp, MfaError> {
        totp_rs::Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(6)
            .with_skew(1)
            .with_step_duration(STEP_SECS)
            .with_secret(Secret::new_stack(self.0))
            .with_issuer(Some(issuer.replace(':', "")))
            .with_account_name(account.replace(':', ""))
            .build()
            .map_err(|e| MfaError::Totp(e.to_string()))
    }

    /// Base32 secret and `otpauth://` URI for an authenticator app.
    pub fn provisioning(&self, issuer: &str, account: &str) -> Result<(String, String), MfaError> {
        let totp = self.totp(issuer, account)?;
        let uri = totp.to_url().map_err(|e| MfaError::Totp(e.to_string()))?;
        Ok((totp.secret().to_base32(), uri))
    }

    /// The time step a code is valid for at `unix_secs` (±1 step), if any.
    pub fn check(&self, code: &str, unix_secs: u64) -> Option<i64> {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let totp = self.totp("auth", "user").ok()?;
        totp.check(&code, unix_secs)
            .and_then(|step| i64::try_from(step).ok())
    }

    /// The code of the step containing `unix_secs` (tests and tools).
    pub fn code_at(&self, unix_secs: u64) -> String {
        self.totp("auth", "user")
            .map(|t| t.generate(unix_secs).to_string())
            .unwrap_or_default()
    }

    /// Parses a base32 secret as `BeginTotpEnrollment` returns it (tests and tools).
    pub fn from_base32(text: &str) -> Option<Self> {
        let bytes = Secret::try_from_base32(text).ok()?;
        let bytes: [u8; 20] = bytes.as_bytes().try_into().ok()?;
        Some(Self(bytes))
    }
}

/// Encrypts and decrypts TOTP secrets with the data dir's key.
#[derive(Clone, Debug)]
pub struct MfaCipher {
    key: SealingKey,
}

impl MfaCipher {
    /// Loads `<data dir>/mfa.key`, creating it on first use.
    pub fn load_or_generate(data_dir: &Path) -> Result<Self, MfaError> {
        Ok(Self {
            key: SealingKey::load_or_generate(&data_dir.join(KEY_FILE))?,
        })
    }

    /// base64(nonce || ciphertext) of the secret, bound to `user_id`.
    pub fn encrypt(&self, user_id: &str, secret: &TotpSecret) -> Result<String, MfaError> {
        Ok(self.key.seal(user_id.as_bytes(), &secret.0)?)
    }

    /// The secret of `user_id` from its stored form.
    pub fn decrypt(&self, user_id: &str, stored: &str) -> Result<TotpSecret, MfaError> {
        let plain = self.key.open(user_id.as_bytes(), stored)?;
        let secret: [u8; 20] = plain.try_into().map_err(|_| SealError::Open)?;
        Ok(TotpSecret(secret))
    }
}

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A recovery code: 16 Crockford base32 characters (80 bits) in groups of four.
pub fn generate_recovery_code() -> String {
    let mut bytes = [0u8; 10];
    rand::rng().fill_bytes(&mut bytes);
    let mut bits: u128 = 0;
    for b in bytes {
        bits = (bits << 8) | u128::from(b);
    }
    let mut code = String::with_capacity(19);
    for i in 0..16 {
        if i > 0 && i % 4 == 0 {
            code.push('-');
        }
        let index = usize::try_from((bits >> (75 - 5 * i)) & 31).unwrap_or(0);
        code.push(char::from(CROCKFORD[index]));
    }
    code
}

/// The canonical form of a typed recovery code (case, dashes and spaces ignored), or `None`
/// if it cannot be one.
pub fn normalize_recovery_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (code.len() == 16 && code.bytes().all(|b| CROCKFORD.contains(&b))).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_check_within_one_step_of_skew() {
        let secret = TotpSecret::generate();
        let t = 1_800_000_000u64;
        let code = secret.code_at(t);
        let step = i64::try_from(t / STEP_SECS).unwrap_or(0);
        assert_eq!(secret.check(&code, t), Some(step));
        assert_eq!(secret.check(&code, t + STEP_SECS), Some(step));
        assert_eq!(secret.check(&code, t - STEP_SECS), Some(step));
        assert_eq!(secret.check(&code, t + 2 * STEP_SECS), None);
        assert_eq!(secret.check("12345", t), None);
        assert_eq!(secret.check("abcdef", t), None);
    }

    #[test]
    fn secrets_round_trip_only_for_their_user() {
        let dir = tempfile_dir();
        let cipher = MfaCipher::load_or_generate(&dir).expect("key");
        let secret = TotpSecret::generate();
        let stored = cipher.encrypt("user-a", &secret).expect("encrypt");
        let back = cipher.decrypt("user-a", &stored).expect("decrypt");
        assert_eq!(back.0, secret.0);
        assert!(cipher.decrypt("user-b", &stored).is_err());
        // The same key file is read back by a second process.
        let again = MfaCipher::load_or_generate(&dir).expect("key again");
        assert!(again.decrypt("user-a", &stored).is_ok());
        let (base32, uri) = secret
            .provisioning("auth-server", "a@example.com")
            .expect("uri");
        assert!(uri.starts_with("otpauth://totp/"));
        assert_eq!(
            TotpSecret::from_base32(&base32).map(|s| s.0),
            Some(secret.0)
        );
        assert!(!format!("{secret:?}").contains(&base32));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("mfa-test-{}", uuid::Uuid::new_v4().simple()))
    }

    #[test]
    fn recovery_codes_normalize() {
        let code = generate_recovery_code();
        assert_eq!(code.len(), 19);
        let canonical = normalize_recovery_code(&code).expect("valid");
        assert_eq!(
            normalize_recovery_code(&code.to_uppercase()),
            Some(canonical.clone())
        );
        assert_eq!(normalize_recovery_code(&canonical), Some(canonical));
        assert_eq!(normalize_recovery_code("short"), None);
        assert_ne!(generate_recovery_code(), generate_recovery_code());
    }
}
