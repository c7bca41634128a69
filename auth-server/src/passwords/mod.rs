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

use std::{
    fmt,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
    },
};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash as PhcHash, Version,
    password_hash::{Output, ParamsString, SaltString},
};
use rand::RngCore;
use subtle::ConstantTimeEq as _;
use tokio::sync::oneshot;

mod rules;

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
    /// The worker died before answering.
    #[error("hashing worker failed")]
    WorkerGone,
}

fn argon2_error(e: impl fmt::Display) -> HashError {
    HashError::Argon2(e.to_string())
}

/// Per-thread argon2 working memory, reused across jobs.
struct Memory(Vec<Block>);

impl Memory {
    fn blocks(&mut self, params: &Params) -> &mut [Block] {
        let count = params.block_count();
        if self.0.len() < count {
            self.0.resize(count, Block::default());
        }
        &mut self.0[..count]
    }
}

fn hash_with(
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

/// Recomputes the hash with the parameters, salt and length stored in `hash` and compares in
/// constant time.
fn verify_with(
    memory: &mut Memory,
    password: &str,
    hash: &PasswordHash,
) -> Result<bool, HashError> {
    let phc = PhcHash::new(&hash.0).map_err(argon2_error)?;
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

type Job = Box<dyn FnOnce(&Argon2<'static>, &mut Memory) + Send>;

/// A place in the [`HashPool`], taken before the work that leads to hashing.
#[derive(Debug)]
pub struct HashTicket {
    pool: HashPool,
    place: tokio::sync::OwnedSemaphorePermit,
}

impl HashTicket {
    /// Hashes a new password.
    #[tracing::instrument(name = "password.hash", skip_all)]
    pub async fn hash(self, password: Password) -> Result<PasswordHash, HashError> {
        self.pool
            .run(self.place, move |argon2, memory| {
                hash_with(argon2, memory, password.expose())
            })
            .await
    }

    /// Verifies a password against a stored hash; with `None` (unknown user) verifies against
    /// the dummy hash and answers `false`, at the same cost.
    #[tracing::instrument(name = "password.verify", skip_all)]
    pub async fn verify(
        self,
        password: Password,
        hash: Option<PasswordHash>,
    ) -> Result<bool, HashError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.pool.inner.dummy.clone());
        let matched = self
            .pool
            .run(self.place, move |_, memory| {
                verify_with(memory, password.expose(), &hash)
            })
            .await?;
        Ok(known && matched)
    }
}

/// Bounded argon2id worker pool.
#[derive(Clone)]
pub struct HashPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    argon2: Argon2<'static>,
    jobs: SyncSender<Job>,
    /// Places: running plus waiting jobs, at most `threads + queue`.
    places: Arc<tokio::sync::Semaphore>,
    threads: usize,
    in_flight: AtomicUsize,
    /// argon2 computations finished (hashes and verifications).
    computed: std::sync::atomic::AtomicU64,
    /// Where queue waits are recorded, once metrics are on.
    wait: std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram>,
    /// Hash of a random password with the configured parameters, verified for unknown users so
    /// they cost exactly what a known user costs.
    dummy: PasswordHash,
}

impl fmt::Debug for HashPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashPool")
            .field("threads", &self.inner.threads)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

fn build_argon2(settings: &HashingSettings) -> Result<Argon2<'static>, HashError> {
    let params = Params::new(
        settings.memory_kib,
        settings.iterations,
        settings.parallelism,
        None,
    )
    .map_err(argon2_error)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn worker(argon2: Argon2<'static>, jobs: Arc<Mutex<Receiver<Job>>>) {
    let mut memory = Memory(Vec::new());
    loop {
        // Only the idle workers wait on the lock; a poisoned lock still holds a usable receiver.
        let job = {
            let receiver = jobs.lock().unwrap_or_else(|e| e.into_inner());
            receiver.recv()
        };
        let Ok(job) = job else { return };
        // A panicking job drops its reply sender (the caller sees `WorkerGone`); the thread lives on.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&argon2, &mut memory)));
    }
}

impl HashPool {
    /// Starts `threads` hashing threads with room for `queue` waiting jobs (at least one), and
    /// computes the dummy hash.
    pub fn new(
        settings: &HashingSettings,
        threads: usize,
        queue: usize,
    ) -> Result<Self, HashError> {
        let argon2 = build_argon2(settings)?;
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        let dummy = hash_with(&argon2, &mut Memory(Vec::new()), &base64_of(&random))?;
        let threads = threads.max(1);
        let places = threads.max(1) + queue.max(1);
        // Room for every place: a job with a place is never refused by the channel.
        let (jobs, receiver) = mpsc::sync_channel::<Job>(places);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads {
            let (argon2, receiver) = (argon2.clone(), Arc::clone(&receiver));
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(argon2, receiver))
                .map_err(|e| HashError::Argon2(format!("cannot start hashing thread: {e}")))?;
        }
        Ok(Self {
            inner: Arc::new(PoolInner {
                argon2,
                jobs,
                places: Arc::new(tokio::sync::Semaphore::new(places)),
                threads,
                in_flight: AtomicUsize::new(0),
                computed: std::sync::atomic::AtomicU64::new(0),
                wait: std::sync::OnceLock::new(),
                dummy,
            }),
        })
    }

    /// Number of hashing threads.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Records how long each job waits for a thread into `histogram` (set once).
    pub fn record_waits(&self, histogram: prometheus_client::metrics::histogram::Histogram) {
        let _ = self.inner.wait.set(histogram);
    }

    /// argon2 computations (hashes and verifications) this pool has finished.
    pub fn computed(&self) -> u64 {
        self.inner.computed.load(Ordering::Relaxed)
    }

    /// Jobs admitted and not finished (running + waiting).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Takes a place in the pool now (running or waiting), or refuses at once when all
    /// `threads + queue` places are taken; the ticket then hashes or verifies once.
    pub fn reserve(&self) -> Result<HashTicket, HashError> {
        let place = Arc::clone(&self.inner.places)
            .try_acquire_owned()
            .map_err(|_| HashError::QueueFull)?;
        Ok(HashTicket {
            pool: self.clone(),
            place,
        })
    }

    async fn run<T, F>(
        &self,
        place: tokio::sync::OwnedSemaphorePermit,
        job: F,
    ) -> Result<T, HashError>
    where
        T: Send + 'static,
        F: FnOnce(&Argon2<'static>, &mut Memory) -> Result<T, HashError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let span = tracing::Span::current();
        let inner = Arc::clone(&self.inner);
        let queued = std::time::Instant::now();
        let boxed: Job = Box::new(move |argon2, memory| {
            let _entered = span.enter();
            if let Some(wait) = inner.wait.get() {
                wait.observe(queued.elapsed().as_secs_f64());
            }
            let result = job(argon2, memory);
            inner.computed.fetch_add(1, Ordering::Relaxed);
            inner.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(place);
            let _ = reply.send(result);
        });
        self.inner.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.inner.jobs.try_send(boxed) {
            self.inner.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(match e {
                TrySendError::Full(_) => HashError::QueueFull,
                TrySendError::Disconnected(_) => HashError::WorkerGone,
            });
        }
        answer.await.map_err(|_| HashError::WorkerGone)?
    }

    /// Hashes a new password (taking a place first).
    pub async fn hash(&self, password: Password) -> Result<PasswordHash, HashError> {
        self.reserve()?.hash(password).await
    }

    /// Verifies a password (taking a place first): see [`HashTicket::verify`].
    pub async fn verify(
        &self,
        password: Password,
        hash: Option<PasswordHash>,
    ) -> Result<bool, HashError> {
        self.reserve()?.verify(password, hash).await
    }

    /// Hashes on the calling thread with the standard `argon2` API (fresh memory per call): the
    /// CLI uses it, and benchmarks use it as the raw baseline.
    pub fn hash_blocking(&self, password: &Password) -> Result<PasswordHash, HashError> {
        use argon2::PasswordHasher as _;
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(argon2_error)?;
        let hash = self
            .inner
            .argon2
            .hash_password(password.expose().as_bytes(), &salt)
            .map_err(argon2_error)?;
        Ok(PasswordHash(hash.to_string()))
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(memory_kib: u32, iterations: u32) -> HashingSettings {
        HashingSettings {
            memory_kib,
            iterations,
            parallelism: 1,
            min_password_length: 8,
        }
    }

    #[tokio::test]
    async fn pool_verifies_and_refuses_when_full() {
        let settings = settings(64, 1);
        let pool = HashPool::new(&settings, 1, 1).expect("valid params");
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

    #[tokio::test]
    async fn our_phc_strings_and_the_standard_api_verify_each_other() {
        use argon2::PasswordVerifier as _;
        let settings = settings(64, 1);
        let pool = HashPool::new(&settings, 1, 1).expect("valid params");
        let standard = pool
            .hash_blocking(&Password::new("other horse".into()))
            .expect("hash");
        assert!(
            pool.verify(Password::new("other horse".into()), Some(standard))
                .await
                .expect("verify")
        );
        let ours = pool
            .hash(Password::new("third horse".into()))
            .await
            .expect("hash");
        assert!(ours.0.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let phc = PhcHash::new(&ours.0).expect("phc");
        assert!(
            Argon2::default()
                .verify_password(b"third horse", &phc)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"third horsf", &phc)
                .is_err()
        );
    }

    #[tokio::test]
    async fn pool_refuses_beyond_threads_plus_queue() {
        let settings = settings(19_456, 2);
        let pool = HashPool::new(&settings, 1, 1).expect("valid params");
        let jobs = (0..6).map(|_| pool.hash(Password::new("correct horse".into())));
        let results = futures::future::join_all(jobs).await;
        let full = results
            .iter()
            .filter(|r| matches!(r, Err(HashError::QueueFull)))
            .count();
        // One runs, one waits; the other four are refused at once.
        assert_eq!(full, 4, "{results:?}");
        assert_eq!(pool.in_flight(), 0);
    }
}
