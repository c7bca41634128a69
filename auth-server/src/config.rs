//! Command line and `AUTH_*` environment configuration, parsed once by clap.
//!
//! Every flag has an environment twin; `Settings` is the validated result that the rest of
//! the server reads. Tests build `Settings` in code and never touch the process environment.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};

use crate::{mail::MailSettings, storage::throttle::LockoutPolicy};

/// `auth-server`: the identity service.
#[derive(Debug, Parser)]
#[command(name = "auth-server", version, about)]
pub struct Cli {
    /// Log line format: `human` or `json` (one JSON object per line).
    #[arg(
        long,
        global = true,
        env = "AUTH_LOG_FORMAT",
        value_enum,
        default_value = "human"
    )]
    pub log_format: crate::telemetry::LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands of `auth-server`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (creates and migrates the embedded SQLite database on first start).
    Serve(Box<ServeArgs>),
    /// Apply, roll back or show the schema migrations.
    Migrate {
        /// Where the data lives.
        #[command(flatten)]
        store: StoreArgs,
        /// Migration action.
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Add an account; the password is read from standard input.
    CreateUser(CreateUserArgs),
    /// Add an account with role `admin`; the password is read from standard input.
    CreateAdmin(CreateAdminArgs),
    /// List, rotate or retire the access-token signing keys.
    Keys {
        /// Where the keys live.
        #[command(flatten)]
        keys: KeyArgs,
        /// Key action.
        #[command(subcommand)]
        action: KeysAction,
    },
}

/// `keys` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysAction {
    /// List every key with its state (pending, signing, verifying, expired, retired).
    List,
    /// Add a key that becomes the signer after `--activate-in-secs`; the old key keeps
    /// verifying until its tokens have expired, so nobody is logged out.
    Rotate {
        /// Seconds until the new key signs; every replica reloads keys within
        /// `--key-refresh-secs`, so keep this longer than that (0 for an emergency).
        #[arg(long, default_value_t = 60)]
        activate_in_secs: u64,
    },
    /// Retire a key at once: tokens it signed stop verifying (for a leaked key).
    Retire {
        /// The key id (`k4.pid.…`), as `keys list` shows it.
        kid: String,
    },
}

/// Where signing keys live: the database and the key-encryption key.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// Where the data lives.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Key-encryption key file (base64 32 bytes, created if missing). Default: `kek.key` in the
    /// data dir. Every replica needs the same file.
    #[arg(long, env = "AUTH_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Access token lifetime in seconds (how long a replaced key keeps verifying).
    #[arg(long, env = "AUTH_ACCESS_TOKEN_TTL_SECS", default_value_t = 900)]
    pub access_token_ttl_secs: u64,
}

impl KeyArgs {
    /// The key-encryption key file to use.
    pub fn key_file(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| self.store.data_dir.join(crate::keys::KEK_FILE))
    }
}

/// `migrate` actions.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Roll back the last migration (or `--steps N`).
    Down {
        /// How many migrations to roll back.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether each is applied.
    Status,
}

/// Where the data lives: shared by every subcommand.
#[derive(Clone, Args)]
pub struct StoreArgs {
    /// Database URL: `sqlite://path?mode=rwc` or `postgres://…`. Default: `auth.db` in the data dir.
    #[arg(long, env = "AUTH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory for the SQLite file and the signing keys (created with mode 0700).
    #[arg(long, env = "AUTH_DATA_DIR", default_value = "./auth-data")]
    pub data_dir: PathBuf,
}

impl StoreArgs {
    /// The database URL to use: the flag, or the SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.trim().is_empty() => url.trim().to_owned(),
            _ => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("auth.db").display()
            ),
        }
    }
}

/// What `create-user` and `create-admin` share.
#[derive(Debug, Clone, Args)]
pub struct AccountArgs {
    /// Where the data lives.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Email address of the new account.
    #[arg(long)]
    pub email: String,
    /// Display name.
    #[arg(long, default_value = "")]
    pub display_name: String,
    /// Read the password from standard input (required: passwords never travel as flags).
    #[arg(long, required = true)]
    pub password_stdin: bool,
    /// Password hashing parameters.
    #[command(flatten)]
    pub hashing: HashingArgs,
}

/// `create-user` arguments.
#[derive(Debug, Clone, Args)]
pub struct CreateUserArgs {
    /// The account.
    #[command(flatten)]
    pub account: AccountArgs,
    /// Role to grant; repeat for several (for example `--role events.subscriber`).
    #[arg(long = "role")]
    pub roles: Vec<String>,
}

/// `create-admin` arguments.
#[derive(Debug, Clone, Args)]
pub struct CreateAdminArgs {
    /// The account (granted role `admin`).
    #[command(flatten)]
    pub account: AccountArgs,
}

/// Argon2id parameters and password rules.
#[derive(Debug, Clone, Args)]
pub struct HashingArgs {
    /// Argon2id memory cost in KiB (OWASP minimum 19456).
    #[arg(long, env = "AUTH_ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    #[arg(long, env = "AUTH_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,
    /// Argon2id parallelism.
    #[arg(long, env = "AUTH_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,
    /// Minimum password length in characters (NIST 800-63B: at least 8).
    #[arg(long, env = "AUTH_MIN_PASSWORD_LENGTH", default_value_t = 8)]
    pub min_password_length: usize,
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
    /// Password hashing threads (default: the number of cores).
    #[arg(long, env = "AUTH_HASH_THREADS")]
    pub hash_threads: Option<usize>,
    /// Password hashing requests that may wait for a thread; beyond it calls get RESOURCE_EXHAUSTED.
    #[arg(long, env = "AUTH_HASH_QUEUE", default_value_t = 64)]
    pub hash_queue: usize,
    /// Maximum database connections.
    #[arg(long, env = "AUTH_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// How often (ms) the event feed polls the outbox even without a notification.
    #[arg(long, env = "AUTH_EVENT_POLL_MS", default_value_t = 1000)]
    pub event_poll_ms: u64,
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
    /// Password hashing parameters.
    #[command(flatten)]
    pub hashing: HashingArgs,
    /// Lockout, rate limits, audit retention, password reset and mail.
    #[command(flatten)]
    pub protection: ProtectionArgs,
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
}

/// Validated limits.
#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    /// Password class: concurrency and deadline.
    pub password: (usize, Duration),
    /// Validate class.
    pub validate: (usize, Duration),
    /// Admin class.
    pub admin: (usize, Duration),
    /// Everything else (logout, health, reflection): concurrency and deadline.
    pub other: (usize, Duration),
    /// Streams at most (no deadline).
    pub max_streams: usize,
    /// HTTP/2 keepalive interval.
    pub keepalive: Duration,
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
        if self.max_streams == 0 || self.keepalive_secs == 0 {
            return Err(ConfigError(
                "max streams and keepalive must be at least 1".into(),
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
            keepalive: Duration::from_secs(self.keepalive_secs),
        })
    }
}

/// Account protection settings of `serve`.
#[derive(Clone, Args)]
pub struct ProtectionArgs {
    /// Failed logins per email within the window that lock it (0 disables lockout).
    #[arg(long, env = "AUTH_LOCKOUT_MAX_FAILURES", default_value_t = 5)]
    pub lockout_max_failures: u32,
    /// Window in seconds in which failed logins are counted.
    #[arg(long, env = "AUTH_LOCKOUT_WINDOW_SECS", default_value_t = 900)]
    pub lockout_window_secs: u64,
    /// First lock duration in seconds; each further lock doubles it.
    #[arg(long, env = "AUTH_LOCKOUT_BASE_SECS", default_value_t = 60)]
    pub lockout_base_secs: u64,
    /// Longest lock in seconds.
    #[arg(long, env = "AUTH_LOCKOUT_MAX_SECS", default_value_t = 3600)]
    pub lockout_max_secs: u64,
    /// Requests per minute per client address to Login, Register, Refresh, the password reset
    /// and MFA calls (token bucket; 0 disables).
    #[arg(long, env = "AUTH_RATE_LIMIT_PER_MINUTE", default_value_t = 60)]
    pub rate_limit_per_minute: u32,
    /// Burst size of the per-address token bucket.
    #[arg(long, env = "AUTH_RATE_LIMIT_BURST", default_value_t = 20)]
    pub rate_limit_burst: u32,
    /// Proxy addresses whose `x-forwarded-for` is believed (comma-separated); off by default,
    /// so the client address is the TCP peer.
    #[arg(
        long = "trusted-proxy",
        env = "AUTH_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpAddr>,
    /// Days audit records are kept.
    #[arg(long, env = "AUTH_AUDIT_RETENTION_DAYS", default_value_t = 90)]
    pub audit_retention_days: u32,
    /// Lifetime of password reset tokens in seconds.
    #[arg(long, env = "AUTH_RESET_TOKEN_TTL_SECS", default_value_t = 1800)]
    pub reset_token_ttl_secs: u64,
    /// Lifetime of invite tokens (CreateUser without a password) in seconds.
    #[arg(long, env = "AUTH_INVITE_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub invite_ttl_secs: u64,
    /// SMTP server for self-service password reset mails, for example
    /// `smtp://relay:25` or `smtps://user:pass@mail.example.com`; unset disables
    /// RequestPasswordReset.
    #[arg(long, env = "AUTH_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Sender of reset mails.
    #[arg(
        long,
        env = "AUTH_SMTP_FROM",
        default_value = "auth-server <auth-server@localhost>"
    )]
    pub smtp_from: String,
    /// Link in reset mails, `{token}` replaced by the token; empty puts the bare token in the mail.
    #[arg(long, env = "AUTH_RESET_LINK_TEMPLATE", default_value = "")]
    pub reset_link_template: String,
}

impl fmt::Debug for ProtectionArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectionArgs")
            .field("lockout_max_failures", &self.lockout_max_failures)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .finish_non_exhaustive()
    }
}

/// Per-address rate limit.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitSettings {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Bucket size.
    pub burst: u32,
}

/// Validated protection settings.
#[derive(Debug, Clone)]
pub struct ProtectionSettings {
    /// Lockout rules.
    pub lockout: LockoutPolicy,
    /// Rate limit, if on.
    pub rate_limit: Option<RateLimitSettings>,
    /// Proxies whose `x-forwarded-for` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Audit retention.
    pub audit_retention: Duration,
    /// Reset token lifetime.
    pub reset_token_ttl: Duration,
    /// Invite token lifetime.
    pub invite_ttl: Duration,
    /// SMTP, if configured.
    pub mail: Option<MailSettings>,
}

impl ProtectionArgs {
    /// Validates the arguments.
    pub fn settings(&self) -> Result<ProtectionSettings, ConfigError> {
        if self.lockout_window_secs == 0 || self.lockout_base_secs == 0 {
            return Err(ConfigError(
                "lockout window and base duration must be at least 1 s".into(),
            ));
        }
        if self.lockout_max_secs < self.lockout_base_secs {
            return Err(ConfigError(
                "lockout max duration must not be shorter than the base duration".into(),
            ));
        }
        if self.rate_limit_per_minute > 0 && self.rate_limit_burst == 0 {
            return Err(ConfigError("rate limit burst must be at least 1".into()));
        }
        if self.audit_retention_days == 0 {
            return Err(ConfigError("audit retention must be at least 1 day".into()));
        }
        if !(60..=24 * 3600).contains(&self.reset_token_ttl_secs) {
            return Err(ConfigError("reset token TTL must be 60 s to 24 h".into()));
        }
        if !(60..=30 * 24 * 3600).contains(&self.invite_ttl_secs) {
            return Err(ConfigError("invite TTL must be 60 s to 30 days".into()));
        }
        let mail = match self.smtp_url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => {
                let settings = MailSettings {
                    smtp_url: url.to_owned(),
                    from: self.smtp_from.clone(),
                    reset_link_template: self.reset_link_template.clone(),
                };
                // Refuse a broken URL or sender at start, not at the first reset.
                crate::mail::Mailer::new(&settings).map_err(|e| ConfigError(e.to_string()))?;
                Some(settings)
            }
            _ => None,
        };
        Ok(ProtectionSettings {
            lockout: LockoutPolicy {
                max_failures: self.lockout_max_failures,
                window: Duration::from_secs(self.lockout_window_secs),
                base_lock: Duration::from_secs(self.lockout_base_secs),
                max_lock: Duration::from_secs(self.lockout_max_secs),
            },
            rate_limit: (self.rate_limit_per_minute > 0).then_some(RateLimitSettings {
                per_minute: self.rate_limit_per_minute,
                burst: self.rate_limit_burst,
            }),
            trusted_proxies: self.trusted_proxies.clone(),
            audit_retention: Duration::from_secs(u64::from(self.audit_retention_days) * 86_400),
            reset_token_ttl: Duration::from_secs(self.reset_token_ttl_secs),
            invite_ttl: Duration::from_secs(self.invite_ttl_secs),
            mail,
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
    /// Hash pool threads.
    pub hash_threads: usize,
    /// Hash pool wait queue.
    pub hash_queue: usize,
    /// Max database connections.
    pub db_max_connections: u32,
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
    /// Key-encryption key file.
    pub key_file: PathBuf,
    /// Operator HTTP listener (metrics, liveness, readiness).
    pub metrics_listen: Option<SocketAddr>,
    /// TLS on the gRPC listener, if configured.
    pub tls: Option<crate::tls::TlsSettings>,
    /// How long a graceful shutdown waits for in-flight calls.
    pub shutdown_timeout: Duration,
    /// Per-class limits.
    pub limits: LimitSettings,
    /// Signing key reload interval.
    pub key_refresh_interval: Duration,
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

impl fmt::Debug for StoreArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreArgs")
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("data_dir", &self.data_dir)
            .finish()
    }
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
            .field("hash_threads", &self.hash_threads)
            .field("hash_queue", &self.hash_queue)
            .field("hashing", &self.hashing)
            .field("protection", &self.protection)
            .finish_non_exhaustive()
    }
}

/// Validated argon2id parameters and password rules.
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

/// A setting is out of range; the message is the one line printed at start-up.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl HashingArgs {
    /// Validates the parameters.
    pub fn settings(&self) -> Result<HashingSettings, ConfigError> {
        if self.argon2_memory_kib < 8 * self.argon2_parallelism.max(1) {
            return Err(ConfigError(
                "argon2 memory must be at least 8 KiB per lane".into(),
            ));
        }
        if self.argon2_iterations == 0 || self.argon2_parallelism == 0 {
            return Err(ConfigError(
                "argon2 iterations and parallelism must be at least 1".into(),
            ));
        }
        if !(1..=1024).contains(&self.min_password_length) {
            return Err(ConfigError(
                "min password length must be between 1 and 1024".into(),
            ));
        }
        Ok(HashingSettings {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
            min_password_length: self.min_password_length,
        })
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
        let hash_threads = self
            .hash_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if hash_threads == 0 {
            return Err(ConfigError("hash threads must be at least 1".into()));
        }
        if self.db_max_connections == 0 {
            return Err(ConfigError(
                "database max connections must be at least 1".into(),
            ));
        }
        Ok(Settings {
            listen: self.listen,
            database_url: self.store.database_url(),
            data_dir: self.store.data_dir.clone(),
            allow_registration: self.allow_registration,
            migrate: self.migrate,
            issuer: self.issuer.trim().to_owned(),
            access_token_ttl: Duration::from_secs(self.access_token_ttl_secs),
            refresh_token_ttl: Duration::from_secs(self.refresh_token_ttl_secs),
            hash_threads,
            hash_queue: self.hash_queue,
            db_max_connections: self.db_max_connections,
            hashing: self.hashing.settings()?,
            health_interval: Duration::from_secs(2),
            event_poll_interval: Duration::from_millis(self.event_poll_ms.max(10)),
            event_feed_capacity: crate::events::FEED_CAPACITY,
            protection: self.protection.settings()?,
            key_file: self
                .key_file
                .clone()
                .unwrap_or_else(|| self.store.data_dir.join(crate::keys::KEK_FILE)),
            key_refresh_interval: Duration::from_secs(self.key_refresh_secs.clamp(1, 3600)),
            metrics_listen: self.metrics_listen,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(crate::tls::TlsSettings {
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
    /// Settings for tests and embedding: a data dir and database URL, everything else default
    /// except cheap argon2 parameters can be chosen by the caller.
    pub fn for_data_dir(data_dir: PathBuf, database_url: Option<String>) -> Self {
        let store = StoreArgs {
            database_url,
            data_dir,
        };
        let args = ServeArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            store,
            allow_registration: true,
            migrate: true,
            issuer: "auth-server".into(),
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            hash_threads: None,
            hash_queue: 64,
            db_max_connections: 16,
            event_poll_ms: 1000,
            key_file: None,
            key_refresh_secs: 30,
            metrics_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            shutdown_timeout_secs: 30,
            limits: LimitArgs {
                password_rpc_concurrency: 256,
                password_rpc_timeout_ms: 10_000,
                validate_rpc_concurrency: 4096,
                validate_rpc_timeout_ms: 2_000,
                admin_rpc_concurrency: 64,
                admin_rpc_timeout_ms: 15_000,
                max_streams: 1024,
                keepalive_secs: 30,
            },
            hashing: HashingArgs {
                argon2_memory_kib: 19_456,
                argon2_iterations: 2,
                argon2_parallelism: 1,
                min_password_length: 8,
            },
            protection: ProtectionArgs {
                lockout_max_failures: 5,
                lockout_window_secs: 900,
                lockout_base_secs: 60,
                lockout_max_secs: 3600,
                rate_limit_per_minute: 60,
                rate_limit_burst: 20,
                trusted_proxies: Vec::new(),
                audit_retention_days: 90,
                reset_token_ttl_secs: 1800,
                invite_ttl_secs: 7 * 24 * 3600,
                smtp_url: None,
                smtp_from: "auth-server <auth-server@localhost>".into(),
                reset_link_template: String::new(),
            },
        };
        #[allow(clippy::expect_used)]
        args.settings().expect("the defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn debug_output_hides_the_database_password() {
        let settings = Settings::for_data_dir(
            "/d".into(),
            Some("postgres://auth:s3cr3t@db:5432/auth".into()),
        );
        let printed = format!("{settings:?}");
        assert!(
            !printed.contains("s3cr3t")
                && printed.contains("postgres://auth:[redacted]@db:5432/auth")
        );
        assert_eq!(
            redact_url("sqlite://./auth-data/auth.db?mode=rwc"),
            "sqlite://./auth-data/auth.db?mode=rwc"
        );
    }

    #[test]
    fn allow_registration_works_as_a_bare_flag_or_with_a_value() {
        for (args, want) in [
            (&["auth-server", "serve"][..], false),
            (&["auth-server", "serve", "--allow-registration"][..], true),
            (
                &["auth-server", "serve", "--allow-registration", "false"][..],
                false,
            ),
            (
                &["auth-server", "serve", "--allow-registration=true"][..],
                true,
            ),
        ] {
            let cli = Cli::try_parse_from(args).expect("parses");
            let Command::Serve(serve) = cli.command else {
                panic!("serve")
            };
            assert_eq!(serve.allow_registration, want, "{args:?}");
        }
        assert!(Cli::try_parse_from(["auth-server", "serve", "--listen", "nonsense"]).is_err());
    }
}
