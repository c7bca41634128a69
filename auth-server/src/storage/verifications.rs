//! Email verification tokens (migration 8): only their SHA-256 is stored, with the address the
//! token verifies; each works once, and only while the account still has that address.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, sea_query::Expr,
};

use super::StorageResult;

/// `email_verifications`: SHA-256 of every mailed verification token.
pub(super) mod email_verifications {
    use sea_orm::entity::prelude::*;

    /// A verification token's hash. Its `Debug` hides the hash and the address.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "email_verifications")]
    pub struct Model {
        /// Hex SHA-256 of the token.
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_hash: String,
        /// The user.
        pub user_id: String,
        /// The normalized address the token was mailed to.
        pub email: String,
        /// Issue time.
        pub created_at: i64,
        /// Expiry.
        pub expires_at: i64,
        /// Set when used (or voided by a newer token).
        pub used_at: Option<i64>,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("EmailVerification")
                .field("token_hash", &"[redacted]")
                .field("user_id", &self.user_id)
                .field("used_at", &self.used_at)
                .finish_non_exhaustive()
        }
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use email_verifications::{Column, Entity};

/// Stores a token hash for `email`.
pub async fn create_verification(
    conn: &impl ConnectionTrait,
    token_hash: String,
    user_id: &str,
    email: &str,
    now: i64,
    expires_at: i64,
) -> StorageResult<()> {
    email_verifications::ActiveModel {
        token_hash: Set(token_hash),
        user_id: Set(user_id.to_owned()),
        email: Set(email.to_owned()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        used_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// A spent verification token: whose, and for which address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpentVerification {
    /// The user.
    pub user_id: String,
    /// The address it verifies.
    pub email: String,
}

/// Spends a live token: marks it used if it is unused and unexpired. `None` if unknown, used
/// or expired. Of concurrent spenders exactly one gets it (the update is conditional).
pub async fn spend_verification(
    conn: &impl ConnectionTrait,
    token_hash: &str,
    now: i64,
) -> StorageResult<Option<SpentVerification>> {
    let result = Entity::update_many()
        .col_expr(Column::UsedAt, Expr::value(now))
        .filter(Column::TokenHash.eq(token_hash))
        .filter(Column::UsedAt.is_null())
        .filter(Column::ExpiresAt.gt(now))
        .exec(conn)
        .await?;
    if result.rows_affected != 1 {
        return Ok(None);
    }
    Ok(Entity::find_by_id(token_hash.to_owned())
        .one(conn)
        .await?
        .map(|m| SpentVerification {
            user_id: m.user_id,
            email: m.email,
        }))
}

/// Voids every unused token of the user (a newer one was mailed, the address changed, or it
/// was verified).
pub async fn void_user_verifications(
    conn: &impl ConnectionTrait,
    user_id: &str,
    now: i64,
) -> StorageResult<()> {
    Entity::update_many()
        .col_expr(Column::UsedAt, Expr::value(now))
        .filter(Column::UserId.eq(user_id))
        .filter(Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// When the user's newest token was issued, if any.
pub async fn latest_verification_at(
    conn: &impl ConnectionTrait,
    user_id: &str,
) -> StorageResult<Option<i64>> {
    Ok(Entity::find()
        .select_only()
        .column(Column::CreatedAt)
        .filter(Column::UserId.eq(user_id))
        .order_by_desc(Column::CreatedAt)
        .limit(1)
        .into_tuple()
        .one(conn)
        .await?)
}

/// Deletes tokens that expired before `cutoff` (housekeeping).
pub async fn delete_expired_verifications(
    conn: &impl ConnectionTrait,
    cutoff: i64,
) -> StorageResult<u64> {
    let result = Entity::delete_many()
        .filter(Column::ExpiresAt.lt(cutoff))
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}

/// Deletes every token of the user, spent or not (account deletion: they hold its address).
pub async fn delete_user_verifications(
    conn: &impl ConnectionTrait,
    user_id: &str,
) -> StorageResult<()> {
    Entity::delete_many()
        .filter(Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Deletes one token (its mail never went out).
pub async fn delete_verification(
    conn: &impl ConnectionTrait,
    token_hash: &str,
) -> StorageResult<()> {
    Entity::delete_by_id(token_hash.to_owned())
        .exec(conn)
        .await?;
    Ok(())
}
