//! The staged outbox: on PostgreSQL and MySQL/MariaDB a writing transaction inserts its events
//! into `staged_events` (an auto-increment id, no counter lock), and a sequencer moves committed
//! staged events into `user_events` with gap-free sequences after they commit (auth-server
//! `storage::sequencer`). SQLite keeps numbering events in the writing transaction (there the
//! table stays empty), now with one statement per event: the insert takes the counter's next
//! value and the `user_events_take_sequence` trigger moves the counter.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StagedEvents {
    Table,
    Id,
    Kind,
    UserId,
    SessionId,
    Payload,
    OccurredAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::create_table(
            manager,
            Table::create()
                .table(StagedEvents::Table)
                .col(
                    ColumnDef::new(StagedEvents::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(ColumnDef::new(StagedEvents::Kind).string_len(32).not_null())
                .col(
                    ColumnDef::new(StagedEvents::UserId)
                        .string_len(36)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(StagedEvents::SessionId)
                        .string_len(36)
                        .null(),
                )
                .col(ColumnDef::new(StagedEvents::Payload).text().not_null())
                .col(
                    ColumnDef::new(StagedEvents::OccurredAt)
                        .big_integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        if manager.get_database_backend() == sea_orm_migration::sea_orm::DbBackend::Sqlite {
            manager
                .get_connection()
                .execute_unprepared(
                    "CREATE TRIGGER user_events_take_sequence AFTER INSERT ON user_events \
                     BEGIN \
                       UPDATE event_sequence SET last_sequence = NEW.sequence \
                       WHERE id = 1 AND last_sequence < NEW.sequence; \
                     END",
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Staged events exist only between a writer's commit and the sequencer's next batch;
        // dropping them would lose events, so refuse (a server numbers them when it starts).
        let staged = manager
            .get_connection()
            .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
                manager.get_database_backend(),
                "SELECT COUNT(*) FROM staged_events",
            ))
            .await?
            .map(|row| row.try_get_by_index::<i64>(0))
            .transpose()?
            .unwrap_or(0);
        if staged > 0 {
            return Err(DbErr::Migration(format!(
                "{staged} staged events are not numbered yet: start auth-server once so that it numbers them, then migrate down"
            )));
        }
        if manager.get_database_backend() == sea_orm_migration::sea_orm::DbBackend::Sqlite {
            manager
                .get_connection()
                .execute_unprepared("DROP TRIGGER IF EXISTS user_events_take_sequence")
                .await?;
        }
        manager
            .drop_table(
                Table::drop()
                    .table(StagedEvents::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
