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
    is_current_with, verify_with,
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

/// How the hashing threads give way to the threads that answer calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashPriority {
    /// The threads' own priority: they compete with the request threads as equals.
    Normal,
    /// CPU priority lowered by this much (Linux nice, 1-19). A request thread that wakes may
    /// still wait for a hashing thread to use up its time slice.
    Nice(i32),
    /// Linux `SCHED_IDLE`: a hashing thread runs when no request thread wants the core, and a
    /// request thread that wakes takes the core from it at once. Elsewhere: nice 19.
    Idle,
    /// Every hashing thread but the first under [`HashPriority::Idle`], the first at this nice
    /// (one thread alone: at this nice). A request thread that wakes finds a core it can take
    /// at once, and hashing keeps a share while request threads keep every core busy.
    Mixed(i32),
}

impl HashPriority {
    /// The priority of hashing thread `index` (from 0).
    fn of_thread(self, index: usize) -> Self {
        match self {
            Self::Mixed(nice) if index == 0 => Self::Nice(nice),
            Self::Mixed(_) => Self::Idle,
            other => other,
        }
    }
}

/// Applies `priority` to the calling thread (Linux: per thread; elsewhere a no-op).
fn lower_priority(priority: HashPriority) {
    match priority {
        HashPriority::Normal => {}
        HashPriority::Nice(nice) => lower_nice(nice),
        // Resolved per thread by `HashPriority::of_thread`.
        HashPriority::Mixed(nice) => lower_nice(nice),
        HashPriority::Idle => {
            if let Err(error) = schedule_idle() {
                tracing::warn!(
                    error.message = %error,
                    "cannot run the hashing thread under SCHED_IDLE; lowering its nice instead"
                );
                lower_nice(19);
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn lower_nice(nice: i32) {
    if nice > 0 {
        let current =
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0);
        if let Err(error) =
            rustix::process::setpriority_process(Some(rustix::thread::gettid()), current + nice)
        {
            tracing::warn!(error.message = %error, "cannot lower the hashing thread's priority");
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_nice(_nice: i32) {}

/// Puts the calling thread under `SCHED_IDLE`.
#[cfg(target_os = "linux")]
fn schedule_idle() -> Result<(), String> {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, thread_native_id,
        thread_schedule_policy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    // The library also sets the thread's nice to 0 (SCHED_IDLE ignores nice); that part fails
    // without privilege in a process started under `nice`, after the policy is in place.
    let result = thread_priority::set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        idle,
    );
    match (result, thread_schedule_policy()) {
        (_, Ok(policy)) if policy == idle => Ok(()),
        (Err(error), _) => Err(error.to_string()),
        (Ok(()), Ok(policy)) => Err(format!("the policy is still {policy:?}")),
        (Ok(()), Err(error)) => Err(error.to_string()),
    }
}

#[cfg(not(target_os = "linux"))]
fn schedule_idle() -> Result<(), String> {
    Err("SCHED_IDLE is Linux only".to_owned())
}

fn worker(argon2: Argon2<'static>, jobs: Arc<Mutex<Receiver<Job>>>, priority: HashPriority) {
    lower_priority(priority);
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
        Self::with_priority(settings, threads, queue, HashPriority::Normal)
    }

    /// As [`HashPool::new`], with the hashing threads' CPU priority lowered as `priority` says
    /// so the request threads (Validate, refusals) run first when both want a core.
    pub fn with_priority(
        settings: &HashingSettings,
        threads: usize,
        queue: usize,
        priority: HashPriority,
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
            let priority = priority.of_thread(i);
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(argon2, receiver, priority))
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

    /// Whether `hash` was made with this pool's algorithm and parameters (argon2id, the
    /// configured m/t/p); a login whose hash is not re-hashes the password.
    pub fn is_current(&self, hash: &PasswordHash) -> bool {
        is_current_with(&self.inner.argon2, hash)
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
#[path = "pool_tests.rs"]
mod tests;
