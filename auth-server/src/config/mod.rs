//! Command line and `AUTH_*` environment configuration, parsed once by clap.
//!
//! Every flag has an environment twin, and its clap default is the only default (tests and
//! embedders start from [`Settings::for_data_dir`], which parses an empty command line). Each
//! module owns its settings type; this module only parses and validates flags and assembles
//! them into [`Settings`]. It imports no domain module: `startup` turns the domain's values
//! into `domain::AccountSettings`. `serve.rs` holds the `serve` flags and `Settings`,
//! `protection.rs` the account protection flags, `lifecycle.rs` retention and erasure.

mod lifecycle;
mod protection;
mod serve;

use std::{fmt, path::PathBuf};

use clap::{Args, Parser, Subcommand};

pub use lifecycle::{LifecycleArgs, LifecycleSettings};
pub use protection::{LockoutArgs, ProtectionArgs, ProtectionSettings};
pub use serve::{LimitArgs, ServeArgs, Settings};

use crate::{passwords::HashingSettings, secrets::redact_url};

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
    /// Move users in from another system, with their existing password hashes (JSON Lines or
    /// CSV). Users already there are skipped; bad rows are reported by line.
    ImportUsers(ImportUsersArgs),
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
    /// Directory for the SQLite file and the key files `kek.key` and `mfa.key` (created with
    /// mode 0700; files 0600).
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

/// Formats `import-users` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header line naming the columns.
    Csv,
}

/// `import-users` arguments.
#[derive(Debug, Clone, Args)]
pub struct ImportUsersArgs {
    /// Where the data lives.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The users: a JSON Lines or CSV file; `-` reads standard input.
    #[arg(long)]
    pub file: PathBuf,
    /// The file's format. Default: `csv` for a `.csv` file, otherwise `jsonl`.
    #[arg(long, value_enum)]
    pub format: Option<ImportFormat>,
    /// Where to write the invite token of each user imported without a hash (one JSON object
    /// per line, appended, created with mode 0600). Without it such rows are rejected.
    #[arg(long)]
    pub invites_file: Option<PathBuf>,
    /// Invite token lifetime in seconds (60 s to 30 days).
    #[arg(long, env = "AUTH_INVITE_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub invite_ttl_secs: u64,
}

impl ImportUsersArgs {
    /// The format to read: the flag, or the file's extension.
    pub fn format(&self) -> ImportFormat {
        self.format.unwrap_or_else(|| {
            if self
                .file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
            {
                ImportFormat::Csv
            } else {
                ImportFormat::Jsonl
            }
        })
    }

    /// The invite lifetime, checked.
    pub fn invite_ttl(&self) -> Result<std::time::Duration, ConfigError> {
        if !(60..=30 * 24 * 3600).contains(&self.invite_ttl_secs) {
            return Err(ConfigError("invite TTL must be 60 s to 30 days".into()));
        }
        Ok(std::time::Duration::from_secs(self.invite_ttl_secs))
    }
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
