//! API keys of service accounts: only the SHA-256 of each key is stored.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, sea_query::Expr,
};

use super::{
    StorageResult, UserRecord,
    entities::{api_keys, users},
};

/// A key as listed (no hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// UUID.
    pub id: String,
    /// The service account.
    pub user_id: String,
    /// What the key is for.
    pub name: String,
    /// Issued, unix ms.
    pub created_at: i64,
    /// Stops working at, unix ms.
    pub expires_at: Option<i64>,
    /// Revoked at, unix ms.
    pub revoked_at: Option<i64>,
}

impl From<api_keys::Model> for ApiKeyRecord {
    fn from(m: api_keys::Model) -> Self {
        Self {
            id: m.id,
            user_id: m.user_id,
            name: m.name,
            created_at: m.created_at,
            expires_at: m.expires_at,
            revoked_at: m.revoked_at,
        }
    }
}

/// A key that can authenticate, with what the in-memory check needs.
#[derive(Clone)]
pub struct LiveKey {
    /// The key.
    pub key: ApiKeyRecord,
    /// Hex SHA-256 of the whole key.
    pub secret_hash: String,
    /// Its service account as it is now.
    pub user: UserRecord,
}

impl std::fmt::Debug for LiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveKey")
            .field("key", &self.key)
            .field("secret_hash", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Stores a new key.
pub async fn insert_key(
    conn: &impl ConnectionTrait,
    key: &ApiKeyRecord,
    secret_hash: String,
    created_by: Option<&str>,
) -> StorageResult<()> {
    api_keys::ActiveModel {
        id: Set(key.id.clone()),
        user_id: Set(key.user_id.clone()),
        name: Set(key.name.clone()),
        secret_hash: Set(secret_hash),
        created_at: Set(key.created_at),
        created_by: Set(created_by.map(str::to_owned)),
        expires_at: Set(key.expires_at),
        revoked_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// The user's keys, newest first.
pub async fn list_keys(
    conn: &impl ConnectionTrait,
    user_id: &str,
) -> StorageResult<Vec<ApiKeyRecord>> {
    Ok(api_keys::Entity::find()
        .filter(api_keys::Column::UserId.eq(user_id))
        .order_by_desc(api_keys::Column::CreatedAt)
        .order_by_desc(api_keys::Column::Id)
        .all(conn)
        .await?
        .into_iter()
        .map(ApiKeyRecord::from)
        .collect())
}

/// One key.
pub async fn find_key(
    conn: &impl ConnectionTrait,
    key_id: &str,
) -> StorageResult<Option<ApiKeyRecord>> {
    Ok(api_keys::Entity::find_by_id(key_id.to_owned())
        .one(conn)
        .await?
        .map(ApiKeyRecord::from))
}

/// Marks the key revoked at `now` if it was live; whether it was.
pub async fn revoke_key(
    conn: &impl ConnectionTrait,
    key_id: &str,
    now: i64,
) -> StorageResult<bool> {
    let result = api_keys::Entity::update_many()
        .col_expr(api_keys::Column::RevokedAt, Expr::value(now))
        .filter(api_keys::Column::Id.eq(key_id))
        .filter(api_keys::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Every unrevoked key (of `key_id` only, if given) with its live service account.
pub async fn live_keys(
    conn: &impl ConnectionTrait,
    key_id: Option<&str>,
) -> StorageResult<Vec<LiveKey>> {
    let mut query = api_keys::Entity::find().filter(api_keys::Column::RevokedAt.is_null());
    if let Some(id) = key_id {
        query = query.filter(api_keys::Column::Id.eq(id));
    }
    let keys = query.all(conn).await?;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut owners: Vec<&str> = keys.iter().map(|k| k.user_id.as_str()).collect();
    owners.sort_unstable();
    owners.dedup();
    let owners: std::collections::HashMap<String, UserRecord> = users::Entity::find()
        .filter(users::Column::Id.is_in(owners))
        .filter(users::Column::DeletedAt.is_null())
        .all(conn)
        .await?
        .into_iter()
        .map(|m| UserRecord::try_from(m).map(|u| (u.id.clone(), u)))
        .collect::<Result<_, _>>()?;
    Ok(keys
        .into_iter()
        .filter_map(|k| {
            let user = owners.get(&k.user_id)?.clone();
            let secret_hash = k.secret_hash.clone();
            Some(LiveKey {
                key: k.into(),
                secret_hash,
                user,
            })
        })
        .collect())
}
