//! Data lifecycle: indexes that let housekeeping find ended sessions, spent or expired
//! refresh tokens, old events and a user's events without scanning, and `pending_erasures`, the deleted users
//! whose email, display name and metadata are still to be erased from earlier event payloads
//! and audit details (`--erasure-delay-secs`). Users deleted before this migration are
//! queued at once (due at their deletion time).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    DeletedAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum UserEvents {
    Table,
    OccurredAt,
    UserId,
}

#[derive(DeriveIden)]
enum PendingErasures {
    Table,
    UserId,
    DueAt,
}

/// (index name, table, column)
fn indexes() -> [(&'static str, DynIden, DynIden); 5] {
    [
        (
            "idx_sessions_expires_at",
            Sessions::Table.into_iden(),
            Sessions::ExpiresAt.into_iden(),
        ),
        (
            "idx_refresh_tokens_expires_at",
            RefreshTokens::Table.into_iden(),
            RefreshTokens::ExpiresAt.into_iden(),
        ),
        (
            "idx_refresh_tokens_used_at",
            RefreshTokens::Table.into_iden(),
            RefreshTokens::UsedAt.into_iden(),
        ),
        (
            "idx_user_events_occurred_at",
            UserEvents::Table.into_iden(),
            UserEvents::OccurredAt.into_iden(),
        ),
        // A user's own events, for their erasure.
        (
            "idx_user_events_user_id",
            UserEvents::Table.into_iden(),
            UserEvents::UserId.into_iden(),
        ),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, column) in indexes() {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        crate::create_table(
            manager,
            Table::create()
                .table(PendingErasures::Table)
                .col(
                    ColumnDef::new(PendingErasures::UserId)
                        .string_len(36)
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(PendingErasures::DueAt)
                        .big_integer()
                        .not_null(),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_pending_erasures_user")
                        .from(PendingErasures::Table, PendingErasures::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_pending_erasures_due_at")
                    .table(PendingErasures::Table)
                    .col(PendingErasures::DueAt)
                    .to_owned(),
            )
            .await?;
        // Tombstones from before this migration still hold their history: queue them.
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(PendingErasures::Table)
                    .columns([PendingErasures::UserId, PendingErasures::DueAt])
                    .select_from(
                        Query::select()
                            .columns([Users::Id, Users::DeletedAt])
                            .from(Users::Table)
                            .and_where(Expr::col(Users::DeletedAt).is_not_null())
                            .to_owned(),
                    )
                    .map_err(|e| DbErr::Migration(e.to_string()))?
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(PendingErasures::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        for (name, table, _) in indexes() {
            manager
                .drop_index(Index::drop().name(name).table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
