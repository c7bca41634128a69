//! Staged events (PostgreSQL, MySQL/MariaDB): a writer inserts its events here, unnumbered,
//! in its own transaction, and the sequencer numbers them after they commit
//! ([`super::sequencer`], [`super::events`]).

use sea_orm::{ConnectionTrait, EntityTrait};

use super::StorageResult;

/// `staged_events`: events committed by their writers and not yet numbered.
pub(crate) mod staged_events {
    use sea_orm::entity::prelude::*;

    /// One staged event.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "staged_events")]
    pub struct Model {
        /// Auto-increment id: the order in which writers staged them.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// Event kind name.
        pub kind: String,
        /// The subject's id.
        pub user_id: String,
        /// The revoked session or the API key.
        pub session_id: Option<String>,
        /// JSON of the subject's state after the change.
        pub payload: String,
        /// The writer's commit time.
        pub occurred_at: i64,
    }

    /// No relations are navigated through the ORM.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Stages `rows` in the writer's transaction: one insert.
pub(crate) async fn stage(conn: &impl ConnectionTrait, rows: Vec<EventRow>) -> StorageResult<()> {
    use sea_orm::ActiveValue::{NotSet, Set};
    let models = rows.into_iter().map(|row| staged_events::ActiveModel {
        id: NotSet,
        kind: Set(row.kind),
        user_id: Set(row.user_id),
        session_id: Set(row.session_id),
        payload: Set(row.payload),
        occurred_at: Set(row.occurred_at),
    });
    staged_events::Entity::insert_many(models)
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// An event row before it has its sequence.
#[derive(Debug, Clone)]
pub(crate) struct EventRow {
    pub kind: String,
    pub user_id: String,
    pub session_id: Option<String>,
    pub payload: String,
    pub occurred_at: i64,
}
