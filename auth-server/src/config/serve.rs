//! The `serve` flags and the validated [`Settings`] the server starts from.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use super::{
    Cli, Command, ConfigError, HashingArgs, LifecycleArgs, LifecycleSettings, ProtectionArgs,
    ProtectionSettings, StoreArgs,
};
use sea_orm::DbBackend;

use crate::{
    cors::AllowedOrigins,
    limits::LimitSettings,
    passwords::{HashPriority, HashingSettings},
    secrets::redact_url,
    storage::{PoolSettings, backend_of},
    tls::TlsSettings,
};

/// `--hash-priority` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HashPriorityArg {
    /// All but one under Linux `SCHED_IDLE`, that one at `--hash-nice`.
    Mixed,
    /// Linux `SCHED_IDLE`.
    Idle,
    /// A lower nice (`--hash-nice`).
    Nice,
    /// The same priority as the request threads.
    Normal,
}

/// `serve` arguments.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the gRPC listener.
    #[arg(long, env = "AUTH_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Where the data lives.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Let anyone create an account with `Register`.
    #[arg(long, env = "AUTH_ALLOW_REGISTRATION", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_registration: bool,
    /// Apply pending migrations on start (always on for the embedded SQLite default).
    #[arg(long, env = "AUTH_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,
    /// Token issuer (`iss` claim).
    #[arg(long, env = "AUTH_ISSUER", default_value = "auth-server")]
    pub issuer: String,
    /// Access token lifetime in seconds.
    #[arg(long, env = "AUTH_ACCESS_TOKEN_TTL_SECS", default_value_t = 900)]
    pub access_token_ttl_secs: u64,
    /// Refresh token (session) lifetime in seconds.
    #[arg(long, env = "AUTH_REFRESH_TOKEN_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub refresh_token_ttl_secs: u64,
    /// Longest a session lives from its login, however often it refreshes (seconds); access
    /// tokens never outlive it either.
    #[arg(long, env = "AUTH_SESSION_MAX_LIFETIME_SECS", default_value_t = 30 * 24 * 3600)]
    pub session_max_lifetime_secs: u64,
    /// A session not refreshed for this long ends (seconds). Default: the refresh token
    /// lifetime.
    #[arg(long, env = "AUTH_SESSION_IDLE_TIMEOUT_SECS")]
    pub session_idle_timeout_secs: Option<u64>,
    /// Password hashing threads (default: the number of cores).
    #[arg(long, env = "AUTH_HASH_THREADS")]
    pub hash_threads: Option<usize>,
    /// Password hashing requests that may wait for a thread; beyond it calls get RESOURCE_EXHAUSTED.
    #[arg(long, env = "AUTH_HASH_QUEUE", default_value_t = 64)]
    pub hash_queue: usize,
    /// Longest (ms) a password call waits for a hashing thread before it is refused
    /// RESOURCE_EXHAUSTED without hashing (must be under the password call deadline).
    #[arg(long, env = "AUTH_HASH_QUEUE_MAX_WAIT_MS", default_value_t = crate::passwords::DEFAULT_MAX_WAIT_MS)]
    pub hash_queue_max_wait_ms: u64,
    /// How the hashing threads give way to the threads that answer calls: `mixed` (every
    /// hashing thread but one under Linux SCHED_IDLE, which a request thread that wakes
    /// interrupts at once, and one at nice `--hash-nice`, so logins keep a share of a busy
    /// machine), `idle` (all under SCHED_IDLE), `nice` (all at nice `--hash-nice`) or `normal`.
    #[arg(long, env = "AUTH_HASH_PRIORITY", value_enum, default_value_t = HashPriorityArg::Mixed)]
    pub hash_priority: HashPriorityArg,
    /// With `--hash-priority nice` or `mixed`: how much lower than the request threads the
    /// (niced) hashing threads run (Linux nice, 0-19).
    #[arg(long, env = "AUTH_HASH_NICE", default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub hash_nice: i32,
    /// Maximum database connections.
    #[arg(long, env = "AUTH_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// Database connections kept open even when idle.
    #[arg(long, env = "AUTH_DB_MIN_CONNECTIONS", default_value_t = 1)]
    pub db_min_connections: u32,
    /// How long (ms) a call waits for a free database connection before it fails UNAVAILABLE.
    #[arg(long, env = "AUTH_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5000)]
    pub db_acquire_timeout_ms: u64,
    /// Idle database connections above the minimum are closed after this many seconds (0: never).
    #[arg(long, env = "AUTH_DB_IDLE_TIMEOUT_SECS", default_value_t = 600)]
    pub db_idle_timeout_secs: u64,
    /// Database connections are replaced after this many seconds (0: never), so a failover or
    /// a rotated server certificate reaches every connection.
    #[arg(long, env = "AUTH_DB_MAX_LIFETIME_SECS", default_value_t = 1800)]
    pub db_max_lifetime_secs: u64,
    /// How often (ms) the event feed polls the outbox even without a notification. Default:
    /// 1000 on SQLite and PostgreSQL (commits wake the feed directly and through LISTEN/NOTIFY),
    /// 100 on MySQL (no NOTIFY: the poll is how other replicas learn of new events).
    #[arg(long, env = "AUTH_EVENT_POLL_MS")]
    pub event_poll_ms: Option<u64>,
    /// Events the in-memory feed holds for streams that are a little behind; a stream further
    /// behind reads the database at its own pace.
    #[arg(long, env = "AUTH_EVENT_FEED_CAPACITY", default_value_t = 4096)]
    pub event_feed_capacity: usize,
    /// Key-encryption key file that seals the signing keys in the database (base64 32 bytes,
    /// created if missing). Default: `kek.key` in the data dir. Every replica needs the same file.
    #[arg(long, env = "AUTH_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Server certificate chain (PEM): turns on TLS for the gRPC listener (with `--tls-key`).
    /// Re-read on SIGHUP or when the file changes.
    #[arg(long, env = "AUTH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "AUTH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to: mutual TLS, a client without one is
    /// refused at the handshake.
    #[arg(long, env = "AUTH_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Seconds a graceful shutdown waits for in-flight calls before closing connections.
    #[arg(long, env = "AUTH_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
    /// Concurrent calls per RPC class and their deadlines.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Address of the operator HTTP listener (`/metrics`, `/livez`, `/readyz`); off if unset.
    #[arg(long, env = "AUTH_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// How often (seconds) signing keys are reloaded from the database (rotations, retirements).
    #[arg(long, env = "AUTH_KEY_REFRESH_SECS", default_value_t = 30)]
    pub key_refresh_secs: u64,
    /// Browser origin (`https://app.example.com`, `http://127.0.0.1:8080`) allowed to call
    /// over gRPC-Web; repeat or comma-separate for several. None by default: a browser request
    /// from any origin is refused with HTTP 403.
    #[arg(
        long = "cors-allow-origin",
        env = "AUTH_CORS_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_allow_origins: Vec<String>,
    /// Password hashing parameters.
    #[command(flatten)]
    pub hashing: HashingArgs,
    /// Lockout, rate limits, audit retention, password reset and mail.
    #[command(flatten)]
    pub protection: ProtectionArgs,
    /// Retention, erasure and housekeeping.
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

/// Per-RPC-class concurrency and deadline limits. Over the concurrency limit a call is refused
/// at once with RESOURCE_EXHAUSTED (load shedding, not queueing); past the deadline it ends
/// with DEADLINE_EXCEEDED.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Concurrent password calls (Login, Register, Refresh, ChangePassword, reset, MFA).
    #[arg(long, env = "AUTH_PASSWORD_RPC_CONCURRENCY", default_value_t = 256)]
    pub password_rpc_concurrency: usize,
    /// Deadline of password calls in milliseconds.
    #[arg(long, env = "AUTH_PASSWORD_RPC_TIMEOUT_MS", default_value_t = 10_000)]
    pub password_rpc_timeout_ms: u64,
    /// Concurrent Validate and GetPublicKeys calls.
    #[arg(long, env = "AUTH_VALIDATE_RPC_CONCURRENCY", default_value_t = 4096)]
    pub validate_rpc_concurrency: usize,
    /// Deadline of Validate and GetPublicKeys in milliseconds.
    #[arg(long, env = "AUTH_VALIDATE_RPC_TIMEOUT_MS", default_value_t = 2_000)]
    pub validate_rpc_timeout_ms: u64,
    /// Concurrent AdminService calls.
    #[arg(long, env = "AUTH_ADMIN_RPC_CONCURRENCY", default_value_t = 64)]
    pub admin_rpc_concurrency: usize,
    /// Deadline of AdminService calls in milliseconds.
    #[arg(long, env = "AUTH_ADMIN_RPC_TIMEOUT_MS", default_value_t = 15_000)]
    pub admin_rpc_timeout_ms: u64,
    /// Open UserEvents and UserSnapshot streams at most.
    #[arg(long, env = "AUTH_MAX_STREAMS", default_value_t = 1024)]
    pub max_streams: usize,
    /// Seconds between HTTP/2 keepalive pings to idle connections.
    #[arg(long, env = "AUTH_KEEPALIVE_SECS", default_value_t = 30)]
    pub keepalive_secs: u64,
    /// Concurrent HTTP/2 streams one connection may open (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "AUTH_MAX_STREAMS_PER_CONNECTION", default_value_t = 100)]
    pub max_streams_per_connection: u32,
    /// Open connections at most; beyond, new ones wait in the accept queue.
    #[arg(long, env = "AUTH_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
}

impl LimitArgs {
    /// Validates the limits.
    pub fn settings(&self) -> Result<LimitSettings, ConfigError> {
        let class = |n: usize, ms: u64, name: &str| {
            if n == 0 || ms == 0 {
                Err(ConfigError(format!(
                    "{name} concurrency and timeout must be at least 1"
                )))
            } else {
                Ok((n, Duration::from_millis(ms)))
            }
        };
        if self.max_streams == 0
            || self.keepalive_secs == 0
            || self.max_streams_per_connection == 0
            || self.max_connections == 0
        {
            return Err(ConfigError(
                "max streams, streams per connection, max connections and keepalive must be at least 1"
                    .into(),
            ));
        }
        Ok(LimitSettings {
            password: class(
                self.password_rpc_concurrency,
                self.password_rpc_timeout_ms,
                "password RPC",
            )?,
            validate: class(
                self.validate_rpc_concurrency,
                self.validate_rpc_timeout_ms,
                "validate RPC",
            )?,
            admin: class(
                self.admin_rpc_concurrency,
                self.admin_rpc_timeout_ms,
                "admin RPC",
            )?,
            other: (256, Duration::from_secs(10)),
            max_streams: self.max_streams,
            streams_per_connection: self.max_streams_per_connection,
            max_connections: self.max_connections,
            keepalive: Duration::from_secs(self.keepalive_secs),
        })
    }
}

/// Validated server settings. `Debug` hides the database password.
#[derive(Clone)]
pub struct Settings {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Database URL.
    pub database_url: String,
    /// Data directory (SQLite file, signing keys).
    pub data_dir: PathBuf,
    /// Whether `Register` is open.
    pub allow_registration: bool,
    /// Whether to apply pending migrations on start.
    pub migrate: bool,
    /// Token issuer.
    pub issuer: String,
    /// Access token lifetime.
    pub access_token_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_token_ttl: Duration,
    /// Absolute session lifetime.
    pub session_max_lifetime: Duration,
    /// Session idle timeout.
    pub session_idle_timeout: Duration,
    /// Hash pool threads.
    pub hash_threads: usize,
    /// Hash pool wait queue.
    pub hash_queue: usize,
    /// Longest wait for a hashing thread.
    pub hash_queue_max_wait: Duration,
    /// How the hashing threads give way to the request threads.
    pub hash_priority: HashPriority,
    /// Database pool.
    pub db_pool: PoolSettings,
    /// Password hashing parameters.
    pub hashing: HashingSettings,
    /// How often the health checker pings the database.
    pub health_interval: Duration,
    /// How often the event feed polls without a wake-up.
    pub event_poll_interval: Duration,
    /// Events the in-memory feed holds for streams that are behind.
    pub event_feed_capacity: usize,
    /// Lockout, rate limits, audit, reset and mail.
    pub protection: ProtectionSettings,
    /// Retention, erasure and housekeeping.
    pub lifecycle: LifecycleSettings,
    /// Key-encryption key file.
    pub key_file: PathBuf,
    /// Operator HTTP listener (metrics, liveness, readiness).
    pub metrics_listen: Option<SocketAddr>,
    /// TLS on the gRPC listener, if configured.
    pub tls: Option<TlsSettings>,
    /// How long a graceful shutdown waits for in-flight calls.
    pub shutdown_timeout: Duration,
    /// Per-class limits.
    pub limits: LimitSettings,
    /// Signing key reload interval.
    pub key_refresh_interval: Duration,
    /// Browser origins allowed over gRPC-Web.
    pub cors_origins: AllowedOrigins,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("data_dir", &self.data_dir)
            .field("allow_registration", &self.allow_registration)
            .field("issuer", &self.issuer)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .field("session_max_lifetime", &self.session_max_lifetime)
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("hash_threads", &self.hash_threads)
            .field("hash_queue", &self.hash_queue)
            .field("hash_queue_max_wait", &self.hash_queue_max_wait)
            .field("hash_priority", &self.hash_priority)
            .field("hashing", &self.hashing)
            .field("protection", &self.protection)
            .field("lifecycle", &self.lifecycle)
            .field("cors_origins", &self.cors_origins)
            .finish_non_exhaustive()
    }
}

impl ServeArgs {
    /// Validates the arguments into `Settings`.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        if self.issuer.trim().is_empty() {
            return Err(ConfigError("issuer must not be empty".into()));
        }
        if !(10..=24 * 3600).contains(&self.access_token_ttl_secs) {
            return Err(ConfigError("access token TTL must be 10 s to 24 h".into()));
        }
        if self.refresh_token_ttl_secs < self.access_token_ttl_secs {
            return Err(ConfigError(
                "refresh token TTL must not be shorter than the access token TTL".into(),
            ));
        }
        let idle = self
            .session_idle_timeout_secs
            .unwrap_or(self.refresh_token_ttl_secs);
        if self.session_max_lifetime_secs < self.access_token_ttl_secs
            || idle < self.access_token_ttl_secs
        {
            return Err(ConfigError(
                "session max lifetime and idle timeout must not be shorter than the access token TTL"
                    .into(),
            ));
        }
        let hash_threads = self
            .hash_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if hash_threads == 0 {
            return Err(ConfigError("hash threads must be at least 1".into()));
        }
        if self.hash_queue_max_wait_ms == 0
            || self.hash_queue_max_wait_ms >= self.limits.password_rpc_timeout_ms
        {
            return Err(ConfigError(format!(
                "hash queue max wait must be 1 ms to just under the password call deadline ({} ms)",
                self.limits.password_rpc_timeout_ms
            )));
        }
        if self.db_max_connections == 0 {
            return Err(ConfigError(
                "database max connections must be at least 1".into(),
            ));
        }
        if self.db_min_connections > self.db_max_connections {
            return Err(ConfigError(format!(
                "database min connections ({}) must not exceed max connections ({})",
                self.db_min_connections, self.db_max_connections
            )));
        }
        if self.db_acquire_timeout_ms == 0 {
            return Err(ConfigError(
                "database acquire timeout must be at least 1 ms".into(),
            ));
        }
        let database_url = self.store.database_url();
        let default_poll_ms = if backend_of(&database_url) == Some(DbBackend::MySql) {
            100
        } else {
            1000
        };
        let optional_secs = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs));
        Ok(Settings {
            listen: self.listen,
            database_url,
            data_dir: self.store.data_dir.clone(),
            allow_registration: self.allow_registration,
            migrate: self.migrate,
            issuer: self.issuer.trim().to_owned(),
            access_token_ttl: Duration::from_secs(self.access_token_ttl_secs),
            refresh_token_ttl: Duration::from_secs(self.refresh_token_ttl_secs),
            session_max_lifetime: Duration::from_secs(self.session_max_lifetime_secs),
            session_idle_timeout: Duration::from_secs(idle),
            hash_threads,
            hash_queue: self.hash_queue,
            hash_queue_max_wait: Duration::from_millis(self.hash_queue_max_wait_ms),
            hash_priority: match self.hash_priority {
                HashPriorityArg::Mixed => HashPriority::Mixed(self.hash_nice),
                HashPriorityArg::Idle => HashPriority::Idle,
                HashPriorityArg::Nice => HashPriority::Nice(self.hash_nice),
                HashPriorityArg::Normal => HashPriority::Normal,
            },
            db_pool: PoolSettings {
                max_connections: self.db_max_connections,
                min_connections: self.db_min_connections,
                acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
                idle_timeout: optional_secs(self.db_idle_timeout_secs),
                max_lifetime: optional_secs(self.db_max_lifetime_secs),
            },
            hashing: self.hashing.settings()?,
            health_interval: Duration::from_secs(2),
            event_poll_interval: Duration::from_millis(
                self.event_poll_ms.unwrap_or(default_poll_ms).max(10),
            ),
            event_feed_capacity: self.event_feed_capacity.max(1),
            protection: self.protection.settings()?,
            lifecycle: self.lifecycle.settings()?,
            key_file: self
                .key_file
                .clone()
                .unwrap_or_else(|| self.store.data_dir.join(crate::keys::KEK_FILE)),
            key_refresh_interval: Duration::from_secs(self.key_refresh_secs.clamp(1, 3600)),
            cors_origins: AllowedOrigins::parse(&self.cors_allow_origins).map_err(ConfigError)?,
            metrics_listen: self.metrics_listen,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsSettings {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                    watch_interval: Duration::from_secs(5),
                }),
                _ => None,
            },
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            limits: self.limits.settings()?,
        })
    }
}

impl Settings {
    /// Settings for tests and embedding: every flag at its clap default (the environment is
    /// not read), with the given data dir and database URL, port 0 and registration open.
    pub fn for_data_dir(data_dir: PathBuf, database_url: Option<String>) -> Self {
        use clap::{CommandFactory as _, FromArgMatches as _};
        // The defaults are the flags' own; ignoring AUTH_* keeps a test from picking up the
        // operator's environment.
        let command = Cli::command()
            .mut_args(|arg| arg.env(None::<&str>))
            .mut_subcommand("serve", |serve| serve.mut_args(|arg| arg.env(None::<&str>)));
        #[allow(clippy::expect_used)]
        let matches = command
            .try_get_matches_from(["auth-server", "serve"])
            .expect("the defaults parse");
        #[allow(clippy::expect_used)]
        let Command::Serve(mut args) = Cli::from_arg_matches(&matches)
            .expect("the defaults parse")
            .command
        else {
            unreachable!("parsed the serve subcommand")
        };
        args.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        args.store = StoreArgs {
            database_url,
            data_dir,
        };
        args.allow_registration = true;
        #[allow(clippy::expect_used)]
        args.settings().expect("the defaults are valid")
    }
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
