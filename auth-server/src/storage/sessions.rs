//! Sessions and their refresh tokens.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QuerySelect, sea_query::Expr,
};

use super::{
    ClientInfo, StorageResult,
    entities::{refresh_tokens, sessions},
    truncate,
};

/// Why a session was revoked (stored in `sessions.revoked_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// The user logged out.
    Logout,
    /// A spent refresh token was presented again.
    RefreshReuse,
    /// The user changed the password from another session.
    PasswordChanged,
    /// A password reset token set a new password.
    PasswordReset,
    /// An admin disabled the user.
    UserDisabled,
    /// An admin deleted the user.
    UserDeleted,
    /// An admin revoked the session.
    Admin,
    /// The user ended it from another session (`RevokeMySessions`).
    User,
}

impl RevokeReason {
    fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::RefreshReuse => "refresh_reuse",
            RevokeReason::PasswordChanged => "password_changed",
            RevokeReason::PasswordReset => "password_reset",
            RevokeReason::UserDisabled => "user_disabled",
            RevokeReason::UserDeleted => "user_deleted",
            RevokeReason::Admin => "admin",
            RevokeReason::User => "user",
        }
    }
}

/// A session row.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// Session id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Login time (the start of its absolute lifetime).
    pub created_at: i64,
    /// Last login or refresh.
    pub last_used_at: i64,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
    /// Current expiry.
    pub expires_at: i64,
}

impl From<sessions::Model> for SessionRecord {
    fn from(m: sessions::Model) -> Self {
        Self {
            id: m.id,
            user_id: m.user_id,
            created_at: m.created_at,
            last_used_at: m.last_used_at,
            revoked_at: m.revoked_at,
            expires_at: m.expires_at,
        }
    }
}

/// A refresh token row (its hash is not carried out of storage).
#[derive(Debug, Clone)]
pub struct RefreshRecord {
    /// Its session.
    pub session_id: String,
    /// Expiry, unix ms.
    pub expires_at: i64,
    /// When it was spent, if it was.
    pub used_at: Option<i64>,
}

/// Inserts a session; returns its id.
pub async fn create_session(
    conn: &impl ConnectionTrait,
    user_id: &str,
    now: i64,
    expires_at: i64,
    client: &ClientInfo,
) -> StorageResult<String> {
    let id = uuid::Uuid::now_v7().to_string();
    sessions::ActiveModel {
        id: Set(id.clone()),
        user_id: Set(user_id.to_owned()),
        created_at: Set(now),
        last_used_at: Set(now),
        expires_at: Set(expires_at),
        revoked_at: Set(None),
        revoked_reason: Set(None),
        client_addr: Set(client.addr.as_ref().map(|a| truncate(a, 64))),
        user_agent: Set(client.user_agent.as_ref().map(|a| truncate(a, 512))),
    }
    .insert(conn)
    .await?;
    // The user's last login: not public state, so no version bump and no event.
    super::entities::users::Entity::update_many()
        .col_expr(
            super::entities::users::Column::LastLoginAt,
            sea_orm::sea_query::Expr::value(now),
        )
        .filter(super::entities::users::Column::Id.eq(user_id))
        .exec(conn)
        .await?;
    Ok(id)
}

/// The session with this id.
pub async fn find_session(
    conn: &impl ConnectionTrait,
    id: &str,
) -> StorageResult<Option<SessionRecord>> {
    Ok(sessions::Entity::find_by_id(id.to_owned())
        .one(conn)
        .await?
        .map(Into::into))
}

/// Records a refresh token hash.
pub async fn create_refresh_token(
    conn: &impl ConnectionTrait,
    token_hash: String,
    session_id: &str,
    now: i64,
    expires_at: i64,
) -> StorageResult<()> {
    refresh_tokens::ActiveModel {
        token_hash: Set(token_hash),
        session_id: Set(session_id.to_owned()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        used_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// The refresh token with this hash.
pub async fn find_refresh_token(
    conn: &impl ConnectionTrait,
    token_hash: &str,
) -> StorageResult<Option<RefreshRecord>> {
    Ok(refresh_tokens::Entity::find_by_id(token_hash.to_owned())
        .one(conn)
        .await?
        .map(|m| RefreshRecord {
            session_id: m.session_id,
            expires_at: m.expires_at,
            used_at: m.used_at,
        }))
}

/// Marks a refresh token spent if it is not yet; `false` if someone else spent it first.
/// On PostgreSQL the row lock makes a concurrent spender wait and then see `used_at` set.
pub async fn spend_refresh_token(
    conn: &impl ConnectionTrait,
    token_hash: &str,
    now: i64,
) -> StorageResult<bool> {
    let result = refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::UsedAt, Expr::value(now))
        .filter(refresh_tokens::Column::TokenHash.eq(token_hash))
        .filter(refresh_tokens::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Extends a session after a refresh.
pub async fn update_session_used(
    conn: &impl ConnectionTrait,
    id: &str,
    now: i64,
    expires_at: i64,
) -> StorageResult<()> {
    sessions::Entity::update_many()
        .col_expr(sessions::Column::LastUsedAt, Expr::value(now))
        .col_expr(sessions::Column::ExpiresAt, Expr::value(expires_at))
        .filter(sessions::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Revokes one session; `false` if it was already revoked (or does not exist).
pub async fn revoke_session(
    conn: &impl ConnectionTrait,
    id: &str,
    reason: RevokeReason,
    now: i64,
) -> StorageResult<bool> {
    let result = sessions::Entity::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::value(now))
        .col_expr(
            sessions::Column::RevokedReason,
            Expr::value(reason.as_str()),
        )
        .filter(sessions::Column::Id.eq(id))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Revokes every live session of a user except `keep`; returns the revoked ids.
pub async fn revoke_user_sessions(
    conn: &impl ConnectionTrait,
    user_id: &str,
    keep: Option<&str>,
    reason: RevokeReason,
    now: i64,
) -> StorageResult<Vec<String>> {
    let mut live = sessions::Entity::find()
        .select_only()
        .column(sessions::Column::Id)
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .filter(sessions::Column::ExpiresAt.gt(now));
    if let Some(keep) = keep {
        live = live.filter(sessions::Column::Id.ne(keep));
    }
    let ids: Vec<String> = live.into_tuple().all(conn).await?;
    let mut revoked = Vec::with_capacity(ids.len());
    for id in ids {
        if revoke_session(conn, &id, reason, now).await? {
            revoked.push(id);
        }
    }
    Ok(revoked)
}

/// Ids of sessions revoked at or after `since` (unix ms): the ones whose access tokens may
/// still be unexpired, which the in-memory revocation set must know at start.
pub async fn find_revoked_session_ids(
    conn: &impl ConnectionTrait,
    since: i64,
) -> StorageResult<Vec<String>> {
    Ok(sessions::Entity::find()
        .select_only()
        .column(sessions::Column::Id)
        .filter(sessions::Column::RevokedAt.gte(since))
        .into_tuple()
        .all(conn)
        .await?)
}

/// A session as admins see it.
#[derive(Debug, Clone)]
pub struct SessionDetails {
    /// Session id.
    pub id: String,
    /// Login time.
    pub created_at: i64,
    /// Last refresh.
    pub last_used_at: i64,
    /// Current expiry.
    pub expires_at: i64,
    /// Revocation time.
    pub revoked_at: Option<i64>,
    /// Revocation reason.
    pub revoked_reason: Option<String>,
    /// Client address at login.
    pub client_addr: Option<String>,
    /// User agent at login.
    pub user_agent: Option<String>,
}

/// The user's sessions, newest first: only live ones unless `include_inactive`.
pub async fn find_user_sessions(
    conn: &impl ConnectionTrait,
    user_id: &str,
    include_inactive: bool,
    now: i64,
) -> StorageResult<Vec<SessionDetails>> {
    use sea_orm::QueryOrder as _;
    let mut query = sessions::Entity::find().filter(sessions::Column::UserId.eq(user_id));
    if !include_inactive {
        query = query
            .filter(sessions::Column::RevokedAt.is_null())
            .filter(sessions::Column::ExpiresAt.gt(now));
    }
    Ok(query
        .order_by_desc(sessions::Column::CreatedAt)
        .order_by_desc(sessions::Column::Id)
        .limit(1000)
        .all(conn)
        .await?
        .into_iter()
        .map(|m| SessionDetails {
            id: m.id,
            created_at: m.created_at,
            last_used_at: m.last_used_at,
            expires_at: m.expires_at,
            revoked_at: m.revoked_at,
            revoked_reason: m.revoked_reason,
            client_addr: m.client_addr,
            user_agent: m.user_agent,
        })
        .collect())
}

/// Number of live sessions of the user.
pub async fn count_live_sessions(
    conn: &impl ConnectionTrait,
    user_id: &str,
    now: i64,
) -> StorageResult<u64> {
    use sea_orm::PaginatorTrait as _;
    Ok(sessions::Entity::find()
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .filter(sessions::Column::ExpiresAt.gt(now))
        .count(conn)
        .await?)
}
