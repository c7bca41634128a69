//! Housekeeping deletes, one small batch per call so no statement holds locks for long: ended
//! sessions (with their refresh tokens), spent or expired refresh tokens of live sessions.
//! Each batch reads the keys first and then deletes them by key, because MySQL/MariaDB refuse
//! `LIMIT` inside an `IN (…)` subquery. The caller decides the cutoffs and commits each batch.

use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use super::{
    StorageResult,
    entities::{refresh_tokens, sessions},
};

/// What one batch removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Session rows.
    pub sessions: u64,
    /// Refresh token rows.
    pub refresh_tokens: u64,
}

impl Pruned {
    /// Rows removed in all.
    pub fn rows(&self) -> u64 {
        self.sessions + self.refresh_tokens
    }
}

/// Deletes up to `batch` sessions that ended (revoked, or expired) before `cutoff`, and
/// every refresh token of theirs.
pub async fn delete_ended_sessions(
    conn: &impl ConnectionTrait,
    cutoff: i64,
    batch: u64,
) -> StorageResult<Pruned> {
    let ids: Vec<String> = sessions::Entity::find()
        .select_only()
        .column(sessions::Column::Id)
        .filter(
            Condition::any()
                .add(sessions::Column::RevokedAt.lt(cutoff))
                .add(sessions::Column::ExpiresAt.lt(cutoff)),
        )
        .limit(batch)
        .into_tuple()
        .all(conn)
        .await?;
    if ids.is_empty() {
        return Ok(Pruned::default());
    }
    let tokens = refresh_tokens::Entity::delete_many()
        .filter(refresh_tokens::Column::SessionId.is_in(ids.iter().cloned()))
        .exec(conn)
        .await?;
    let removed = sessions::Entity::delete_many()
        .filter(sessions::Column::Id.is_in(ids))
        .exec(conn)
        .await?;
    Ok(Pruned {
        sessions: removed.rows_affected,
        refresh_tokens: tokens.rows_affected,
    })
}

/// Deletes up to `batch` refresh tokens spent or expired before `cutoff` (those of live
/// sessions: an ended session's go with it).
pub async fn delete_old_refresh_tokens(
    conn: &impl ConnectionTrait,
    cutoff: i64,
    batch: u64,
) -> StorageResult<Pruned> {
    let hashes: Vec<String> = refresh_tokens::Entity::find()
        .select_only()
        .column(refresh_tokens::Column::TokenHash)
        .filter(
            Condition::any()
                .add(refresh_tokens::Column::UsedAt.lt(cutoff))
                .add(refresh_tokens::Column::ExpiresAt.lt(cutoff)),
        )
        .limit(batch)
        .into_tuple()
        .all(conn)
        .await?;
    if hashes.is_empty() {
        return Ok(Pruned::default());
    }
    let removed = refresh_tokens::Entity::delete_many()
        .filter(refresh_tokens::Column::TokenHash.is_in(hashes))
        .exec(conn)
        .await?;
    Ok(Pruned {
        sessions: 0,
        refresh_tokens: removed.rows_affected,
    })
}

/// Row counts of the tables housekeeping keeps flat: (sessions, refresh tokens, events).
pub async fn count_rows(conn: &impl ConnectionTrait) -> StorageResult<(u64, u64, u64)> {
    use sea_orm::PaginatorTrait;
    Ok((
        sessions::Entity::find().count(conn).await?,
        refresh_tokens::Entity::find().count(conn).await?,
        super::entities::user_events::Entity::find()
            .count(conn)
            .await?,
    ))
}
