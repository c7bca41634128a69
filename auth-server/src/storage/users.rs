//! Users and their password hashes.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait as _,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use serde::{Deserialize, Serialize};

use super::{
    StorageError, StorageResult,
    entities::{credentials, users},
    now_millis,
};
use crate::passwords::PasswordHash;

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
        })
    }
}

/// What `create_user` needs.
#[derive(Debug)]
pub struct NewUser {
    /// Normalized email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Password hash, if the account has a password.
    pub password_hash: Option<PasswordHash>,
}

fn roles_json(roles: &[String]) -> StorageResult<String> {
    serde_json::to_string(roles).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// The user with this normalized email.
pub async fn find_user_by_email(
    conn: &impl ConnectionTrait,
    email: &str,
) -> StorageResult<Option<UserRecord>> {
    users::Entity::find()
        .filter(users::Column::Email.eq(email))
        .one(conn)
        .await?
        .map(UserRecord::try_from)
        .transpose()
}

/// The user with this id.
pub async fn find_user(conn: &impl ConnectionTrait, id: &str) -> StorageResult<Option<UserRecord>> {
    users::Entity::find_by_id(id.to_owned())
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
    let now = now_millis();
    let id = uuid::Uuid::now_v7().to_string();
    users::ActiveModel {
        id: Set(id.clone()),
        email: Set(new.email.clone()),
        email_verified: Set(false),
        display_name: Set(new.display_name.clone()),
        roles: Set(roles_json(&new.roles)?),
        disabled: Set(false),
        version: Set(1),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(conn)
    .await?;
    if let Some(hash) = new.password_hash {
        credentials::ActiveModel {
            user_id: Set(id.clone()),
            password_hash: Set(hash.0),
            updated_at: Set(now),
        }
        .insert(conn)
        .await?;
    }
    Ok(UserRecord {
        id,
        email: new.email,
        email_verified: false,
        display_name: new.display_name,
        roles: new.roles,
        disabled: false,
        version: 1,
        created_at: now,
    })
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
    let updated = credentials::Entity::update_many()
        .col_expr(credentials::Column::PasswordHash, Expr::value(new_hash.0))
        .col_expr(credentials::Column::UpdatedAt, Expr::value(now))
        .filter(credentials::Column::UserId.eq(user_id))
        .filter(credentials::Column::PasswordHash.eq(expected.0.as_str()))
        .exec(conn)
        .await?;
    if updated.rows_affected != 1 {
        return Ok(None);
    }
    bump_version(conn, user_id, now).await
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
    Ok(users::Entity::find().count(conn).await?)
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
