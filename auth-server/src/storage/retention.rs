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

/// The oldest event still in the outbox, if any.
pub async fn find_oldest_event_sequence(conn: &impl ConnectionTrait) -> StorageResult<Option<i64>> {
    find_event_bound(conn, "MIN(sequence)", None).await
}

/// The newest event that occurred before `before`, if any.
pub async fn find_last_event_before(
    conn: &impl ConnectionTrait,
    before: i64,
) -> StorageResult<Option<i64>> {
    find_event_bound(conn, "MAX(sequence)", Some(before)).await
}

async fn find_event_bound(
    conn: &impl ConnectionTrait,
    aggregate: &str,
    before: Option<i64>,
) -> StorageResult<Option<i64>> {
    let backend = conn.get_database_backend();
    let stmt = match before {
        Some(before) => sea_orm::Statement::from_sql_and_values(
            backend,
            match backend {
                sea_orm::DbBackend::Postgres => {
                    format!("SELECT {aggregate} FROM user_events WHERE occurred_at < $1")
                }
                _ => format!("SELECT {aggregate} FROM user_events WHERE occurred_at < ?"),
            },
            [before.into()],
        ),
        None => {
            sea_orm::Statement::from_string(backend, format!("SELECT {aggregate} FROM user_events"))
        }
    };
    Ok(match conn.query_one_raw(stmt).await? {
        Some(row) => row.try_get_by_index::<Option<i64>>(0)?,
        None => None,
    })
}

/// Deletes the events from the oldest up to `last` (inclusive), at most `batch` of them;
/// returns how many. Only ever a prefix of the outbox: what remains stays gap-free.
pub async fn delete_events_through(
    conn: &impl ConnectionTrait,
    last: i64,
    batch: u64,
) -> StorageResult<u64> {
    let Some(oldest) = find_oldest_event_sequence(conn).await? else {
        return Ok(0);
    };
    let span = i64::try_from(batch).unwrap_or(i64::MAX).saturating_sub(1);
    let through = last.min(oldest.saturating_add(span));
    if through < oldest {
        return Ok(0);
    }
    let result = super::entities::user_events::Entity::delete_many()
        .filter(super::entities::user_events::Column::Sequence.lte(through))
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}
