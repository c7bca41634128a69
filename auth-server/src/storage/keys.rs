//! Signing key rows.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    sea_query::Expr,
};

use super::{StorageResult, entities::signing_keys};

/// A stored key.
#[derive(Clone)]
pub struct KeyRow {
    /// Key id.
    pub kid: String,
    /// Public PASERK.
    pub public_paserk: String,
    /// Sealed secret PASERK.
    pub secret_sealed: String,
    /// Creation, unix ms.
    pub created_at: i64,
    /// Signing start, unix ms.
    pub signing_from: i64,
    /// Retirement, unix ms.
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("kid", &self.kid)
            .field("signing_from", &self.signing_from)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// Every key, oldest signing start first.
pub async fn find_keys(conn: &impl ConnectionTrait) -> StorageResult<Vec<KeyRow>> {
    Ok(signing_keys::Entity::find()
        .order_by_asc(signing_keys::Column::SigningFrom)
        .order_by_asc(signing_keys::Column::CreatedAt)
        .order_by_asc(signing_keys::Column::Kid)
        .all(conn)
        .await?
        .into_iter()
        .map(|m| KeyRow {
            kid: m.kid,
            public_paserk: m.public_paserk,
            secret_sealed: m.secret_sealed,
            created_at: m.created_at,
            signing_from: m.signing_from,
            retired_at: m.retired_at,
        })
        .collect())
}

/// Inserts a key unless its kid exists (importing the same file twice is harmless).
pub async fn create_key(conn: &impl ConnectionTrait, row: KeyRow) -> StorageResult<bool> {
    super::insert_if_absent(
        conn,
        signing_keys::ActiveModel {
            kid: Set(row.kid),
            public_paserk: Set(row.public_paserk),
            secret_sealed: Set(row.secret_sealed),
            created_at: Set(row.created_at),
            signing_from: Set(row.signing_from),
            retired_at: Set(row.retired_at),
        },
        signing_keys::Column::Kid,
    )
    .await
}

/// Retires a key; `false` if unknown or retired already.
pub async fn retire_key(conn: &impl ConnectionTrait, kid: &str, now: i64) -> StorageResult<bool> {
    let result = signing_keys::Entity::update_many()
        .col_expr(signing_keys::Column::RetiredAt, Expr::value(now))
        .filter(signing_keys::Column::Kid.eq(kid))
        .filter(signing_keys::Column::RetiredAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}
