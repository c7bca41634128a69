//! Service accounts and their API keys: creation, issue, list, revoke (each with its event and
//! audit record in one [`Change`]), and the check of a key presented as a bearer credential,
//! in memory (see `apikeys.rs`).
//!
//! A service account is a user with `service_account` set and no password: a password login
//! with its email fails as for any account without one (and a lockout of that email touches
//! nothing its keys do). Keys belong to service accounts only.

use serde_json::json;

use super::{
    Accounts, Actor, Admin,
    rules::check_user_id,
    signup::{AccountSpec, Creator},
};
use crate::{
    apikeys::{KeyRefusal, NewApiKey},
    clock,
    error::AuthError,
    storage::{
        self, EventKind, UserRecord,
        api_keys::{ApiKeyRecord, LiveKey},
        audit::AuditKind,
    },
    tokens::{AccessClaims, TokenError},
};

/// Longest key name.
const MAX_KEY_NAME_BYTES: usize = 128;

fn check_key_name(name: &str) -> Result<String, AuthError> {
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_KEY_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(AuthError::InvalidArgument(format!(
            "name must be 1 to {MAX_KEY_NAME_BYTES} bytes without control characters"
        )));
    }
    Ok(name.to_owned())
}

fn check_key_id(id: &str) -> Result<String, AuthError> {
    let id = id.trim();
    if id.is_empty() {
        return Err(AuthError::InvalidArgument("key_id is required".into()));
    }
    uuid::Uuid::try_parse(id)
        .map(|u| u.to_string())
        .map_err(|_| AuthError::InvalidArgument("key_id must be a UUID".into()))
}

impl Accounts {
    /// The claims an API key stands for: its service account's id and current roles, no
    /// session (`session_id` is empty), the key id as `token_id`, the key's expiry (or a far
    /// one). Refused keys are UNAUTHENTICATED with their reason; a key over its own rate limit
    /// is RESOURCE_EXHAUSTED.
    pub(super) fn validate_api_key(&self, presented: &str) -> Result<AccessClaims, AuthError> {
        let principal = self
            .d
            .api_keys
            .check(presented)
            .map_err(|refusal| match refusal {
                KeyRefusal::Invalid => TokenError::ApiKeyInvalid.into(),
                KeyRefusal::Revoked => TokenError::ApiKeyRevoked.into(),
                KeyRefusal::Expired => TokenError::ApiKeyExpired.into(),
                KeyRefusal::AccountDisabled => TokenError::AccountDisabled.into(),
                KeyRefusal::RateLimited(retry_after) => AuthError::RateLimited {
                    retry_after: retry_after.max(std::time::Duration::from_millis(1)),
                },
            })?;
        let expires_at = principal
            .expires_at
            .and_then(clock::from_millis)
            .unwrap_or_else(|| clock::now() + time::Duration::days(3650));
        Ok(AccessClaims {
            user_id: principal.user_id,
            session_id: String::new(),
            roles: principal.roles,
            expires_at,
            token_id: principal.key_id,
            memberships: Default::default(),
        })
    }
}

impl Admin {
    /// Creates a service account: no password, `UserCreated` and an audit record.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn create_service_account(
        &self,
        actor: &Actor,
        email: &str,
        display_name: &str,
        roles: Vec<String>,
    ) -> Result<UserRecord, AuthError> {
        let spec = AccountSpec {
            email,
            password: None,
            display_name,
            roles,
            email_verified: false,
            service_account: true,
            metadata: Default::default(),
        };
        let creator = Creator {
            kind: AuditKind::AdminServiceAccountCreated,
            actor_id: Some(&actor.user_id),
            client: &actor.client,
        };
        let (user, _) = self.accounts.create_account(spec, creator, false).await?;
        tracing::info!(user_id = %user.id, "service account created");
        Ok(user)
    }

    /// Issues a key for a service account: returns the key (shown once) and its record.
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn issue_api_key(
        &self,
        actor: &Actor,
        user_id: &str,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<(NewApiKey, ApiKeyRecord), AuthError> {
        let user_id = check_user_id(user_id)?;
        let name = check_key_name(name)?;
        let now = clock::now_millis();
        if expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::InvalidArgument(
                "expires_at must be in the future".into(),
            ));
        }
        let user = self.find_user(user_id).await?;
        if !user.service_account {
            return Err(AuthError::FailedPrecondition {
                reason: "NOT_A_SERVICE_ACCOUNT",
                message: "API keys are issued to service accounts only (CreateServiceAccount)",
            });
        }
        let key = NewApiKey::generate();
        let record = ApiKeyRecord {
            id: key.id.clone(),
            user_id: user.id.clone(),
            name,
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        let mut change = self.d().begin().await?;
        storage::api_keys::insert_key(change.db(), &record, key.hash(), Some(&actor.user_id))
            .await?;
        change.api_key_event(EventKind::ApiKeyIssued, &user, &key.id);
        let audit = Self::audit(actor, AuditKind::AdminApiKeyIssued, &user.id).detail(json!({
            "key_id": key.id,
            "name": record.name,
            "expires_at": expires_at,
        }));
        change.audit(audit).await?;
        change.commit().await?;
        // This replica accepts it at once; the others when the event reaches them.
        self.d().api_keys.insert(&LiveKey {
            key: record.clone(),
            secret_hash: key.hash(),
            user,
        });
        tracing::info!(key_id = %key.id, "api key issued");
        Ok((key, record))
    }

    /// A service account's keys, newest first.
    pub async fn list_api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyRecord>, AuthError> {
        let user = self.find_user(check_user_id(user_id)?).await?;
        Ok(storage::api_keys::list_keys(self.d().store.conn(), &user.id).await?)
    }

    /// Revokes a key (again is fine: the record comes back unchanged, no second event).
    #[tracing::instrument(skip_all, fields(actor = %actor.user_id))]
    pub async fn revoke_api_key(
        &self,
        actor: &Actor,
        key_id: &str,
    ) -> Result<ApiKeyRecord, AuthError> {
        let key_id = check_key_id(key_id)?;
        let mut change = self.d().begin().await?;
        let key = storage::api_keys::find_key(change.db(), &key_id)
            .await?
            .ok_or(AuthError::NotFound("API key"))?;
        if key.revoked_at.is_some() {
            return Ok(key);
        }
        let now = clock::now_millis();
        if !storage::api_keys::revoke_key(change.db(), &key_id, now).await? {
            // A concurrent revoke won; it wrote the event.
            drop(change);
            return storage::api_keys::find_key(self.d().store.conn(), &key_id)
                .await?
                .ok_or(AuthError::NotFound("API key"));
        }
        let user = storage::users::find_user(change.db(), &key.user_id)
            .await?
            .ok_or(AuthError::NotFound("user"))?;
        change.api_key_event(EventKind::ApiKeyRevoked, &user, &key_id);
        let audit = Self::audit(actor, AuditKind::AdminApiKeyRevoked, &user.id)
            .detail(json!({ "key_id": key_id, "name": key.name }));
        change.audit(audit).await?;
        change.commit().await?;
        self.d().api_keys.revoke(&key_id);
        tracing::info!(key_id = %key_id, "api key revoked");
        Ok(ApiKeyRecord {
            revoked_at: Some(now),
            ..key
        })
    }
}
