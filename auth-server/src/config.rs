//! Command line and `AUTH_*` environment configuration, parsed once by clap.
//!
//! Every flag has an environment twin; `Settings` is the validated result that the rest of
//! the server reads. Tests build `Settings` in code and never touch the process environment.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

/// `auth-server`: the identity service.
#[derive(Debug, Parser)]
#[command(name = "auth-server", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands of `auth-server`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server (creates and migrates the embedded SQLite database on first start).
    Serve(ServeArgs),
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
    /// Password hashing parameters.
    #[command(flatten)]
    pub hashing: HashingArgs,
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
            hashing: HashingArgs {
                argon2_memory_kib: 19_456,
                argon2_iterations: 2,
                argon2_parallelism: 1,
                min_password_length: 8,
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
