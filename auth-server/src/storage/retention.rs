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
    find_event_bound(conn, "MIN").await
}

/// The newest event still in the outbox, if any.
async fn find_newest_event_sequence(conn: &impl ConnectionTrait) -> StorageResult<Option<i64>> {
    find_event_bound(conn, "MAX").await
}

async fn find_event_bound(
    conn: &impl ConnectionTrait,
    aggregate: &str,
) -> StorageResult<Option<i64>> {
    let stmt = sea_orm::Statement::from_string(
        conn.get_database_backend(),
        format!("SELECT {aggregate}(sequence) FROM user_events"),
    );
    Ok(match conn.query_one_raw(stmt).await? {
        Some(row) => row.try_get_by_index::<Option<i64>>(0)?,
        None => None,
    })
}

/// When the first event at or after `sequence` occurred (`None` past the newest).
async fn find_occurred_at(
    conn: &impl ConnectionTrait,
    sequence: i64,
) -> StorageResult<Option<i64>> {
    use super::entities::user_events;
    use sea_orm::QueryOrder;
    Ok(user_events::Entity::find()
        .select_only()
        .column(user_events::Column::OccurredAt)
        .filter(user_events::Column::Sequence.gte(sequence))
        .order_by_asc(user_events::Column::Sequence)
        .limit(1)
        .into_tuple::<i64>()
        .one(conn)
        .await?)
}

/// The newest event that occurred before `before`, if any.
///
/// A binary search on the primary key (about 20 point reads for a million events), not an
/// index on `occurred_at` that every commit would have to update: events are numbered in the
/// order they occur. On SQLite exactly; on PostgreSQL and MySQL the sequencer numbers them in
/// the order their writers staged them, a commit's duration after their timestamp, so the
/// boundary can be off by the events of that last moment (a retention of days does not notice).
pub async fn find_last_event_before(
    conn: &impl ConnectionTrait,
    before: i64,
) -> StorageResult<Option<i64>> {
    let (Some(oldest), Some(newest)) = (
        find_oldest_event_sequence(conn).await?,
        find_newest_event_sequence(conn).await?,
    ) else {
        return Ok(None);
    };
    if find_occurred_at(conn, oldest)
        .await?
        .is_none_or(|at| at >= before)
    {
        return Ok(None);
    }
    // `low` occurred before `before`; nothing from `high` on did (or it is past the newest).
    let (mut low, mut high) = (oldest, newest.saturating_add(1));
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        match find_occurred_at(conn, middle).await? {
            Some(at) if at < before => low = middle,
            _ => high = middle,
        }
    }
    Ok(Some(low))
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
    // SQLite numbers from the newest event: the counter keeps what was deleted, so that
    // numbering goes on after it even if this emptied the outbox. (Elsewhere the counter is
    // the sequencer's, always at the newest event; touching its row here would only make the
    // sequencer wait for this transaction on MySQL.)
    if conn.get_database_backend() == sea_orm::DbBackend::Sqlite {
        conn.execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Sqlite,
            "UPDATE event_sequence SET last_sequence = ?1 WHERE id = 1 AND last_sequence < ?1",
            [through.into()],
        ))
        .await?;
    }
    Ok(result.rows_affected)
}
