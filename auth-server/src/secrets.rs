//! Opaque bearer secrets (refresh, reset, invite and MFA tokens): 256 random bits,
//! base64url without padding; only their SHA-256 is ever stored, and `Debug` never prints them.

use std::fmt;

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// 256 random bits, base64url without padding: 43 characters.
pub const OPAQUE_TOKEN_CHARS: usize = 43;

/// An opaque token: prints as `[redacted]`.
pub struct OpaqueToken(String);

impl OpaqueToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The token, to hand to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Hex SHA-256, the only form stored.
    pub fn hash(&self) -> String {
        sha256_hex(&self.0)
    }
}

impl fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpaqueToken([redacted])")
    }
}

/// Hex SHA-256 of a secret.
pub fn sha256_hex(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        use fmt::Write as _;
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// The trimmed token if it has the shape of an [`OpaqueToken`], so garbage never reaches the
/// database.
pub fn well_formed(presented: &str) -> Option<&str> {
    let presented = presented.trim();
    let ok = presented.len() == OPAQUE_TOKEN_CHARS
        && presented
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(presented)
}

/// A database URL with its password (if any) replaced by `[redacted]`, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:[redacted]@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_chars_well_formed_and_print_redacted() {
        let token = OpaqueToken::generate();
        assert_eq!(token.expose().len(), OPAQUE_TOKEN_CHARS);
        assert_eq!(well_formed(token.expose()), Some(token.expose()));
        assert!(!format!("{token:?}").contains(token.expose()));
        assert_eq!(token.hash().len(), 64);
        assert_eq!(well_formed("short"), None);
        assert_eq!(well_formed(&"a".repeat(42).replace('a', "+")), None);
    }
}
