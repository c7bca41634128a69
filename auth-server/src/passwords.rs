//! Password hashing (argon2id) on a bounded pool, and the password and email rules.
//!
//! Hashing is CPU- and memory-heavy on purpose, so it never runs on the async runtime: the
//! [`HashPool`] admits at most `threads + queue` jobs, runs at most `threads` at once on
//! blocking threads, and refuses the rest at once with [`HashError::QueueFull`]. A storm of
//! logins therefore costs bounded memory and leaves the runtime free for `Validate`.

use std::{fmt, sync::Arc};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash as PhcHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::SaltString,
};
use rand::RngCore;
use tokio::sync::Semaphore;

use crate::config::HashingSettings;

/// Longest accepted password, in bytes; longer input is refused before any hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest accepted email, in bytes (RFC 5321 path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// A password held in memory: prints as `[redacted]`.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: String) -> Self {
        Self(password)
    }

    /// The password's bytes, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A PHC-format argon2 hash: prints as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(pub String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

/// Hashing failures other than a wrong password.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every thread is busy and the wait queue is full.
    #[error("password hashing queue is full")]
    QueueFull,
    /// The argon2 parameters or a stored hash are malformed.
    #[error("argon2 failure: {0}")]
    Argon2(String),
    /// The blocking task died.
    #[error("hashing task failed")]
    Join(#[source] tokio::task::JoinError),
}

/// Bounded argon2id worker pool.
#[derive(Clone)]
pub struct HashPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    argon2: Argon2<'static>,
    /// Admission: `threads + queue` permits; failing to get one means "queue full".
    admitted: Arc<Semaphore>,
    /// Execution: `threads` permits.
    running: Arc<Semaphore>,
    threads: usize,
    /// `threads + queue`.
    capacity: usize,
    /// Hash of a random password with the configured parameters, verified for unknown users so
    /// they cost exactly what a known user costs.
    dummy: PasswordHash,
}

impl fmt::Debug for HashPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashPool")
            .field("threads", &self.inner.threads)
            .field("available", &self.inner.admitted.available_permits())
            .finish()
    }
}

fn argon2(settings: &HashingSettings) -> Result<Argon2<'static>, HashError> {
    let params = Params::new(
        settings.memory_kib,
        settings.iterations,
        settings.parallelism,
        None,
    )
    .map_err(|e| HashError::Argon2(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_with(argon2: &Argon2<'_>, password: &str) -> Result<PasswordHash, HashError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Argon2(e.to_string()))?;
    let hash = argon2
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| HashError::Argon2(e.to_string()))?;
    Ok(PasswordHash(hash.to_string()))
}

fn verify_with(
    argon2: &Argon2<'_>,
    password: &str,
    hash: &PasswordHash,
) -> Result<bool, HashError> {
    let parsed = PhcHash::new(&hash.0).map_err(|e| HashError::Argon2(e.to_string()))?;
    // Verification takes its parameters from the stored hash; the comparison of the digests
    // inside `verify_password` is constant-time.
    match argon2.verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(HashError::Argon2(e.to_string())),
    }
}

impl HashPool {
    /// Builds the pool; computes the dummy hash once (one hash of start-up time).
    pub fn new(
        settings: &HashingSettings,
        threads: usize,
        queue: usize,
    ) -> Result<Self, HashError> {
        let argon2 = argon2(settings)?;
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        let dummy = hash_with(&argon2, &base64_of(&random))?;
        let threads = threads.max(1);
        Ok(Self {
            inner: Arc::new(PoolInner {
                argon2,
                admitted: Arc::new(Semaphore::new(threads + queue)),
                running: Arc::new(Semaphore::new(threads)),
                threads,
                capacity: threads + queue,
                dummy,
            }),
        })
    }

    /// Number of hashing threads.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Jobs admitted and not finished (running + waiting).
    pub fn in_flight(&self) -> usize {
        self.inner
            .capacity
            .saturating_sub(self.inner.admitted.available_permits())
    }

    async fn run<T, F>(&self, job: F) -> Result<T, HashError>
    where
        T: Send + 'static,
        F: FnOnce(&Argon2<'static>) -> Result<T, HashError> + Send + 'static,
    {
        let admitted = Arc::clone(&self.inner.admitted)
            .try_acquire_owned()
            .map_err(|_| HashError::QueueFull)?;
        let running = Arc::clone(&self.inner.running)
            .acquire_owned()
            .await
            .map_err(|_| HashError::QueueFull)?;
        let inner = Arc::clone(&self.inner);
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let _permits = (admitted, running);
            job(&inner.argon2)
        })
        .await
        .map_err(HashError::Join)?
    }

    /// Hashes a new password.
    #[tracing::instrument(name = "password.hash", skip_all)]
    pub async fn hash(&self, password: Password) -> Result<PasswordHash, HashError> {
        self.run(move |argon2| hash_with(argon2, password.expose()))
            .await
    }

    /// Verifies a password against a stored hash; with `None` (unknown user) verifies against
    /// the dummy hash and answers `false`, at the same cost.
    #[tracing::instrument(name = "password.verify", skip_all)]
    pub async fn verify(
        &self,
        password: Password,
        hash: Option<PasswordHash>,
    ) -> Result<bool, HashError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.inner.dummy.clone());
        let matched = self
            .run(move |argon2| verify_with(argon2, password.expose(), &hash))
            .await?;
        Ok(known && matched)
    }

    /// Hashes synchronously on the calling thread (for the CLI, outside any runtime pool).
    pub fn hash_blocking(&self, password: &Password) -> Result<PasswordHash, HashError> {
        hash_with(&self.inner.argon2, password.expose())
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Why an email or password is refused; the message is shown to the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// Email missing, too long, or not shaped like an address.
    #[error("{0}")]
    Email(&'static str),
    /// Password too short, too long or equal to the email.
    #[error("{0}")]
    Password(String),
}

/// Trims and lower-cases an email and checks that it looks like an address.
pub fn normalize_email(raw: &str) -> Result<String, PolicyError> {
    let email = raw.trim();
    if email.is_empty() {
        return Err(PolicyError::Email("email is required"));
    }
    if email.len() > MAX_EMAIL_BYTES {
        return Err(PolicyError::Email("email is longer than 254 bytes"));
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err(PolicyError::Email("email must look like name@example.com"));
    };
    let valid_local = !local.is_empty() && local.len() <= 64 && !local.contains('@');
    let valid_domain = domain.len() >= 3
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    let printable = email.chars().all(|c| !c.is_whitespace() && !c.is_control());
    if !(valid_local && valid_domain && printable) {
        return Err(PolicyError::Email("email must look like name@example.com"));
    }
    Ok(email.to_lowercase())
}

/// Checks a password's size only (for presented passwords, before any hashing).
pub fn check_password_size(password: &str) -> Result<(), PolicyError> {
    if password.is_empty() {
        return Err(PolicyError::Password("password is required".into()));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PolicyError::Password(format!(
            "password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Checks a new password against the rules (NIST 800-63B: length only, no composition rules,
/// not the email itself).
pub fn check_new_password(
    password: &str,
    email: &str,
    min_chars: usize,
) -> Result<(), PolicyError> {
    check_password_size(password)?;
    if password.chars().count() < min_chars {
        return Err(PolicyError::Password(format!(
            "password must be at least {min_chars} characters"
        )));
    }
    if password.trim().eq_ignore_ascii_case(email) {
        return Err(PolicyError::Password(
            "password must not be the email address".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(
            normalize_email("  Ann@Example.COM ").as_deref(),
            Ok("ann@example.com")
        );
        for bad in [
            "",
            "   ",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "ann@ex..com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn password_rules_follow_nist() {
        assert!(check_new_password("short", "a@b.co", 8).is_err());
        assert!(check_new_password("a@b.co12", "a@b.co12", 8).is_err());
        assert!(check_new_password(&"x".repeat(1025), "a@b.co", 8).is_err());
        assert!(check_new_password("correct horse", "a@b.co", 8).is_ok());
        // Eight characters that take more than eight bytes still count as eight.
        assert!(check_new_password("ééééééé", "a@b.co", 8).is_err());
        assert!(check_new_password("éééééééé", "a@b.co", 8).is_ok());
    }

    #[tokio::test]
    async fn pool_verifies_and_refuses_when_full() {
        let settings = HashingSettings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            min_password_length: 8,
        };
        let pool = HashPool::new(&settings, 1, 0).expect("valid params");
        let hash = pool
            .hash(Password::new("correct horse".into()))
            .await
            .expect("hash");
        assert!(!format!("{hash:?}").contains("argon2"));
        assert!(
            pool.verify(Password::new("correct horse".into()), Some(hash.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !pool
                .verify(Password::new("wrong horse".into()), Some(hash))
                .await
                .expect("verify")
        );
        assert!(
            !pool
                .verify(Password::new("correct horse".into()), None)
                .await
                .expect("verify")
        );
    }
}
