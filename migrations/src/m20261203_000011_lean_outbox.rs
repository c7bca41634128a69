//! A leaner outbox: fewer B-trees touched by every event-writing commit.
//!
//! - **Every backend**: `idx_user_events_occurred_at` goes. Retention finds its boundary by a
//!   binary search on the primary key instead (auth-server `storage::retention`), since events
//!   are numbered in the order they occur.
//! - **SQLite**: `user_events.sequence` becomes the table's rowid (`INTEGER PRIMARY KEY`; a
//!   `BIGINT` key was a second B-tree beside the hidden rowid), and the writer numbers an event
//!   `max(sequence) + 1` instead of moving the counter row on every commit: the
//!   `user_events_take_sequence` trigger goes. `event_sequence.last_sequence` stays as a floor,
//!   the highest sequence ever handed out that may no longer be in the table (retention raises
//!   it when it deletes), so a pruned outbox never numbers from 1 again.
//!
//! `down` puts the index and the trigger back and brings the counter up to the newest event;
//! the SQLite table keeps its rowid key, which the earlier code reads and writes alike.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum UserEvents {
    Table,
    OccurredAt,
}

const OCCURRED_AT_INDEX: &str = "idx_user_events_occurred_at";

/// SQLite's table rebuild (it cannot change a primary key in place). The columns are those of
/// migration 1; the user id index is that of migration 9.
const SQLITE_REBUILD: [&str; 6] = [
    "CREATE TABLE user_events_rowid ( \
       sequence integer NOT NULL PRIMARY KEY, \
       kind varchar(32) NOT NULL, \
       user_id varchar(36) NOT NULL, \
       session_id varchar(36) NULL, \
       payload text NOT NULL, \
       occurred_at bigint NOT NULL)",
    "INSERT INTO user_events_rowid (sequence, kind, user_id, session_id, payload, occurred_at) \
     SELECT sequence, kind, user_id, session_id, payload, occurred_at FROM user_events \
     ORDER BY sequence",
    // Its indexes and the numbering trigger go with it.
    "DROP TABLE user_events",
    "ALTER TABLE user_events_rowid RENAME TO user_events",
    "CREATE INDEX idx_user_events_user_id ON user_events (user_id)",
    COUNTER_TO_HEAD,
];

/// The counter brought up to the newest event (it already is, unless the trigger was bypassed).
const COUNTER_TO_HEAD: &str = "UPDATE event_sequence SET last_sequence = \
     max(last_sequence, ifnull((SELECT max(sequence) FROM user_events), 0)) WHERE id = 1";

/// Migration 10's trigger, for `down`.
const SQLITE_TRIGGER: &str = "CREATE TRIGGER user_events_take_sequence AFTER INSERT ON user_events \
     BEGIN \
       UPDATE event_sequence SET last_sequence = NEW.sequence \
       WHERE id = 1 AND last_sequence < NEW.sequence; \
     END";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// In one transaction on SQLite too, so a crash cannot leave the table half rebuilt
    /// (MySQL commits each DDL statement regardless; dropping an index is one).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Sqlite {
            let conn = manager.get_connection();
            for sql in SQLITE_REBUILD {
                conn.execute_unprepared(sql).await?;
            }
            return Ok(());
        }
        manager
            .drop_index(
                Index::drop()
                    .name(OCCURRED_AT_INDEX)
                    .table(UserEvents::Table)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Sqlite {
            let conn = manager.get_connection();
            conn.execute_unprepared(COUNTER_TO_HEAD).await?;
            conn.execute_unprepared(SQLITE_TRIGGER).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(OCCURRED_AT_INDEX)
                    .table(UserEvents::Table)
                    .col(UserEvents::OccurredAt)
                    .to_owned(),
            )
            .await
    }
}
