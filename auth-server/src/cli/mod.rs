//! The non-serving subcommands: `migrate`, `create-user`/`create-admin`, `keys`, and
//! `import-users` (in `import.rs`).

mod import;

pub use import::{ImportReport, import_users};

use std::io::Read as _;

use crate::{
    config::{AccountArgs, KeyArgs, KeysAction, MigrateAction, StoreArgs},
    domain::{self, NewAccount, ROLE_ADMIN},
    error::AuthError,
    keys::{KeyInfo, KeyManager},
    passwords::{HashPool, Password},
    startup::{StartupError, ensure_data_dir},
    storage::{StorageError, Store, UserRecord},
    tokens::KeyError,
};

/// Failures of a CLI command; printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Could not open the database.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// A storage call failed.
    #[error("database: {0}")]
    Storage(#[from] StorageError),
    /// The account was refused.
    #[error("{0}")]
    Account(String),
    /// Reading the password from standard input failed or gave nothing.
    #[error("password from stdin: {0}")]
    Stdin(String),
    /// Configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A signing key operation failed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The import's input or invites file could not be used.
    #[error("{0}")]
    Import(String),
}

fn key_line(key: &KeyInfo) -> String {
    let at = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let mut line = format!(
        "{:<9} {}  signing from {}",
        key.state.as_str(),
        key.kid,
        at(key.signing_from)
    );
    if let Some(until) = key.verify_until {
        line.push_str(&format!("  verifies until {}", at(until)));
    }
    if let Some(retired) = key.retired_at {
        line.push_str(&format!("  retired {}", at(retired)));
    }
    line
}

/// `auth-server keys list|rotate|retire`; returns lines to print.
pub async fn keys(args: &KeyArgs, action: KeysAction) -> Result<Vec<String>, CliError> {
    let db = open(&args.store).await?;
    if !db.is_migrated().await? {
        return Err(StartupError::NotMigrated.into());
    }
    let manager = KeyManager::new(
        db.clone(),
        &args.key_file(),
        std::time::Duration::from_secs(args.access_token_ttl_secs),
    )?;
    manager.ensure_keys(&args.store.data_dir).await?;
    let lines = match action {
        KeysAction::List => manager.list().await?.iter().map(key_line).collect(),
        KeysAction::Rotate { activate_in_secs } => {
            let key = manager
                .rotate(std::time::Duration::from_secs(activate_in_secs))
                .await?;
            vec![format!("rotated: {}", key_line(&key))]
        }
        KeysAction::Retire { kid } => {
            let key = manager.retire(kid.trim()).await?;
            vec![format!("retired: {}", key_line(&key))]
        }
    };
    db.close().await;
    Ok(lines)
}

impl From<AuthError> for CliError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::InvalidArgument(message) => CliError::Account(message),
            AuthError::EmailTaken => CliError::Account("email already registered".into()),
            other => CliError::Account(other.to_string()),
        }
    }
}

async fn open(store: &StoreArgs) -> Result<Store, CliError> {
    ensure_data_dir(&store.data_dir)?;
    Ok(Store::connect(&store.database_url(), 2).await?)
}

/// `auth-server migrate up|down|status`; returns lines to print.
pub async fn migrate(store: &StoreArgs, action: MigrateAction) -> Result<Vec<String>, CliError> {
    let db = open(store).await?;
    match action {
        MigrateAction::Up => db.migrate_up().await?,
        MigrateAction::Down { steps } => db.migrate_down(steps).await?,
        MigrateAction::Status => {}
    }
    let mut lines = vec![format!("database {}", db.server_version().await?)];
    lines.extend(
        db.migration_status()
            .await?
            .into_iter()
            .map(|(name, applied)| {
                format!("{} {name}", if applied { "applied" } else { "pending" })
            }),
    );
    db.close().await;
    Ok(lines)
}

/// Reads a password from `input`: everything up to the first line end.
pub fn read_password(input: &mut impl std::io::Read) -> Result<Password, CliError> {
    let mut raw = String::new();
    input
        .take(4096)
        .read_to_string(&mut raw)
        .map_err(|e| CliError::Stdin(e.to_string()))?;
    let line = raw.lines().next().unwrap_or_default().to_owned();
    if line.is_empty() {
        return Err(CliError::Stdin(
            "no password given on standard input".into(),
        ));
    }
    Ok(Password::new(line))
}

/// `auth-server create-user` / `create-admin`: migrates if needed, then creates the account
/// (with its `UserCreated` event).
pub async fn create_user(args: &AccountArgs, roles: Vec<String>) -> Result<UserRecord, CliError> {
    let AccountArgs {
        store,
        email,
        display_name,
        hashing,
        ..
    } = args;
    let password = read_password(&mut std::io::stdin().lock())?;
    let settings = hashing.settings()?;
    let db = open(store).await?;
    db.migrate_up().await?;
    let hasher = HashPool::new(&settings, 1, 0).map_err(AuthError::from)?;
    let new = NewAccount {
        email,
        password,
        display_name,
        roles,
    };
    let user = domain::create_account(&db, &hasher, settings.min_password_length, new).await;
    db.close().await;
    Ok(user?)
}

/// Roles for `create-admin`.
pub fn admin_roles() -> Vec<String> {
    vec![ROLE_ADMIN.to_owned()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_the_first_line_of_stdin() {
        let pw = read_password(&mut "s3cret pass\n".as_bytes()).expect("read");
        assert_eq!(pw.expose(), "s3cret pass");
        let pw = read_password(&mut "crlf pass\r\nignored".as_bytes()).expect("read");
        assert_eq!(pw.expose(), "crlf pass");
        assert!(read_password(&mut "".as_bytes()).is_err());
        assert!(read_password(&mut "\n".as_bytes()).is_err());
    }
}
