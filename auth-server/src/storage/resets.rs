//! Password reset and invite tokens: only their SHA-256 is stored; each works once.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QuerySelect, sea_query::Expr,
};

use super::{StorageResult, entities::password_resets};

/// Why a reset token exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetPurpose {
    /// A forgotten password (self-service or admin).
    Reset,
    /// The first password of an account created without one.
    Invite,
}

impl ResetPurpose {
    fn as_str(self) -> &'static str {
        match self {
            ResetPurpose::Reset => "reset",
            ResetPurpose::Invite => "invite",
        }
    }
}

/// Stores a token hash.
pub async fn create_reset(
    conn: &impl ConnectionTrait,
    token_hash: String,
    user_id: &str,
    purpose: ResetPurpose,
    issued_by: Option<&str>,
    now: i64,
    expires_at: i64,
) -> StorageResult<()> {
    password_resets::ActiveModel {
        token_hash: Set(token_hash),
        user_id: Set(user_id.to_owned()),
        purpose: Set(purpose.as_str().to_owned()),
        issued_by: Set(issued_by.map(str::to_owned)),
        created_at: Set(now),
        expires_at: Set(expires_at),
        used_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Spends a live token: marks it used if it is unused and unexpired, and returns its user.
/// `None` if unknown, used or expired. Of concurrent spenders exactly one gets the user: on
/// PostgreSQL the others wait for the row lock and then see `used_at` set.
pub async fn spend_reset(
    conn: &impl ConnectionTrait,
    token_hash: &str,
    now: i64,
) -> StorageResult<Option<String>> {
    let result = password_resets::Entity::update_many()
        .col_expr(password_resets::Column::UsedAt, Expr::value(now))
        .filter(password_resets::Column::TokenHash.eq(token_hash))
        .filter(password_resets::Column::UsedAt.is_null())
        .filter(password_resets::Column::ExpiresAt.gt(now))
        .exec(conn)
        .await?;
    if result.rows_affected != 1 {
        return Ok(None);
    }
    Ok(password_resets::Entity::find_by_id(token_hash.to_owned())
        .select_only()
        .column(password_resets::Column::UserId)
        .into_tuple()
        .one(conn)
        .await?)
}

/// Marks every other unused token of the user used (after a reset, older mails are void).
pub async fn spend_user_resets(
    conn: &impl ConnectionTrait,
    user_id: &str,
    now: i64,
) -> StorageResult<()> {
    password_resets::Entity::update_many()
        .col_expr(password_resets::Column::UsedAt, Expr::value(now))
        .filter(password_resets::Column::UserId.eq(user_id))
        .filter(password_resets::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// Deletes tokens that expired before `cutoff` (housekeeping).
pub async fn delete_expired_resets(conn: &impl ConnectionTrait, cutoff: i64) -> StorageResult<u64> {
    let result = password_resets::Entity::delete_many()
        .filter(password_resets::Column::ExpiresAt.lt(cutoff))
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}

/// A stored reset token.
#[derive(Debug, Clone)]
pub struct ResetRecord {
    /// The user.
    pub user_id: String,
    /// Expiry.
    pub expires_at: i64,
    /// When used.
    pub used_at: Option<i64>,
}

/// The reset token with this hash (not spent by looking).
pub async fn find_reset(
    conn: &impl ConnectionTrait,
    token_hash: &str,
) -> StorageResult<Option<ResetRecord>> {
    Ok(password_resets::Entity::find_by_id(token_hash.to_owned())
        .one(conn)
        .await?
        .map(|m| ResetRecord {
            user_id: m.user_id,
            expires_at: m.expires_at,
            used_at: m.used_at,
        }))
}
