//! The hashing pool: dedicated OS threads (at a lower CPU priority than the request threads)
//! fed by a bounded queue; a place is taken before the work that leads to hashing, and a job
//! that waited past the bound is dropped unrun.

use std::{
    fmt,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
    },
};

use argon2::{Algorithm, Argon2, Params, Version, password_hash::SaltString};
use rand::RngCore;
use tokio::sync::oneshot;

use super::{
    HashError, HashingSettings, Memory, Password, PasswordHash, argon2_error, hash_with,
    verify_with,
};

/// Default bound on a job's wait for a thread (`--hash-queue-max-wait-ms`).
pub const DEFAULT_MAX_WAIT_MS: u64 = 2_000;

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
    /// Longest a job may wait for a thread, in milliseconds; a job that waited longer (or whose
    /// caller is gone) is dropped unrun.
    max_wait_ms: std::sync::atomic::AtomicU64,
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

/// Lowers the calling thread's CPU priority by `nice` (Linux: per thread; elsewhere a no-op).
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        let current =
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0);
        if let Err(error) =
            rustix::process::setpriority_process(Some(rustix::thread::gettid()), current + nice)
        {
            tracing::warn!(error.message = %error, "cannot lower the hashing thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

fn worker(argon2: Argon2<'static>, jobs: Arc<Mutex<Receiver<Job>>>, nice: i32) {
    lower_priority(nice);
    let mut memory = Memory::new();
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
        Self::with_nice(settings, threads, queue, 0)
    }

    /// As [`HashPool::new`], with the hashing threads' CPU priority lowered by `nice` (0-19) so
    /// the request threads (Validate, refusals) run first when both want a core.
    pub fn with_nice(
        settings: &HashingSettings,
        threads: usize,
        queue: usize,
        nice: i32,
    ) -> Result<Self, HashError> {
        let argon2 = build_argon2(settings)?;
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        let dummy = hash_with(&argon2, &mut Memory::new(), &base64_of(&random))?;
        let threads = threads.max(1);
        let places = threads.max(1) + queue.max(1);
        // Room for every place: a job with a place is never refused by the channel.
        let (jobs, receiver) = mpsc::sync_channel::<Job>(places);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads {
            let (argon2, receiver) = (argon2.clone(), Arc::clone(&receiver));
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(argon2, receiver, nice))
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
                max_wait_ms: std::sync::atomic::AtomicU64::new(DEFAULT_MAX_WAIT_MS),
                wait: std::sync::OnceLock::new(),
                dummy,
            }),
        })
    }

    /// Number of hashing threads.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Bounds how long a job may wait for a thread (default 2 s): a job that waited longer is
    /// refused with [`HashError::QueueTimeout`] without being computed, so a queued login never
    /// spends its hash and then misses its call deadline.
    pub fn limit_wait(&self, max_wait: std::time::Duration) {
        let ms = u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX);
        self.inner.max_wait_ms.store(ms, Ordering::Relaxed);
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
            let waited = queued.elapsed();
            if let Some(wait) = inner.wait.get() {
                wait.observe(waited.as_secs_f64());
            }
            let max_wait = inner.max_wait_ms.load(Ordering::Relaxed);
            // A caller that is gone (deadline, cancel) or waited past the bound gets no work.
            let result = if reply.is_closed()
                || u64::try_from(waited.as_millis()).unwrap_or(u64::MAX) > max_wait
            {
                Err(HashError::QueueTimeout)
            } else {
                let result = job(argon2, memory);
                inner.computed.fetch_add(1, Ordering::Relaxed);
                result
            };
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
    use argon2::PasswordHash as PhcHash;

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

    #[tokio::test]
    async fn jobs_that_waited_past_the_bound_are_refused_unrun() {
        let settings = settings(19_456, 2);
        let pool = HashPool::new(&settings, 1, 8).expect("valid params");
        pool.limit_wait(std::time::Duration::from_millis(1));
        let jobs = (0..6).map(|_| pool.hash(Password::new("correct horse".into())));
        let results = futures::future::join_all(jobs).await;
        let timed_out = results
            .iter()
            .filter(|r| matches!(r, Err(HashError::QueueTimeout)))
            .count();
        let hashed = results.iter().filter(|r| r.is_ok()).count();
        // Each hash takes far longer than 1 ms, so whatever queued behind one ran out of time:
        // at least the last four, and none of them was computed.
        assert!(timed_out >= 4, "{results:?}");
        assert_eq!(timed_out + hashed, 6, "{results:?}");
        assert_eq!(pool.computed(), hashed as u64);
        assert_eq!(pool.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_caller_that_gave_up_costs_no_hash() {
        let settings = settings(19_456, 2);
        let pool = HashPool::new(&settings, 1, 4).expect("valid params");
        let running = pool.hash(Password::new("correct horse".into()));
        let abandoned = pool.reserve().expect("place");
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(1),
            abandoned.hash(Password::new("other horse".into())),
        );
        let (first, second) = tokio::join!(running, gave_up);
        assert!(first.is_ok());
        assert!(second.is_err(), "the second caller timed out");
        // Wait until the abandoned job has been picked up and dropped.
        for _ in 0..200 {
            if pool.in_flight() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(pool.in_flight(), 0);
        assert_eq!(pool.computed(), 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn hashing_threads_run_at_the_lowered_priority() {
        // Field 19 of /proc/<pid>/task/<tid>/stat is the nice value; the name (field 2) is in
        // parentheses. Other tests' pools (nice 0) may run at the same time, so look for ours.
        let nice_of_pool_threads = || -> Vec<i64> {
            let mut found = Vec::new();
            for task in std::fs::read_dir("/proc/self/task")
                .expect("tasks")
                .flatten()
            {
                let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                    continue;
                };
                let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                    continue;
                };
                if !stat[open + 1..close].starts_with("argon2-") {
                    continue;
                }
                // Fields after the name start at field 3.
                let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
                if let Some(nice) = fields.get(19 - 3).and_then(|n| n.parse().ok()) {
                    found.push(nice);
                }
            }
            found
        };
        let base = i64::from(
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0),
        );
        let want = (base + 7).min(19);
        let settings = settings(64, 1);
        let _pool = HashPool::with_nice(&settings, 2, 1, 7).expect("valid params");
        let mut seen = Vec::new();
        for _ in 0..100 {
            seen = nice_of_pool_threads();
            if seen.iter().filter(|&&n| n == want).count() >= 2 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("no two hashing threads at nice {want}: {seen:?}");
    }
}
