//! Erasing a deleted user's personal data from history (migration 9): the queue of pending
//! erasures, the user's event payloads (rewritten in place: sequence and kind stay) and the
//! audit details that mention the user. Queries only; `domain/erasure.rs` decides what the
//! tombstone looks like.

use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, LikeExpr},
};

use super::{
    StorageResult,
    entities::{audit_events, user_events, users},
    events::EventKind,
};

/// `pending_erasures`: deleted users whose history is still to be erased.
pub(super) mod pending_erasures {
    use sea_orm::entity::prelude::*;

    /// One queued erasure.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "pending_erasures")]
    pub struct Model {
        /// The deleted user.
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// Not before, unix ms.
        pub due_at: i64,
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Queues the erasure of `user_id` for `due_at` (in the deleting transaction).
pub async fn schedule_erasure(
    conn: &impl ConnectionTrait,
    user_id: &str,
    due_at: i64,
) -> StorageResult<()> {
    pending_erasures::ActiveModel {
        user_id: Set(user_id.to_owned()),
        due_at: Set(due_at),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Up to `limit` users whose erasure is due at `now`, oldest first.
pub async fn find_due_erasures(
    conn: &impl ConnectionTrait,
    now: i64,
    limit: u64,
) -> StorageResult<Vec<String>> {
    Ok(pending_erasures::Entity::find()
        .select_only()
        .column(pending_erasures::Column::UserId)
        .filter(pending_erasures::Column::DueAt.lte(now))
        .order_by_asc(pending_erasures::Column::DueAt)
        .limit(limit)
        .into_tuple()
        .all(conn)
        .await?)
}

/// Takes `user_id` off the queue, locking its row on PostgreSQL and MySQL so two replicas do
/// not erase one user at once; false if another already did.
pub async fn claim_erasure(conn: &impl ConnectionTrait, user_id: &str) -> StorageResult<bool> {
    let mut find = pending_erasures::Entity::find_by_id(user_id.to_owned());
    if conn.get_database_backend() != sea_orm::DbBackend::Sqlite {
        find = find.lock_exclusive();
    }
    if find.one(conn).await?.is_none() {
        return Ok(false);
    }
    pending_erasures::Entity::delete_by_id(user_id.to_owned())
        .exec(conn)
        .await?;
    Ok(true)
}

/// Users still queued (for status and tests).
pub async fn count_pending_erasures(conn: &impl ConnectionTrait) -> StorageResult<u64> {
    use sea_orm::PaginatorTrait;
    Ok(pending_erasures::Entity::find().count(conn).await?)
}

/// The user's own events (user kinds, not membership or organization ones): (sequence, payload).
pub async fn find_user_event_payloads(
    conn: &impl ConnectionTrait,
    user_id: &str,
) -> StorageResult<Vec<(i64, String)>> {
    Ok(user_events::Entity::find()
        .select_only()
        .column(user_events::Column::Sequence)
        .column(user_events::Column::Payload)
        .filter(user_events::Column::UserId.eq(user_id))
        .filter(user_events::Column::Kind.is_in(EventKind::USER_KINDS.map(EventKind::as_str)))
        .order_by_asc(user_events::Column::Sequence)
        .into_tuple()
        .all(conn)
        .await?)
}

/// Replaces one event's payload.
pub async fn set_event_payload(
    conn: &impl ConnectionTrait,
    sequence: i64,
    payload: &str,
) -> StorageResult<()> {
    user_events::Entity::update_many()
        .col_expr(user_events::Column::Payload, Expr::value(payload))
        .filter(user_events::Column::Sequence.eq(sequence))
        .exec(conn)
        .await?;
    Ok(())
}

/// Replaces the details of every audit record about `user_id` with `detail`; returns how many.
pub async fn set_subject_audit_details(
    conn: &impl ConnectionTrait,
    user_id: &str,
    detail: &str,
) -> StorageResult<u64> {
    let result = audit_events::Entity::update_many()
        .col_expr(audit_events::Column::Detail, Expr::value(detail))
        .filter(audit_events::Column::SubjectId.eq(user_id))
        .filter(audit_events::Column::Detail.is_not_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}

/// Audit records (about anyone) whose details contain any of `needles`: (id, detail).
pub async fn find_audit_details_containing(
    conn: &impl ConnectionTrait,
    needles: &[String],
) -> StorageResult<Vec<(i64, String)>> {
    if needles.is_empty() {
        return Ok(Vec::new());
    }
    let mut any = Condition::any();
    for needle in needles {
        any = any.add(
            Expr::col(audit_events::Column::Detail)
                .like(LikeExpr::new(format!("%{}%", escape_like(needle))).escape('!')),
        );
    }
    Ok(audit_events::Entity::find()
        .select_only()
        .column(audit_events::Column::Id)
        .column(audit_events::Column::Detail)
        .filter(any)
        .into_tuple()
        .all(conn)
        .await?)
}

/// Clears the tombstone's display name (its email was replaced and its metadata cleared at
/// deletion).
pub async fn clear_tombstone(conn: &impl ConnectionTrait, user_id: &str) -> StorageResult<()> {
    users::Entity::update_many()
        .col_expr(users::Column::DisplayName, Expr::value(""))
        .col_expr(users::Column::Metadata, Expr::value(Option::<String>::None))
        .filter(users::Column::Id.eq(user_id))
        .filter(users::Column::DeletedAt.is_not_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// `text` as a literal `LIKE` pattern with `!` as the escape character (a backslash would mean
/// different things to MySQL's string literals and the others').
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '!' | '%' | '_') {
            out.push('!');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_match_only_the_literal_text() {
        assert_eq!(super::escape_like("a_b%c!d"), "a!_b!%c!!d");
    }
}
