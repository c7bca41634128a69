//! Users and their password hashes.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait as _, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use serde::{Deserialize, Serialize};

pub use super::imports::NewUser;
use super::{
    StorageError, StorageResult,
    entities::{credentials, users},
    imports::insert_users,
    values::{like_escape, roles_json},
};
use crate::clock::now_millis;

/// A PHC-format password hash as stored: prints as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(pub String);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

/// A user's public state, as events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// UUID.
    pub id: String,
    /// Normalized email.
    pub email: String,
    /// Whether the email was verified.
    pub email_verified: bool,
    /// Display name.
    pub display_name: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Disabled accounts cannot log in.
    pub disabled: bool,
    /// Per-user version, incremented by every change.
    pub version: i64,
    /// Creation time, unix ms.
    pub created_at: i64,
    /// The user's id in the system it was imported from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// A service account: no password login, API keys instead.
    #[serde(default)]
    pub service_account: bool,
    /// Admin-owned metadata (a JSON object).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: super::values::Metadata,
}

impl TryFrom<users::Model> for UserRecord {
    type Error = StorageError;

    fn try_from(model: users::Model) -> Result<Self, Self::Error> {
        let roles = serde_json::from_str(&model.roles)
            .map_err(|_| StorageError::Corrupt(format!("roles of user {}", model.id)))?;
        Ok(Self {
            id: model.id,
            email: model.email,
            email_verified: model.email_verified,
            display_name: model.display_name,
            roles,
            disabled: model.disabled,
            version: model.version,
            created_at: model.created_at,
            external_id: model.external_id,
            service_account: model.service_account,
            metadata: super::values::parse_metadata(model.metadata.as_deref(), "a user")?,
        })
    }
}

/// The user with this normalized email.
pub async fn find_user_by_email(
    conn: &impl ConnectionTrait,
    email: &str,
) -> StorageResult<Option<UserRecord>> {
    users::Entity::find()
        .filter(users::Column::Email.eq(email))
        .filter(users::Column::DeletedAt.is_null())
        .one(conn)
        .await?
        .map(UserRecord::try_from)
        .transpose()
}

/// The user with this id (`None` for unknown and deleted users).
pub async fn find_user(conn: &impl ConnectionTrait, id: &str) -> StorageResult<Option<UserRecord>> {
    users::Entity::find_by_id(id.to_owned())
        .filter(users::Column::DeletedAt.is_null())
        .one(conn)
        .await?
        .map(UserRecord::try_from)
        .transpose()
}

/// The user's password hash, if any.
pub async fn find_password_hash(
    conn: &impl ConnectionTrait,
    user_id: &str,
) -> StorageResult<Option<PasswordHash>> {
    Ok(credentials::Entity::find_by_id(user_id.to_owned())
        .one(conn)
        .await?
        .map(|c| PasswordHash(c.password_hash)))
}

/// Inserts a user (version 1) and its credential. A taken email is `StorageError::Duplicate`.
pub async fn create_user(conn: &impl ConnectionTrait, new: NewUser) -> StorageResult<UserRecord> {
    insert_users(conn, vec![new])
        .await?
        .pop()
        .ok_or_else(|| StorageError::Corrupt("insert returned no user".into()))
}

/// Replaces the password hash, but only if it is still `expected` (so two concurrent changes
/// cannot both win), and bumps the user's version. `None` if the hash changed meanwhile.
pub async fn update_password(
    conn: &impl ConnectionTrait,
    user_id: &str,
    expected: &PasswordHash,
    new_hash: PasswordHash,
) -> StorageResult<Option<UserRecord>> {
    let now = now_millis();
    if !swap_hash(conn, user_id, expected, new_hash, Some(now)).await? {
        return Ok(None);
    }
    bump_version(conn, user_id, now).await
}

/// Replaces the stored hash with a new hash of the same password (a re-hash with the current
/// parameters), only if it is still `expected`. The public state (version, events) and the
/// credential's change time are untouched: the password did not change. `false` if the hash
/// changed meanwhile.
pub async fn replace_hash(
    conn: &impl ConnectionTrait,
    user_id: &str,
    expected: &PasswordHash,
    new_hash: PasswordHash,
) -> StorageResult<bool> {
    swap_hash(conn, user_id, expected, new_hash, None).await
}

/// Sets the hash where it is still `expected` (and the change time, if given).
async fn swap_hash(
    conn: &impl ConnectionTrait,
    user_id: &str,
    expected: &PasswordHash,
    new_hash: PasswordHash,
    changed_at: Option<i64>,
) -> StorageResult<bool> {
    let mut update = credentials::Entity::update_many()
        .col_expr(credentials::Column::PasswordHash, Expr::value(new_hash.0))
        .filter(credentials::Column::UserId.eq(user_id))
        .filter(credentials::Column::PasswordHash.eq(expected.0.as_str()));
    if let Some(at) = changed_at {
        update = update.col_expr(credentials::Column::UpdatedAt, Expr::value(at));
    }
    Ok(update.exec(conn).await?.rows_affected == 1)
}

async fn bump_version(
    conn: &impl ConnectionTrait,
    user_id: &str,
    now: i64,
) -> StorageResult<Option<UserRecord>> {
    users::Entity::update_many()
        .col_expr(
            users::Column::Version,
            Expr::col(users::Column::Version).add(1),
        )
        .col_expr(users::Column::UpdatedAt, Expr::value(now))
        .filter(users::Column::Id.eq(user_id))
        .exec(conn)
        .await?;
    find_user(conn, user_id).await
}

/// Up to `limit` users with an id greater than `after_id`, by id (keyset pagination).
pub async fn find_users_after(
    conn: &impl ConnectionTrait,
    after_id: &str,
    limit: u64,
) -> StorageResult<Vec<UserRecord>> {
    users::Entity::find()
        .filter(users::Column::Id.gt(after_id))
        .filter(users::Column::DeletedAt.is_null())
        .order_by_asc(users::Column::Id)
        .limit(limit)
        .all(conn)
        .await?
        .into_iter()
        .map(UserRecord::try_from)
        .collect()
}

/// Number of users.
pub async fn count_users(conn: &impl ConnectionTrait) -> StorageResult<u64> {
    Ok(users::Entity::find()
        .filter(users::Column::DeletedAt.is_null())
        .count(conn)
        .await?)
}

/// Sets the display name and bumps the version; the user's new state, or `None` if unknown.
pub async fn update_display_name(
    conn: &impl ConnectionTrait,
    user_id: &str,
    display_name: &str,
) -> StorageResult<Option<UserRecord>> {
    users::Entity::update_many()
        .col_expr(users::Column::DisplayName, Expr::value(display_name))
        .filter(users::Column::Id.eq(user_id))
        .exec(conn)
        .await?;
    bump_version(conn, user_id, now_millis()).await
}

/// What `find_users_page` filters on.
#[derive(Debug, Default, Clone)]
pub struct UserFilter {
    /// Lower-case email prefix.
    pub email_prefix: Option<String>,
    /// A role the user must hold.
    pub role: Option<String>,
    /// Only disabled (`true`) or enabled (`false`) users.
    pub disabled: Option<bool>,
}

/// Up to `limit` live users with an id greater than `after_id` matching `filter`, by id.
pub async fn find_users_page(
    conn: &impl ConnectionTrait,
    after_id: &str,
    limit: u64,
    filter: &UserFilter,
) -> StorageResult<Vec<UserRecord>> {
    use sea_orm::sea_query::LikeExpr;
    let mut query = users::Entity::find()
        .filter(users::Column::Id.gt(after_id))
        .filter(users::Column::DeletedAt.is_null());
    if let Some(prefix) = &filter.email_prefix {
        let pattern = format!("{}%", like_escape(prefix));
        query =
            query.filter(Expr::col(users::Column::Email).like(LikeExpr::new(pattern).escape('\\')));
    }
    if let Some(role) = &filter.role {
        // Roles are a JSON array of names that never contain a quote.
        let pattern = format!("%\"{}\"%", like_escape(role));
        query =
            query.filter(Expr::col(users::Column::Roles).like(LikeExpr::new(pattern).escape('\\')));
    }
    if let Some(disabled) = filter.disabled {
        query = query.filter(users::Column::Disabled.eq(disabled));
    }
    query
        .order_by_asc(users::Column::Id)
        .limit(limit)
        .all(conn)
        .await?
        .into_iter()
        .map(UserRecord::try_from)
        .collect()
}

/// The new values of an admin update; `None` leaves a field alone.
#[derive(Debug, Default, Clone)]
pub struct UserChanges {
    /// New normalized email.
    pub email: Option<String>,
    /// New display name.
    pub display_name: Option<String>,
    /// New verification state.
    pub email_verified: Option<bool>,
    /// New roles (sorted, deduplicated).
    pub roles: Option<Vec<String>>,
    /// New disabled state.
    pub disabled: Option<bool>,
    /// New metadata.
    pub metadata: Option<super::values::Metadata>,
}

/// Applies `changes` if the user's version is still `expected_version`, adding `bumps` to it
/// (one per event the change writes). `None` if the user is gone or its version moved on.
/// A taken email is `StorageError::Duplicate`.
pub async fn update_user(
    conn: &impl ConnectionTrait,
    user_id: &str,
    expected_version: i64,
    bumps: i64,
    changes: &UserChanges,
) -> StorageResult<Option<UserRecord>> {
    let now = now_millis();
    let mut update = users::Entity::update_many()
        .col_expr(
            users::Column::Version,
            Expr::col(users::Column::Version).add(bumps),
        )
        .col_expr(users::Column::UpdatedAt, Expr::value(now));
    if let Some(email) = &changes.email {
        update = update.col_expr(users::Column::Email, Expr::value(email.as_str()));
    }
    if let Some(name) = &changes.display_name {
        update = update.col_expr(users::Column::DisplayName, Expr::value(name.as_str()));
    }
    if let Some(verified) = changes.email_verified {
        update = update.col_expr(users::Column::EmailVerified, Expr::value(verified));
    }
    if let Some(roles) = &changes.roles {
        update = update.col_expr(users::Column::Roles, Expr::value(roles_json(roles)?));
    }
    if let Some(disabled) = changes.disabled {
        update = update.col_expr(users::Column::Disabled, Expr::value(disabled));
    }
    if let Some(metadata) = &changes.metadata {
        let json = super::values::metadata_json(metadata)?;
        update = update.col_expr(users::Column::Metadata, Expr::value(json));
    }
    let result = update
        .filter(users::Column::Id.eq(user_id))
        .filter(users::Column::Version.eq(expected_version))
        .filter(users::Column::DeletedAt.is_null())
        .exec(conn)
        .await?;
    if result.rows_affected != 1 {
        return Ok(None);
    }
    find_user(conn, user_id).await
}

/// Ids of the enabled users holding role `admin`. On PostgreSQL their rows stay locked until the
/// transaction ends, so two concurrent demotions cannot both see "another admin is left".
pub async fn find_enabled_admin_ids_for_update(
    conn: &impl ConnectionTrait,
) -> StorageResult<Vec<String>> {
    use sea_orm::sea_query::LikeExpr;
    let mut query = users::Entity::find()
        .select_only()
        .column(users::Column::Id)
        .filter(users::Column::DeletedAt.is_null())
        .filter(users::Column::Disabled.eq(false))
        .filter(Expr::col(users::Column::Roles).like(LikeExpr::new("%\"admin\"%")));
    if super::Store::locks_rows(conn) {
        query = query.lock_exclusive();
    }
    Ok(query.into_tuple().all(conn).await?)
}

/// Turns a user into a tombstone: email released, disabled, credentials erased, version
/// bumped. Returns the state the `UserDeleted` event carries (the last public state, disabled).
pub async fn delete_user(
    conn: &impl ConnectionTrait,
    user: &UserRecord,
) -> StorageResult<Option<UserRecord>> {
    let now = now_millis();
    let result = users::Entity::update_many()
        // Not a valid address, so it can never match a login and never collides.
        .col_expr(
            users::Column::Email,
            Expr::value(format!("#deleted:{}", user.id)),
        )
        .col_expr(users::Column::Disabled, Expr::value(true))
        .col_expr(users::Column::Metadata, Expr::value(Option::<String>::None))
        .col_expr(
            users::Column::ExternalId,
            Expr::value(Option::<String>::None),
        )
        .col_expr(users::Column::DeletedAt, Expr::value(now))
        .col_expr(users::Column::UpdatedAt, Expr::value(now))
        .col_expr(
            users::Column::Version,
            Expr::col(users::Column::Version).add(1),
        )
        .filter(users::Column::Id.eq(user.id.as_str()))
        .filter(users::Column::DeletedAt.is_null())
        .exec(conn)
        .await?;
    if result.rows_affected != 1 {
        return Ok(None);
    }
    credentials::Entity::delete_by_id(user.id.clone())
        .exec(conn)
        .await?;
    Ok(Some(UserRecord {
        disabled: true,
        version: user.version + 1,
        external_id: None,
        ..user.clone()
    }))
}

/// Sets (or first sets, for an invite) the password hash and bumps the user's version.
pub async fn set_password(
    conn: &impl ConnectionTrait,
    user_id: &str,
    hash: PasswordHash,
) -> StorageResult<Option<UserRecord>> {
    use sea_orm::sea_query::OnConflict;
    let now = now_millis();
    credentials::Entity::insert(credentials::ActiveModel {
        user_id: Set(user_id.to_owned()),
        password_hash: Set(hash.0),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(credentials::Column::UserId)
            .update_columns([
                credentials::Column::PasswordHash,
                credentials::Column::UpdatedAt,
            ])
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    bump_version(conn, user_id, now).await
}

/// Whether the user has a password.
pub async fn has_password(conn: &impl ConnectionTrait, user_id: &str) -> StorageResult<bool> {
    Ok(credentials::Entity::find_by_id(user_id.to_owned())
        .count(conn)
        .await?
        > 0)
}

/// When the user last logged in and last set a password (`None`: never, or no password).
pub async fn find_login_times(
    conn: &impl ConnectionTrait,
    user_id: &str,
) -> StorageResult<(Option<i64>, Option<i64>)> {
    let last_login: Option<Option<i64>> = users::Entity::find_by_id(user_id.to_owned())
        .select_only()
        .column(users::Column::LastLoginAt)
        .into_tuple()
        .one(conn)
        .await?;
    let password_changed: Option<i64> = credentials::Entity::find_by_id(user_id.to_owned())
        .select_only()
        .column(credentials::Column::UpdatedAt)
        .into_tuple()
        .one(conn)
        .await?;
    Ok((last_login.flatten(), password_changed))
}
