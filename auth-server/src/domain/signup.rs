//! Account creation: self-registration, the CLI's `create-user`/`create-admin`, and admins
//! (with an invite token when no password is given). Each writes `UserCreated` and an audit
//! record with the account.

use serde_json::json;

use super::{
    Accounts, Change,
    credentials::IssuedReset,
    rules::{check_display_name, check_roles},
};
use crate::{
    error::AuthError,
    passwords::{self, HashPool, Password},
    revocation::Revocations,
    storage::{
        self, ClientInfo, EventKind, Store, UserRecord, audit::AuditKind, audit::AuditRecord,
        resets::ResetPurpose, users::NewUser,
    },
};

/// What [`create_account`] needs.
#[derive(Debug)]
pub struct NewAccount<'a> {
    /// Email as typed.
    pub email: &'a str,
    /// Password.
    pub password: Password,
    /// Display name.
    pub display_name: &'a str,
    /// Roles to grant.
    pub roles: Vec<String>,
}

/// Who creates an account, for the audit trail.
#[derive(Debug, Clone, Copy)]
pub(super) struct Creator<'a> {
    pub kind: AuditKind,
    pub actor_id: Option<&'a str>,
    pub client: &'a ClientInfo,
}

/// Everything an account creation needs, password optional (an invite has none).
#[derive(Debug)]
pub(super) struct AccountSpec<'a> {
    pub email: &'a str,
    pub password: Option<Password>,
    pub display_name: &'a str,
    pub roles: Vec<String>,
    pub email_verified: bool,
    /// A service account (no password; API keys).
    pub service_account: bool,
    /// Admin-owned metadata.
    pub metadata: storage::organizations::Metadata,
}

/// Creates an account with a password and writes `UserCreated` in the same transaction.
/// Used by the CLI's `create-user`/`create-admin` (audited as an admin action without actor).
#[tracing::instrument(skip_all)]
pub async fn create_account(
    store: &Store,
    hasher: &HashPool,
    min_password_length: usize,
    new: NewAccount<'_>,
) -> Result<UserRecord, AuthError> {
    let client = ClientInfo {
        addr: None,
        user_agent: Some("auth-server cli".into()),
    };
    let spec = AccountSpec {
        email: new.email,
        password: Some(new.password),
        display_name: new.display_name,
        roles: new.roles,
        email_verified: false,
        service_account: false,
        metadata: Default::default(),
    };
    let creator = Creator {
        kind: AuditKind::AdminUserCreated,
        actor_id: None,
        client: &client,
    };
    // A new account revokes nothing, so no server's revocation set is involved.
    let revocations = Revocations::new();
    let (user, change) =
        create_account_in(store, hasher, &revocations, min_password_length, spec).await?;
    finish_creation(change, &user, creator).await?;
    Ok(user)
}

/// Validates and inserts the account and its `UserCreated` event in a new [`Change`], for the
/// caller to add to (an invite token) and finish with [`finish_creation`].
async fn create_account_in(
    store: &Store,
    hasher: &HashPool,
    revocations: &Revocations,
    min_password_length: usize,
    spec: AccountSpec<'_>,
) -> Result<(UserRecord, Change), AuthError> {
    let email = passwords::normalize_email(spec.email)?;
    if let Some(password) = &spec.password {
        passwords::check_new_password(password.expose(), &email, min_password_length)?;
    }
    let display_name = check_display_name(spec.display_name)?;
    let roles = check_roles(spec.roles)?;
    super::rules::check_metadata(&spec.metadata)?;
    // Save a hash in the common case; the unique index still decides under a race.
    if storage::users::find_user_by_email(store.conn(), &email)
        .await?
        .is_some()
    {
        return Err(AuthError::EmailTaken);
    }
    let hash = match spec.password {
        Some(password) => Some(hasher.hash(password).await?),
        None => None,
    };
    let mut change = Change::begin(store, revocations).await?;
    let user = storage::users::create_user(
        change.db(),
        NewUser {
            email,
            display_name,
            roles,
            password_hash: hash,
            email_verified: spec.email_verified,
            created_at: None,
            external_id: None,
            service_account: spec.service_account,
            metadata: spec.metadata,
        },
    )
    .await
    .map_err(|e| match e {
        storage::StorageError::Duplicate(_) => AuthError::EmailTaken,
        other => other.into(),
    })?;
    change.event(EventKind::UserCreated, &user);
    Ok((user, change))
}

/// Audits a creation and commits it.
async fn finish_creation(
    change: Change,
    user: &UserRecord,
    creator: Creator<'_>,
) -> Result<(), AuthError> {
    let mut record = AuditRecord::new(creator.kind, creator.client)
        .subject(&user.id)
        .detail(json!({ "email": user.email, "roles": user.roles }));
    if let Some(actor) = creator.actor_id {
        record = record.actor(actor);
    }
    change.audit(record).await?;
    change.commit().await?;
    tracing::info!(user_id = %user.id, "user created");
    Ok(())
}

impl Accounts {
    /// Creates an account (password optional), with its event and audit record; an invite
    /// also gets a single-use token for setting the password.
    pub(super) async fn create_account(
        &self,
        spec: AccountSpec<'_>,
        creator: Creator<'_>,
        invite: bool,
    ) -> Result<(UserRecord, Option<IssuedReset>), AuthError> {
        let d = &self.d;
        let (user, change) = create_account_in(
            &d.store,
            &d.hasher,
            &d.revocations,
            d.settings.min_password_length,
            spec,
        )
        .await?;
        let issued = if invite {
            Some(
                self.issue_reset_in(
                    &change,
                    &user,
                    ResetPurpose::Invite,
                    creator.actor_id,
                    creator.client,
                )
                .await?,
            )
        } else {
            None
        };
        finish_creation(change, &user, creator).await?;
        Ok((user, issued))
    }

    /// Self-registration.
    pub async fn register(
        &self,
        email: &str,
        password: Password,
        display_name: &str,
        client: &ClientInfo,
    ) -> Result<UserRecord, AuthError> {
        if !self.d.settings.allow_registration {
            return Err(AuthError::RegistrationDisabled);
        }
        let spec = AccountSpec {
            email,
            password: Some(password),
            display_name,
            roles: Vec::new(),
            email_verified: false,
            service_account: false,
            metadata: Default::default(),
        };
        let creator = Creator {
            kind: AuditKind::UserRegistered,
            actor_id: None,
            client,
        };
        let (user, _) = self.create_account(spec, creator, false).await?;
        Ok(user)
    }
}
