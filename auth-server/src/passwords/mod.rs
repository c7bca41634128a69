//! Password hashing (argon2id) on a bounded pool; the email and password rules live in
//! `passwords/rules.rs` and are re-exported here.
//!
//! Hashing is CPU- and memory-heavy on purpose, so it never runs on the async runtime: the
//! [`HashPool`] owns `threads` dedicated OS threads fed by a bounded queue. A job that finds
//! every thread busy and the queue full is refused at once with [`HashError::QueueFull`], so a
//! storm of logins costs bounded memory and leaves the runtime free for `Validate`. A flow
//! that will hash takes its place first ([`HashPool::reserve`]), before any database work, so
//! an overloaded pool refuses in microseconds and refused calls cost nothing else. Each thread
//! keeps its argon2 memory (19 MiB by default) between jobs instead of allocating, zeroing and
//! page-faulting it in on every hash.

use std::fmt;

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash as PhcHash, Version,
    password_hash::{Output, ParamsString, SaltString},
};
use rand::RngCore;
use subtle::ConstantTimeEq as _;

pub mod legacy;
mod pool;
mod rules;

pub use pool::{DEFAULT_MAX_WAIT_MS, HashPool, HashPriority, HashTicket};

pub use rules::{
    MAX_EMAIL_BYTES, MAX_PASSWORD_BYTES, PolicyError, check_new_password, check_password_size,
    normalize_email,
};

/// Argon2id parameters and the minimum password length (validated by `config`).
#[derive(Debug, Clone, Copy)]
pub struct HashingSettings {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Parallelism.
    pub parallelism: u32,
    /// Minimum password length in characters.
    pub min_password_length: usize,
}

/// Largest argon2 memory cost a stored hash may ask for (4 GiB), so a corrupt row cannot make a
/// worker allocate without bound.
const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;

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

/// A PHC-format argon2 hash (the type the credentials table stores): prints as `[redacted]`.
pub use crate::storage::PasswordHash;

/// Hashing failures other than a wrong password.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every thread is busy and the wait queue is full.
    #[error("password hashing queue is full")]
    QueueFull,
    /// The argon2 parameters or a stored hash are malformed.
    #[error("argon2 failure: {0}")]
    Argon2(String),
    /// The job waited longer than the pool's wait bound for a thread (nothing was computed).
    #[error("password hashing queue wait exceeded its bound")]
    QueueTimeout,
    /// The worker died before answering.
    #[error("hashing worker failed")]
    WorkerGone,
}

pub(crate) fn argon2_error(e: impl fmt::Display) -> HashError {
    HashError::Argon2(e.to_string())
}

/// Per-thread argon2 working memory, reused across jobs.
pub(crate) struct Memory(Vec<Block>);

impl Memory {
    fn new() -> Self {
        Self(Vec::new())
    }

    fn blocks(&mut self, params: &Params) -> &mut [Block] {
        let count = params.block_count();
        if self.0.len() < count {
            self.0.resize(count, Block::default());
        }
        &mut self.0[..count]
    }
}

pub(crate) fn hash_with(
    argon2: &Argon2<'_>,
    memory: &mut Memory,
    password: &str,
) -> Result<PasswordHash, HashError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt_string = SaltString::encode_b64(&salt).map_err(argon2_error)?;
    let params = argon2.params().clone();
    let blocks = memory.blocks(&params);
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        argon2
            .hash_password_into_with_memory(password.as_bytes(), &salt, out, &mut *blocks)
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(argon2_error)?;
    let phc = PhcHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(argon2_error)?,
        salt: Some(salt_string.as_salt()),
        hash: Some(output),
    };
    Ok(PasswordHash(phc.to_string()))
}

/// Whether `hash` is argon2id, version 0x13, with exactly `argon2`'s parameters and the
/// default output length: anything else (older parameters, argon2i/argon2d, a malformed string)
/// is worth re-hashing at the next successful login.
pub(crate) fn is_current_with(argon2: &Argon2<'_>, hash: &PasswordHash) -> bool {
    let Ok(phc) = PhcHash::new(&hash.0) else {
        return false;
    };
    let Ok(params) = Params::try_from(&phc) else {
        return false;
    };
    let current = argon2.params();
    phc.algorithm == Algorithm::Argon2id.ident()
        && phc.version == Some(Version::V0x13.into())
        && params.m_cost() == current.m_cost()
        && params.t_cost() == current.t_cost()
        && params.p_cost() == current.p_cost()
        && phc
            .hash
            .is_some_and(|h| h.len() == Params::DEFAULT_OUTPUT_LEN)
}

/// A parsed argon2 PHC string.
pub(crate) struct Argon2Phc<'a> {
    algorithm: Algorithm,
    version: Version,
    params: Params,
    salt: argon2::password_hash::Salt<'a>,
    expected: argon2::password_hash::Output,
}

/// Parses an argon2 PHC string: algorithm, version, parameters (memory within the cap), salt
/// and output.
pub(crate) fn argon2_params(hash: &str) -> Result<Argon2Phc<'_>, HashError> {
    let phc = PhcHash::new(hash).map_err(argon2_error)?;
    let algorithm = Algorithm::try_from(phc.algorithm).map_err(argon2_error)?;
    let version = phc
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(argon2_error)?
        .unwrap_or_default();
    let params = Params::try_from(&phc).map_err(argon2_error)?;
    if params.m_cost() > MAX_MEMORY_KIB {
        return Err(HashError::Argon2(
            "stored hash asks for too much memory".into(),
        ));
    }
    let (Some(salt), Some(expected)) = (phc.salt, phc.hash) else {
        return Err(HashError::Argon2("stored hash lacks salt or output".into()));
    };
    Ok(Argon2Phc {
        algorithm,
        version,
        params,
        salt,
        expected,
    })
}

/// Recomputes the hash with the parameters, salt and length stored in `hash` and compares in
/// constant time.
pub(crate) fn verify_with(
    memory: &mut Memory,
    password: &str,
    hash: &PasswordHash,
) -> Result<bool, HashError> {
    if legacy::HashFormat::of(&hash.0) != Some(legacy::HashFormat::Argon2) {
        return legacy::verify(password, &hash.0);
    }
    let Argon2Phc {
        algorithm,
        version,
        params,
        salt,
        expected,
    } = argon2_params(&hash.0)?;
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf).map_err(argon2_error)?;
    let mut computed = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params.clone());
    argon2
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            &mut computed,
            memory.blocks(&params),
        )
        .map_err(argon2_error)?;
    Ok(computed.ct_eq(expected.as_bytes()).into())
}
